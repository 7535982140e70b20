"""Operating conditions of a recording (rpm, load, ...): the same rules for HTTP and the queue."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from service.errors import InvalidInputError

CONDITION_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
MAX_CONDITIONS = 20
MAX_VALUE_CHARS = 200


def validate(items: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """``(name, value)`` pairs -> the conditions to store; ``InvalidInputError`` otherwise.

    Text that reads as a number is stored as one; numbers and booleans are kept as they are.
    """
    out: dict[str, Any] = {}
    for key, value in items:
        if not isinstance(key, str) or not CONDITION_KEY.match(key):
            raise InvalidInputError(
                f"operating-condition name {key!r} is not valid (letters, digits, '_', '.', '-')"
            )
        if isinstance(value, bool) or (
            isinstance(value, int | float) and value == value and abs(value) != float("inf")
        ):
            out[key] = value
            continue
        if not isinstance(value, str):
            raise InvalidInputError(
                f"operating condition {key!r} must be text or a number, not {type(value).__name__}"
            )
        if len(value) > MAX_VALUE_CHARS:
            raise InvalidInputError(
                f"operating condition {key!r} is longer than {MAX_VALUE_CHARS} characters"
            )
        out[key] = number_or_text(value)
    if len(out) > MAX_CONDITIONS:
        raise InvalidInputError(f"at most {MAX_CONDITIONS} operating conditions per recording")
    return out


def number_or_text(value: str) -> Any:
    try:
        return int(value)
    except ValueError:
        pass
    try:
        number = float(value)
    except ValueError:
        return value
    return number if number == number and abs(number) != float("inf") else value

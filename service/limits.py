"""Limits the API enforces on what clients send, in one place (and in the OpenAPI).

- Times: a recording's ``started_at`` is ISO 8601 text only (a bare number is refused, not
  read as Unix time) in the plausible window ``[2000-01-01, server clock + 1 day]``. Filters
  (``from``/``to``) take any time that converts to UTC: ISO 8601, or epoch seconds or
  milliseconds as Grafana's data links send them.
- Audio: uploads must be sampled at 8-192 kHz (``MIN_AUDIO_RATE``..``MAX_AUDIO_RATE``) with
  at most 64 channels: what the embedders are resampled from (their own rates are 16 kHz
  and 48 kHz for the pretrained models, 8-96 kHz for logmel).
- Text: no NUL characters anywhere (Postgres cannot store them; SQLite would).
- JSON bodies: at most ``MAX_JSON_BODY_BYTES``; audio uploads have their own limit.
- Database integers: path and cursor ids within the column types.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field

MAX_JSON_BODY_BYTES = 1024 * 1024
MIN_AUDIO_RATE = 8000
MAX_AUDIO_RATE = 192_000
MAX_AUDIO_CHANNELS = 64
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1

EARLIEST_RECORDING = datetime(2000, 1, 1, tzinfo=UTC)
FUTURE_TOLERANCE = timedelta(days=1)

_NUMBER = re.compile(r"^\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*$")


def _iso_text_only(value: Any) -> Any:
    """Refuse numbers (pydantic would read them as Unix time); text is parsed as ISO 8601."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, bool | int | float) or (isinstance(value, str) and _NUMBER.match(value)):
        raise ValueError(
            "give an ISO 8601 time such as 2026-01-31T08:00:00Z (a bare number is not "
            "read as Unix time)"
        )
    return value


def to_utc(value: datetime) -> datetime:
    """Naive times are UTC; aware ones are converted. Times that leave years 1-9999 in UTC
    (e.g. 0001-01-01T00:00+01:00) are refused with a ValueError."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("time is out of range once converted to UTC") from None


def _plausible_recording_time(value: datetime) -> datetime:
    latest = datetime.now(UTC) + FUTURE_TOLERANCE
    if not EARLIEST_RECORDING <= value <= latest:
        raise ValueError(
            f"a recording must start between {EARLIEST_RECORDING:%Y-%m-%d} and one day after "
            f"the server's clock ({latest:%Y-%m-%dT%H:%M:%SZ}); got {value.isoformat()}"
        )
    return value


QueryTime = Annotated[datetime, AfterValidator(to_utc)]
"""A filter time, returned in UTC: ISO 8601, or Unix epoch seconds or milliseconds (as
Grafana's data links send ``${__from}``)."""

RecordingTime = Annotated[
    datetime,
    BeforeValidator(_iso_text_only),
    AfterValidator(to_utc),
    AfterValidator(_plausible_recording_time),
]
"""An ISO 8601 time in the plausible recording window, returned in UTC."""

Int32Id = Annotated[int, Field(ge=1, le=INT32_MAX)]


def check_no_nul(value: Any, where: str = "") -> None:
    """Raise ValueError when a string anywhere in ``value`` (dicts, lists) holds U+0000."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError(
                f"{where or 'text'} contains a NUL character (U+0000), which cannot be stored"
            )
    elif isinstance(value, dict):
        for key, item in value.items():
            check_no_nul(key, where)
            check_no_nul(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            check_no_nul(item, f"{where}[{i}]")


def check_cursor_id(value: Any) -> int:
    """A keyset cursor's window id: an integer 1..2^63-1 (not a float, Infinity or 1e400)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= INT64_MAX:
        raise ValueError("cursor id out of range")
    return value


def samples_for(seconds: float, rate: int) -> int:
    """Samples ``seconds`` of audio need at ``rate`` (rounded up)."""
    return math.ceil(seconds * rate - 1e-9)

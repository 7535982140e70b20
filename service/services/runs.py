"""Runs: stretches of continuous operation, the unit of calibration and of enrollment coverage.

Consecutive uploads of one run are near copies of each other (same speed, load, gain and
background), so a baseline's threshold is calibrated by holding out whole runs, and enrollment
asks for several runs, not only enough seconds. A recording's run is recognised by:

1. the client's word: an operating condition ``run`` (``?run=2026-11-26-morning``) puts every
   recording that carries the same value in one run;
2. otherwise by time: recordings without ``run`` are sorted by start, and one that starts at
   most ``run_gap_seconds`` after the end of the previous one continues its run; a longer gap
   starts a new run.

Runs are derived from the recordings whenever they are needed (enrollment, baseline builds),
never stored, so late or out-of-order uploads simply fall into place.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

RUN_CONDITION = "run"
MAX_CONDITION_VALUES = 10  # distinct values of one condition listed in coverage


@dataclass(frozen=True)
class Span:
    """One recording as runs see it."""

    recording_id: int
    started_at: datetime
    ended_at: datetime
    conditions: dict[str, Any]


def assign_runs(spans: Iterable[Span], gap_seconds: float) -> dict[int, str]:
    """Run key of each recording: ``run:<value>`` for a client ``run``, else ``gap:<id>``
    (the id of the run's first recording)."""
    runs: dict[int, str] = {}
    current: str | None = None
    last_end: datetime | None = None
    for span in sorted(spans, key=lambda s: (s.started_at, s.recording_id)):
        label = span.conditions.get(RUN_CONDITION) if span.conditions else None
        if label is not None and str(label) != "":
            runs[span.recording_id] = f"run:{label}"
            continue
        if (
            current is None
            or last_end is None
            or (span.started_at - last_end).total_seconds() > gap_seconds
        ):
            current = f"gap:{span.recording_id}"
        runs[span.recording_id] = current
        last_end = span.ended_at if last_end is None else max(last_end, span.ended_at)
    return runs


@dataclass(frozen=True)
class Coverage:
    """What a machine's normal material covers."""

    seconds: float
    recordings: int
    runs: int
    first_at: datetime | None
    last_at: datetime | None
    conditions: dict[str, list[Any]]

    def as_dict(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 3),
            "recordings": self.recordings,
            "runs": self.runs,
            "first_at": self.first_at,
            "last_at": self.last_at,
            "conditions": self.conditions,
        }


def coverage(spans: Sequence[Span], gap_seconds: float) -> Coverage:
    """Seconds, runs, time span and operating conditions seen in ``spans``."""
    runs = assign_runs(spans, gap_seconds)
    seen: dict[str, list[Any]] = {}
    for span in spans:
        for key, value in (span.conditions or {}).items():
            if key == RUN_CONDITION:
                continue
            values = seen.setdefault(key, [])
            if value not in values and len(values) < MAX_CONDITION_VALUES:
                values.append(value)
    return Coverage(
        seconds=sum((s.ended_at - s.started_at).total_seconds() for s in spans),
        recordings=len(spans),
        runs=len(set(runs.values())),
        first_at=min((s.started_at for s in spans), default=None),
        last_at=max((s.ended_at for s in spans), default=None),
        conditions={k: sorted(v, key=str) for k, v in sorted(seen.items())},
    )

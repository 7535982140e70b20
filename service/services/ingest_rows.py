"""The rows one stored upload becomes (recording, windows) and the windows handed back:
shared by one upload at a time (``service.services.ingest``) and by batches
(``service.services.ingest_batch``), so both write the same values."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from service.models import Machine, Recording

if TYPE_CHECKING:
    from service.services.ingest import _Prepared


def recording_row(
    machine: Machine,
    prepared: _Prepared,
    sha256: str,
    started_at: datetime,
    conditions: dict[str, Any],
    size_bytes: int,
    enrolling: bool,
) -> Recording:
    """The recording's row (not inserted)."""
    return Recording(
        machine_id=machine.id,
        started_at=started_at,
        ended_at=started_at + timedelta(seconds=prepared.duration),
        duration_seconds=prepared.duration,
        sample_rate=prepared.decoded_rate,
        channels=prepared.decoded_channels,
        format=prepared.decoded_format,
        sha256=sha256,
        size_bytes=size_bytes,
        conditions=conditions,
        is_enrollment=enrolling,
    )


def window_rows(
    machine: Machine, recording_id: int, started_at: datetime, prepared: _Prepared, scores
) -> list[dict[str, Any]]:
    """The column values of the recording's windows, in time order."""
    rate = prepared.sample_rate
    rows = []
    for i, start in enumerate(prepared.start_samples):
        start_at = started_at + timedelta(seconds=float(start) / rate)
        row = {
            "machine_id": machine.id,
            "recording_id": recording_id,
            "start_at": start_at,
            "end_at": start_at + timedelta(seconds=prepared.window_samples / rate),
            "score": None,
            "ratio": None,
            "is_outlier": False,
            "baseline_version": None,
            "embedding": prepared.vectors[i].astype("<f4").tobytes(),
        }
        if scores is not None:
            values, threshold, version = scores
            score = float(values[i])
            row.update(
                score=score,
                ratio=score / threshold,
                is_outlier=score > threshold,
                baseline_version=version,
            )
        rows.append(row)
    return rows


@dataclass(slots=True)
class StoredWindow:
    """A window as inserted (what the response and the metrics read; a plain object: an
    ORM ``Window`` per window cost more than its insert)."""

    id: int
    machine_id: str
    recording_id: int
    start_at: datetime
    end_at: datetime
    score: float | None
    ratio: float | None
    is_outlier: bool
    baseline_version: int | None
    label: str | None = None


def stored_windows(rows: list[dict[str, Any]], ids: list[int]) -> list[StoredWindow]:
    """The inserted rows as ``StoredWindow`` objects (for the result and the metrics)."""
    return [
        StoredWindow(
            wid,
            row["machine_id"],
            row["recording_id"],
            row["start_at"],
            row["end_at"],
            row["score"],
            row["ratio"],
            row["is_outlier"],
            row["baseline_version"],
        )
        for wid, row in zip(ids, rows, strict=True)
    ]

"""Bodies of the batch upload (``POST /v1/recordings/batch``): its manifest and its answer."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from service.limits import RecordingTime
from service.schemas import ErrorOut, IngestOut, _In


class BatchItemIn(_In):
    """One recording of a batch: whose it is, when it starts, and the part holding its audio."""

    machine_id: str = Field(min_length=1, max_length=64, description="machine slug")
    started_at: RecordingTime = Field(
        description="ISO 8601 time of the first sample (UTC when no offset is given), from "
        "2000-01-01 to one day after the server's clock; required in a batch (the clips of a "
        "batch were recorded before it was sent, so the receive time says nothing)"
    )
    conditions: dict[str, Any] = Field(
        default_factory=dict,
        description="operating-condition attributes stored with the recording (e.g. "
        '{"rpm": 1480, "load": "0.8"}), the same rules as the single upload\'s query '
        "parameters",
    )
    file: str = Field(min_length=1, max_length=200, description="name of the audio part")


class BatchItemOut(BaseModel):
    """One item's outcome: ``status`` is what the single upload would have answered."""

    index: int = Field(description="position in the manifest, from 0")
    file: str
    machine_id: str | None
    status: int = Field(
        description="201 stored, 200 already stored (same machine, audio and start), else the "
        "single upload's error status (404 unknown machine, 409 paused, 413, 415, 422, 503)"
    )
    result: IngestOut | None = Field(description="the single upload's answer (201 and 200)")
    error: ErrorOut | None = Field(description="why this item was not stored (4xx, 5xx)")


class BatchOut(BaseModel):
    """Every item's outcome, in manifest order, and how many of each kind."""

    items: list[BatchItemOut]
    created: int = Field(description="items stored by this request (201)")
    already_stored: int = Field(description="items that were stored before (200)")
    failed: int = Field(description="items refused or not stored (4xx, 5xx): send them again")

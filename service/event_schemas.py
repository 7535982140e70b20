"""Request and response bodies of the events API and of a machine's health (pydantic)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from detectors.events import Evidence
from service.models import Event
from service.schemas import BaselineOut, MachineOut

EventKind = Literal["anomaly", "sensor"]
EventState = Literal["open", "resolved", "closed"]
Severity = Literal["warning", "alarm"]
SensorCause = Literal["silence", "clipping", "dropout", "stale"]
Disposition = Literal["confirmed_fault", "false_alarm", "planned_work", "sensor_issue"]
HealthState = Literal["enrolling", "learning", "ok", "warning", "alarm", "sensor_fault"]
TimelineAction = Literal["open", "escalate", "resolve", "reopen", "acknowledge", "close"]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SeverityStep(BaseModel):
    severity: Severity
    at: datetime


class Acknowledgement(BaseModel):
    by: str
    at: datetime
    comment: str | None


class Closure(BaseModel):
    by: str
    at: datetime
    disposition: Disposition
    reason: str | None


class TimelineEntry(BaseModel):
    at: datetime
    action: TimelineAction
    severity: Severity | None = None
    cause: SensorCause | None = None
    by: str | None = None
    comment: str | None = None
    disposition: Disposition | None = None
    reason: str | None = None
    evidence: Evidence | None = None


class EventOut(BaseModel):
    """An event. ``state``: ``open`` (evidence current), ``resolved`` (quiet by itself, waiting
    for a person to close it; returning evidence may reopen it) or ``closed`` (by a person)."""

    id: int
    machine_id: str
    kind: EventKind = Field(
        description="anomaly: the machine sounds wrong; sensor: the "
        "microphone is silent, clipped, dropping out or stale"
    )
    cause: SensorCause | None = Field(description="sensor events: what is wrong")
    state: EventState
    severity: Severity = Field(description="current severity (warning, or alarm once escalated)")
    opened_at: datetime
    escalated_at: datetime | None
    resolved_at: datetime | None
    peak_ratio: float | None = Field(description="highest score / threshold of its windows")
    mean_ratio: float | None
    n_windows: int = Field(description="windows the event is made of")
    evidence: Evidence | None = Field(
        None,
        description="anomaly events: what opened (or last reopened) it: windows (m of the "
        "last n windows above open_ratio) or sustained (slow_fraction of the windows of the "
        "last slow_span_s above slow_ratio, for faults just above the threshold for hours); "
        "null for sensor events and events opened before it was recorded",
    )
    severity_history: list[SeverityStep]
    acknowledgement: Acknowledgement | None
    close: Closure | None

    @classmethod
    def of(cls, event: Event) -> EventOut:
        return cls(**_fields(event))


class EventWindowOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    start_at: datetime
    end_at: datetime
    score: float | None
    ratio: float | None
    is_outlier: bool
    label: Literal["normal", "anomaly"] | None


class EventDetail(EventOut):
    timeline: list[TimelineEntry] = Field(description="everything that happened, oldest first")
    windows: list[EventWindowOut] = Field(description="its windows in time order")
    windows_truncated: bool = Field(description="true when n_windows > the windows listed")

    @classmethod
    def of_detail(cls, event: Event, windows: list[Any], limit: int) -> EventDetail:
        return cls(
            **_fields(event),
            timeline=[TimelineEntry(**entry) for entry in event.history],
            windows=[EventWindowOut.model_validate(w) for w in windows],
            windows_truncated=event.n_windows > limit,
        )


def _fields(event: Event) -> dict[str, Any]:
    steps = [
        SeverityStep(severity=e["severity"], at=e["at"])
        for e in event.history
        if e["action"] in ("open", "escalate") and e.get("severity")
    ]
    ack = None
    if event.acknowledged_at is not None:
        ack = Acknowledgement(
            by=event.acknowledged_by, at=event.acknowledged_at, comment=event.acknowledge_comment
        )
    closure = None
    if event.closed_at is not None:
        closure = Closure(
            by=event.closed_by,
            at=event.closed_at,
            disposition=event.disposition,
            reason=event.close_reason,
        )
    return {
        "id": event.id,
        "machine_id": event.machine_id,
        "kind": event.kind,
        "cause": event.cause,
        "state": event.state,
        "severity": event.severity,
        "opened_at": event.opened_at,
        "escalated_at": event.escalated_at,
        "resolved_at": event.resolved_at,
        "peak_ratio": event.peak_ratio,
        "mean_ratio": event.mean_ratio,
        "n_windows": event.n_windows,
        "evidence": next(
            (
                e.get("evidence")
                for e in reversed(event.history)
                if e["action"] in ("open", "reopen")
            ),
            None,
        ),
        "severity_history": steps,
        "acknowledgement": ack,
        "close": closure,
    }


class EventPage(BaseModel):
    items: list[EventOut]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next (older) page")


class AcknowledgeIn(_In):
    by: str = Field(min_length=1, max_length=200, description="who has seen it")
    comment: str | None = Field(None, max_length=2000)


class CloseIn(_In):
    by: str = Field(min_length=1, max_length=200, description="who closes it")
    disposition: Disposition = Field(
        description="confirmed_fault: its windows are labelled anomaly (never in a baseline); "
        "false_alarm: labelled normal (the next baseline includes them); planned_work, "
        "sensor_issue: no labels"
    )
    reason: str | None = Field(None, max_length=2000)
    rebuild_baseline: bool = Field(
        False,
        description="admin token only: build and activate a new baseline version in the same "
        "transaction (a failed build leaves the event as it was)",
    )


class CloseOut(BaseModel):
    event: EventOut
    labelled_windows: int = Field(description="windows that got the disposition's label")
    baseline: BaselineOut | None = Field(description="the new active baseline, when rebuilt")


class MachineHealthOut(MachineOut):
    """A machine with its health and open events."""

    health: HealthState = Field(
        description="enrolling, learning, ok, warning, alarm, or sensor_fault (the microphone "
        "is silent, clipped, dropping out or stale)"
    )
    open_event: EventOut | None = Field(description="the open anomaly event")
    open_sensor_event: EventOut | None = Field(description="the open sensor event")


class EventParamsOut(BaseModel):
    params: dict[str, float | int] = Field(description="in force: defaults and overrides")
    overrides: dict[str, float | int] = Field(description="this machine's overrides")
    defaults: dict[str, float | int]

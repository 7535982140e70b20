"""Events: the event logic applied at ingest, the stale sweep, listing, acknowledge and close.

``on_recordings`` runs inside the ingest transaction that stores the windows (the machine row is
locked there, so one machine's windows go through ``detectors.events.EventTracker`` one
recording at a time); the tracker's state is kept in ``machine_health``. A close with
disposition ``false_alarm`` labels the event's windows normal (the next baseline includes
them), ``confirmed_fault`` labels them anomaly (no baseline ever includes them); with
``rebuild_baseline`` the new baseline version is built and activated in the same
transaction, so a failed build leaves the event open.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from detectors.events import Change, EventParams, EventTracker, WindowObs
from detectors.sensor import WindowFlags
from service.errors import ConflictError, InvalidInputError, NotFoundError
from service.models import Baseline, Event, Machine, MachineHealth, utcnow
from service.repositories import events as events_repo
from service.repositories import machines as machines_repo
from service.runtime import Runtime
from service.services import baselines as baselines_service
from service.services.machines import get_machine, get_writable_machine
from service.services.windows import decode_cursor, encode_cursor

log = logging.getLogger("humwatch.events")

MAX_PAGE = 500
DISPOSITION_LABELS = {"false_alarm": "normal", "confirmed_fault": "anomaly"}


@dataclass
class Notice:
    """One change of an event, for logs and callers: (event id, machine, kind, action...)."""

    event_id: int
    machine_id: str
    kind: str
    action: str
    at: datetime
    severity: str | None = None
    cause: str | None = None


@dataclass
class CloseResult:
    event: Event
    labelled_windows: int
    baseline: Baseline | None = None
    model: Any = field(default=None, repr=False)


# -- the event logic at ingest ---------------------------------------------------------------


def health_row(session: Session, machine: Machine) -> MachineHealth:
    """The machine's health row, created (health ``ok``, default parameters) when missing."""
    row = events_repo.health(session, machine.id)
    if row is None:
        row = MachineHealth(machine_id=machine.id, health=_health(machine, None), params={})
        row.tracker = {}
        session.add(row)
        session.flush()
    return row


def params_of(row: MachineHealth | _HealthValues) -> EventParams:
    return EventParams.from_dict(row.params)


@dataclass
class _HealthValues:
    """The health row at ingest, read and written with Core statements (the ORM's identity
    map, change tracking and flush cost more than the event logic itself)."""

    machine_id: str
    health: str
    health_since: datetime
    anomaly_event_id: int | None
    sensor_event_id: int | None
    params: dict[str, Any]
    tracker: dict[str, Any]

    @classmethod
    def load(cls, session: Session, machine: Machine) -> _HealthValues:
        row = events_repo.health_values(session, machine.id)
        if row is None:
            now = utcnow()
            values = cls(machine.id, _health(machine, None), now, None, None, {}, {})
            events_repo.add_health_values(session, {**vars(values), "updated_at": now})
            return values
        return cls(
            row.machine_id,
            row.health,
            row.health_since,
            row.anomaly_event_id,
            row.sensor_event_id,
            row.params or {},
            row.tracker or {},
        )

    def save(self, session: Session) -> None:
        events_repo.update_health_values(session, self.machine_id, vars(self))


def on_recordings(
    session: Session,
    machine: Machine,
    recordings: Sequence[tuple[Sequence[dict[str, Any]], Sequence[int], WindowFlags]],
) -> list[Notice]:
    """Apply the event logic to the stored windows of one or more recordings of one machine,
    in turn (the caller holds the machine row lock and commits). Each is ``(rows, ids,
    flags)``: the window column dicts in time order, their ids and their sensor flags. The
    health row is read and written once; the tracker sees each recording's windows as it
    would one upload at a time."""
    health = _HealthValues.load(session, machine)
    tracker = EventTracker(params_of(health), state=health.tracker or None)
    changes: list[Change] = []
    for rows, ids, flags in recordings:
        observed = [
            WindowObs(
                row["start_at"],
                row["end_at"],
                row["ratio"],
                silent=bool(flags.silent[i]),
                clipped=bool(flags.clipped[i]),
                dropout=bool(flags.dropout[i]),
                key=int(wid),
            )
            for i, (row, wid) in enumerate(zip(rows, ids, strict=True))
        ]
        changes += tracker.observe(observed, received_at=utcnow())
    notices = _apply(session, machine, health, tracker, changes)
    health.save(session)
    return notices


def sweep(runtime: Runtime, now: datetime | None = None) -> list[Notice]:
    """Apply the passage of time to every machine (stale microphones); one short transaction
    per machine that has a health row."""
    now = now or utcnow()
    notices: list[Notice] = []
    with runtime.db.session() as session:
        ids = [m.id for m in machines_repo.list_machines(session)]
    for machine_id in ids:
        with runtime.db.session() as session:
            machine = machines_repo.get(session, machine_id, for_update=True)
            if machine is None or machine.archived_at is not None or machine.state == "paused":
                continue
            health = events_repo.health(session, machine_id)
            if health is None or not health.tracker:
                continue
            tracker = EventTracker(params_of(health), state=health.tracker)
            changes = tracker.advance(now)
            if changes:
                notices += _apply(session, machine, health, tracker, changes)
    return notices


def _health(machine: Machine, tracker: EventTracker | None) -> str:
    """The tracker's health; ``enrolling`` before baseline v1 and ``learning`` during the
    learning period when nothing is wrong (a sensor fault shows through both)."""
    health = tracker.health if tracker is not None else "ok"
    if machine.state == "enrolling" and health != "sensor_fault":
        return "enrolling"
    last = tracker.last_window_start if tracker is not None else None
    until = machine.learning_until
    if health == "ok" and until is not None and last is not None and last < until:
        return "learning"
    return health


def _entry(action: str, at: datetime, **extra: Any) -> dict[str, Any]:
    return {"at": at.isoformat(), "action": action, **{k: v for k, v in extra.items() if v}}


def _apply(
    session: Session,
    machine: Machine,
    health: MachineHealth | _HealthValues,
    tracker: EventTracker,
    changes: list[Change],
) -> list[Notice]:
    """Write the tracker's changes: events, members, health and the tracker state."""
    current: dict[str, Event | None] = {
        "anomaly": events_repo.get(session, health.anomaly_event_id)
        if health.anomaly_event_id
        else None,
        "sensor": events_repo.get(session, health.sensor_event_id)
        if health.sensor_event_id
        else None,
    }
    members: dict[int, list[int]] = {}
    notices: list[Notice] = []
    for change in changes:
        event = current[change.kind]
        if change.action == "open":
            event = events_repo.add(
                session,
                Event(
                    machine_id=machine.id,
                    kind=change.kind,
                    cause=change.cause,
                    state="open",
                    severity=change.severity,
                    opened_at=change.at,
                    escalated_at=change.at if change.severity == "alarm" else None,
                    n_windows=0,
                    n_scored=0,
                    history=[
                        _entry(
                            "open",
                            change.at,
                            severity=change.severity,
                            cause=change.cause,
                            evidence=change.evidence,
                        )
                    ],
                ),
            )
            current[change.kind] = event
            setattr(health, f"{change.kind}_event_id", event.id)
        elif event is None or event.state == "closed":
            # The tracker holds an event a person has closed meanwhile: forget it.
            log.warning("machine %s: %s change for no live event", machine.id, change.kind)
            continue
        elif change.action == "member":
            _add_member(event, change.window, members)
            continue
        elif change.action == "escalate":
            event.severity = "alarm"
            event.escalated_at = event.escalated_at or change.at
            event.history = [*event.history, _entry("escalate", change.at, severity="alarm")]
        elif change.action == "resolve":
            event.state = "resolved"
            event.resolved_at = change.at
            event.history = [*event.history, _entry("resolve", change.at)]
        elif change.action == "reopen":
            event.state = "open"
            event.resolved_at = None
            event.history = [
                *event.history,
                _entry("reopen", change.at, evidence=change.evidence),
            ]
        notices.append(
            Notice(
                event.id,
                machine.id,
                change.kind,
                change.action,
                change.at,
                event.severity,
                event.cause,
            )
        )
    for event_id, window_ids in members.items():
        events_repo.add_members(session, event_id, window_ids)
    health.tracker = tracker.state
    _set_health(health, _health(machine, tracker))
    session.flush()
    for n in notices:
        log.info(
            "machine %s: %s event %d %s (%s)",
            n.machine_id,
            n.kind,
            n.event_id,
            n.action,
            n.severity,
        )
    return notices


def _add_member(event: Event, window: WindowObs, members: dict[int, list[int]]) -> None:
    if window.key is None:
        return
    members.setdefault(event.id, []).append(int(window.key))
    event.n_windows += 1
    if window.ratio is not None:
        ratio = float(window.ratio)
        n = event.n_scored
        event.mean_ratio = ratio if n == 0 else (event.mean_ratio * n + ratio) / (n + 1)
        event.peak_ratio = ratio if event.peak_ratio is None else max(event.peak_ratio, ratio)
        event.n_scored = n + 1


def _set_health(row: MachineHealth | _HealthValues, value: str) -> None:
    if row.health != value:
        row.health = value
        row.health_since = utcnow()


# -- reading -------------------------------------------------------------------------------


def list_events(
    session: Session,
    *,
    machine_id: str | None,
    site: str | None,
    area: str | None,
    kind: str | None,
    state: str | None,
    severity: str | None,
    start: datetime | None,
    end: datetime | None,
    limit: int,
    cursor: str | None,
) -> tuple[Sequence[Event], str | None]:
    """A page of events newest first and the cursor of the next page (None at the end)."""
    if machine_id is not None:
        get_machine(session, machine_id)
    if start is not None and end is not None and start >= end:
        raise InvalidInputError("'from' must be before 'to'")
    after = decode_cursor(cursor) if cursor else None
    rows = events_repo.page(
        session,
        machine_id=machine_id,
        site=site,
        area=area,
        kind=kind,
        state=state,
        severity=severity,
        start=start,
        end=end,
        limit=limit + 1,
        after=after,
    )
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = encode_cursor(last.opened_at, last.id)
    return rows[:limit], next_cursor


def get_event(session: Session, event_id: int) -> Event:
    event = events_repo.get(session, event_id)
    if event is None:
        raise NotFoundError(f"event {event_id} does not exist")
    return event


def member_windows(session: Session, event_id: int, limit: int):
    return events_repo.member_windows(session, event_id, limit)


def machine_health(
    session: Session, machines: Sequence[Machine]
) -> dict[str, tuple[str, dict[str, Event]]]:
    """Per machine id: (health, open events by kind)."""
    ids = [m.id for m in machines]
    rows = events_repo.health_many(session, ids)
    opened: dict[str, dict[str, Event]] = {i: {} for i in ids}
    for event in events_repo.open_events(session, ids):
        opened[event.machine_id][event.kind] = event
    out = {}
    for machine in machines:
        row = rows.get(machine.id)
        if machine.state == "enrolling" and (row is None or row.health != "sensor_fault"):
            health = "enrolling"
        else:
            health = row.health if row is not None else "ok"
        out[machine.id] = (health, opened[machine.id])
    return out


def get_params(session: Session, machine_id: str) -> EventParams:
    machine = get_machine(session, machine_id)
    row = events_repo.health(session, machine.id)
    return params_of(row) if row is not None else EventParams()


def set_params(session: Session, machine_id: str, overrides: dict[str, Any]) -> EventParams:
    """Replace the machine's parameter overrides (validated; {} restores the defaults)."""
    machine = get_writable_machine(session, machine_id, for_update=True)
    try:
        params = EventParams.from_dict(overrides)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"event parameters: {exc}") from exc
    row = health_row(session, machine)
    # The tracker's buffers take the new sizes when it is next loaded.
    row.params = {k: v for k, v in params.to_dict().items() if k in overrides}
    session.flush()
    return params


# -- acknowledge and close -------------------------------------------------------------------


def _locked_event(session: Session, event_id: int) -> tuple[Event, Machine]:
    event = get_event(session, event_id)
    machine = get_writable_machine(session, event.machine_id, for_update=True)
    return events_repo.get(session, event_id, for_update=True), machine


def acknowledge(session: Session, event_id: int, by: str, comment: str | None) -> Event:
    """Record who has seen the event (409 when closed or already acknowledged)."""
    event, _ = _locked_event(session, event_id)
    if event.state == "closed":
        raise ConflictError(f"event {event_id} is closed; it cannot be acknowledged any more")
    if event.acknowledged_at is not None:
        raise ConflictError(
            f"event {event_id} was already acknowledged by {event.acknowledged_by!r} at "
            f"{event.acknowledged_at.isoformat()}"
        )
    now = utcnow()
    event.acknowledged_by, event.acknowledged_at, event.acknowledge_comment = by, now, comment
    event.history = [*event.history, _entry("acknowledge", now, by=by, comment=comment)]
    session.flush()
    return event


def close(
    runtime: Runtime,
    event_id: int,
    *,
    by: str,
    disposition: str,
    reason: str | None,
    rebuild_baseline: bool,
) -> CloseResult:
    """Close the event with a disposition, label its windows, maybe rebuild the baseline; all
    in one transaction (409 when already closed, or when the rebuild has too little material)."""
    with runtime.db.session() as session:
        event, machine = _locked_event(session, event_id)
        if event.state == "closed":
            raise ConflictError(
                f"event {event_id} was already closed by {event.closed_by!r} as {event.disposition}"
            )
        now = utcnow()
        event.state = "closed"
        event.closed_by, event.closed_at = by, now
        event.disposition, event.close_reason = disposition, reason
        event.resolved_at = event.resolved_at or now
        event.history = [
            *event.history,
            _entry("close", now, by=by, disposition=disposition, reason=reason),
        ]
        labelled = 0
        label = DISPOSITION_LABELS.get(disposition)
        if label is not None:
            note = f"event {event_id} closed as {disposition} by {by}"
            labelled = events_repo.label_members(session, event_id, label, note, now)
        health = health_row(session, machine)
        attribute = f"{event.kind}_event_id"
        if getattr(health, attribute) == event.id:
            tracker = EventTracker(params_of(health), state=health.tracker or None)
            tracker.closed(event.kind, now)
            health.tracker = tracker.state
            setattr(health, attribute, None)
            _set_health(health, _health(machine, tracker))
        session.flush()
        result = CloseResult(event=event, labelled_windows=labelled)
        if rebuild_baseline:
            result.baseline, result.model = _rebuild(session, runtime, machine, event, disposition)
        session.expunge_all()
    if result.baseline is not None:
        runtime.baselines.put(machine.id, result.baseline.version, result.model)
    return result


def _rebuild(session: Session, runtime: Runtime, machine: Machine, event: Event, disposition):
    if machine.state == "enrolling":
        raise ConflictError(f"machine {machine.id!r} is still enrolling; nothing to rebuild")
    baseline, model = baselines_service.build_and_activate(
        session,
        runtime,
        machine,
        enrollment_only=False,
        source=f"event {event.id} {disposition}",
        note=f"rebuilt when event {event.id} was closed as {disposition}",
    )
    return baseline, model

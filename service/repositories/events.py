"""Events, their member windows and machine health: table access and keyset pagination."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import Row, and_, bindparam, func, insert, or_, select, update
from sqlalchemy.orm import Session

from service.models import Event, EventWindow, Machine, MachineHealth, Window


def get(session: Session, event_id: int, *, for_update: bool = False) -> Event | None:
    stmt = select(Event).where(Event.id == event_id)
    if for_update:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    return session.execute(stmt).scalar_one_or_none()


def add(session: Session, event: Event) -> Event:
    session.add(event)
    session.flush()
    return event


def add_members(session: Session, event_id: int, window_ids: Iterable[int]) -> None:
    rows = [{"event_id": event_id, "window_id": wid} for wid in window_ids]
    if rows:
        session.execute(insert(EventWindow), rows)


def health(session: Session, machine_id: str) -> MachineHealth | None:
    return session.get(MachineHealth, machine_id, populate_existing=True)


_HEALTH = MachineHealth.__table__
_HEALTH_COLUMNS = ("health", "health_since", "anomaly_event_id", "sensor_event_id", "tracker")


# Built once (every ingest runs both): building a statement costs more than running it.
_SELECT_HEALTH = select(_HEALTH).where(_HEALTH.c.machine_id == bindparam("machine_id"))
_UPDATE_HEALTH = (
    update(_HEALTH)
    .where(_HEALTH.c.machine_id == bindparam("key"))
    .values({name: bindparam(f"new_{name}") for name in _HEALTH_COLUMNS})
)


def health_values(session: Session, machine_id: str) -> Row | None:
    """The machine's health row as plain values (one Core ``SELECT``, no unit of work)."""
    return session.execute(_SELECT_HEALTH, {"machine_id": machine_id}).one_or_none()


def add_health_values(session: Session, values: dict) -> None:
    session.execute(insert(_HEALTH).values(**values))


def update_health_values(session: Session, machine_id: str, values: dict) -> None:
    """Write the event logic's columns of the health row (one prebuilt Core ``UPDATE``)."""
    params = {f"new_{name}": values[name] for name in _HEALTH_COLUMNS}
    session.execute(_UPDATE_HEALTH, {"key": machine_id, **params})


def health_many(session: Session, machine_ids: Sequence[str]) -> dict[str, MachineHealth]:
    if not machine_ids:
        return {}
    rows = session.execute(
        select(MachineHealth).where(MachineHealth.machine_id.in_(list(machine_ids)))
    ).scalars()
    return {h.machine_id: h for h in rows}


def open_events(session: Session, machine_ids: Sequence[str]) -> Sequence[Event]:
    """Open events of these machines."""
    if not machine_ids:
        return []
    stmt = select(Event).where(Event.machine_id.in_(list(machine_ids)), Event.state == "open")
    return session.execute(stmt.order_by(Event.id)).scalars().all()


def page(
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
    after: tuple[datetime, int] | None,
) -> Sequence[Event]:
    """Up to ``limit`` events newest first (opened_at, id), strictly after the keyset ``after``."""
    stmt = select(Event)
    if site is not None or area is not None:
        stmt = stmt.join(Machine, Machine.id == Event.machine_id)
        if site is not None:
            stmt = stmt.where(Machine.site == site)
        if area is not None:
            stmt = stmt.where(Machine.area == area)
    for column, value in (
        (Event.machine_id, machine_id),
        (Event.kind, kind),
        (Event.state, state),
        (Event.severity, severity),
    ):
        if value is not None:
            stmt = stmt.where(column == value)
    if start is not None:
        stmt = stmt.where(Event.opened_at >= start)
    if end is not None:
        stmt = stmt.where(Event.opened_at < end)
    if after is not None:
        at, eid = after
        stmt = stmt.where(or_(Event.opened_at < at, and_(Event.opened_at == at, Event.id < eid)))
    stmt = stmt.order_by(Event.opened_at.desc(), Event.id.desc()).limit(limit)
    return session.execute(stmt).scalars().all()


def member_windows(session: Session, event_id: int, limit: int) -> Sequence[Row]:
    """The event's windows in time order, at most ``limit``."""
    stmt = (
        select(
            Window.id,
            Window.start_at,
            Window.end_at,
            Window.score,
            Window.ratio,
            Window.is_outlier,
            Window.label,
        )
        .join(EventWindow, EventWindow.window_id == Window.id)
        .where(EventWindow.event_id == event_id)
        .order_by(Window.start_at, Window.id)
        .limit(limit)
    )
    return session.execute(stmt).all()


def label_members(session: Session, event_id: int, label: str, note: str, at: datetime) -> int:
    """Label every window of the event; returns the number labelled."""
    ids = select(EventWindow.window_id).where(EventWindow.event_id == event_id)
    result = session.execute(
        update(Window)
        .where(Window.id.in_(ids))
        .values(label=label, label_note=note, labelled_at=at),
        execution_options={"synchronize_session": False},
    )
    return result.rowcount or 0


def counts(session: Session) -> dict[str, Sequence[Row]]:
    """Scrape-time figures: open events per machine, kind and severity; events ever opened by
    kind and first severity; closed by kind and disposition (archived machines left out)."""
    live = select(Machine.id).where(Machine.archived_at.is_(None))
    open_rows = session.execute(
        select(Event.machine_id, Event.kind, Event.severity, func.count())
        .where(Event.state == "open", Event.machine_id.in_(live))
        .group_by(Event.machine_id, Event.kind, Event.severity)
    ).all()
    opened = session.execute(
        select(Event.kind, Event.cause, func.count()).group_by(Event.kind, Event.cause)
    ).all()
    escalated = session.execute(
        select(Event.kind, func.count()).where(Event.escalated_at.is_not(None)).group_by(Event.kind)
    ).all()
    closed = session.execute(
        select(Event.kind, Event.disposition, func.count())
        .where(Event.state == "closed")
        .group_by(Event.kind, Event.disposition)
    ).all()
    health = session.execute(
        select(MachineHealth.machine_id, MachineHealth.health).where(
            MachineHealth.machine_id.in_(live)
        )
    ).all()
    return {
        "open": open_rows,
        "opened": opened,
        "escalated": escalated,
        "closed": closed,
        "health": health,
    }

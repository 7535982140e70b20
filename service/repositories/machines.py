"""Machines table access."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from service.models import Machine, Recording


def get(session: Session, machine_id: str, *, for_update: bool = False) -> Machine | None:
    """The machine with this id (archived ones included), optionally row-locked."""
    stmt = select(Machine).where(Machine.id == machine_id)
    if for_update:
        stmt = stmt.with_for_update()
        return session.execute(stmt.execution_options(populate_existing=True)).scalar_one_or_none()
    return session.execute(stmt).scalar_one_or_none()


# Built once: constructing the statement and its cache key cost more CPU than running it.
_LOCK_FOR_INGEST = (
    select(
        Machine,
        select(Recording.id)
        .where(
            Recording.machine_id == bindparam("machine_id"),
            Recording.sha256 == bindparam("sha256"),
            Recording.started_at == bindparam("started_at"),
        )
        .scalar_subquery(),
    )
    .where(Machine.id == bindparam("machine_id"))
    .with_for_update(of=Machine)
    .execution_options(populate_existing=True)
)


def lock_for_ingest(
    session: Session, machine_id: str, sha256: str, started_at: datetime
) -> tuple[Machine | None, int | None]:
    """The machine, row-locked, and the id of its recording with this content and start if
    one is stored: one round trip for what every upload's transaction needs first."""
    params = {"machine_id": machine_id, "sha256": sha256, "started_at": started_at}
    row = session.execute(_LOCK_FOR_INGEST, params).one_or_none()
    return (None, None) if row is None else (row[0], row[1])


_LOCK_MANY = (
    select(Machine)
    .where(Machine.id.in_(bindparam("ids", expanding=True)))
    .order_by(Machine.id)
    .with_for_update()
    .execution_options(populate_existing=True)
)


def lock_many(session: Session, machine_ids: Sequence[str]) -> dict[str, Machine]:
    """These machines (those that exist), row-locked in id order (so two batches that share
    machines never wait for each other in a cycle)."""
    rows = session.execute(_LOCK_MANY, {"ids": sorted(set(machine_ids))}).scalars()
    return {m.id: m for m in rows}


def add(session: Session, machine: Machine) -> Machine:
    session.add(machine)
    session.flush()
    return machine


def list_machines(
    session: Session,
    *,
    site: str | None = None,
    state: str | None = None,
    include_archived: bool = False,
) -> Sequence[Machine]:
    """Machines ordered by id, filtered by site and state."""
    stmt = select(Machine).order_by(Machine.id)
    if site is not None:
        stmt = stmt.where(Machine.site == site)
    if state is not None:
        stmt = stmt.where(Machine.state == state)
    if not include_archived:
        stmt = stmt.where(Machine.archived_at.is_(None))
    return session.execute(stmt).scalars().all()

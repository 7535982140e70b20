"""Machines table access."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.models import Machine


def get(session: Session, machine_id: str, *, for_update: bool = False) -> Machine | None:
    """The machine with this id (archived ones included), optionally row-locked."""
    stmt = select(Machine).where(Machine.id == machine_id)
    if for_update:
        stmt = stmt.with_for_update()
        return session.execute(stmt.execution_options(populate_existing=True)).scalar_one_or_none()
    return session.execute(stmt).scalar_one_or_none()


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

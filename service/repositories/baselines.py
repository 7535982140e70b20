"""Baselines and their members."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session, undefer

from service.models import Baseline, BaselineWindow


def list_for_machine(session: Session, machine_id: str) -> Sequence[Baseline]:
    stmt = select(Baseline).where(Baseline.machine_id == machine_id).order_by(Baseline.version)
    return session.execute(stmt).scalars().all()


def get(
    session: Session, machine_id: str, version: int, *, with_artifact: bool = False
) -> Baseline | None:
    stmt = select(Baseline).where(Baseline.machine_id == machine_id, Baseline.version == version)
    if with_artifact:
        stmt = stmt.options(undefer(Baseline.artifact))
    return session.execute(stmt).scalar_one_or_none()


def next_version(session: Session, machine_id: str) -> int:
    stmt = select(func.max(Baseline.version)).where(Baseline.machine_id == machine_id)
    return (session.execute(stmt).scalar_one() or 0) + 1


def add(session: Session, baseline: Baseline, window_ids: Sequence[int]) -> Baseline:
    """Insert an immutable baseline version and its member windows."""
    session.add(baseline)
    session.flush()
    if window_ids:
        session.execute(
            insert(BaselineWindow),
            [{"baseline_id": baseline.id, "window_id": int(w)} for w in window_ids],
        )
    return baseline

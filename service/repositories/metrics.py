"""The reads behind ``service/metrics.py``: machine facts at scrape time, last windows at start.

Both stay cheap on large tables: machines and baselines are small, and the per-machine window
lookups walk the ``(machine_id, start_at, id)`` index backwards from the newest row.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Row, and_, select
from sqlalchemy.orm import Session

from service.models import Baseline, Machine, Window


def machine_facts(session: Session) -> Sequence[Row]:
    """One row per machine that is not archived: id, site, area, machine_type, state, and the
    active baseline's version, n_vectors, threshold and created_at (None without one)."""
    stmt = (
        select(
            Machine.id,
            Machine.site,
            Machine.area,
            Machine.machine_type,
            Machine.state,
            Baseline.version.label("baseline_version"),
            Baseline.n_vectors.label("baseline_vectors"),
            Baseline.threshold.label("baseline_threshold"),
            Baseline.created_at.label("baseline_created_at"),
        )
        .outerjoin(
            Baseline,
            and_(
                Baseline.machine_id == Machine.id,
                Baseline.version == Machine.active_baseline_version,
            ),
        )
        .where(Machine.archived_at.is_(None))
        .order_by(Machine.id)
    )
    return session.execute(stmt).all()


def last_window(session: Session, machine_id: str) -> Row | None:
    """The machine's newest window (by start): ``(end_at,)``, or None without windows."""
    stmt = (
        select(Window.end_at)
        .where(Window.machine_id == machine_id)
        .order_by(Window.start_at.desc(), Window.id.desc())
        .limit(1)
    )
    return session.execute(stmt).one_or_none()


def last_scored_window(session: Session, machine_id: str) -> Row | None:
    """The machine's newest scored window: ``(score, ratio)``, or None."""
    stmt = (
        select(Window.score, Window.ratio)
        .where(Window.machine_id == machine_id, Window.score.is_not(None))
        .order_by(Window.start_at.desc(), Window.id.desc())
        .limit(1)
    )
    return session.execute(stmt).one_or_none()

"""Queries of the review page: baseline members in fit order, embeddings, time buckets.

Time buckets are computed in SQL (so a week of 1 s windows is never loaded): seconds since
the epoch via ``julianday`` on SQLite (which stores naive UTC text) and ``extract(epoch)``
on Postgres.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Float, Integer, Row, case, cast, func, select
from sqlalchemy.orm import Session

from service.models import BaselineWindow, Machine, Window
from service.repositories.windows import _DETAIL_COLUMNS


def member_ids_in_fit_order(session: Session, baseline_id: int) -> list[int]:
    """Window ids of a baseline's members in the order their vectors were fitted.

    ``services.baselines.collect_material`` stacks the vectors ordered by (start_at, id) and
    keeps that order when it subsamples, so the i-th member in that order is vector i.
    """
    stmt = (
        select(Window.id)
        .join(BaselineWindow, BaselineWindow.window_id == Window.id)
        .where(BaselineWindow.baseline_id == baseline_id)
        .order_by(Window.start_at, Window.id)
    )
    return list(session.execute(stmt).scalars())


def embeddings(session: Session, window_ids: Sequence[int]) -> dict[int, bytes | None]:
    if not window_ids:
        return {}
    stmt = select(Window.id, Window.embedding).where(Window.id.in_(list(window_ids)))
    return {row.id: row.embedding for row in session.execute(stmt)}


def details(session: Session, window_ids: Sequence[int]) -> dict[int, Row]:
    """Window detail rows (as the windows listing has them) plus machine name, by id."""
    if not window_ids:
        return {}
    stmt = (
        select(*_DETAIL_COLUMNS, Machine.name.label("machine_name"))
        .join(Machine, Machine.id == Window.machine_id)
        .where(Window.id.in_(list(window_ids)))
    )
    return {row.id: row for row in session.execute(stmt)}


def _epoch(session: Session, column):
    if session.get_bind().dialect.name == "sqlite":
        return (func.julianday(column) - 2440587.5) * 86400.0
    return cast(func.extract("epoch", column), Float)


def _bucket(session: Session, column, since: datetime, width: float):
    offset = (_epoch(session, column) - since.timestamp()) / width
    if session.get_bind().dialect.name == "sqlite":
        return cast(offset, Integer)  # truncation = floor for offsets >= 0
    return cast(func.floor(offset), Integer)


def ratio_buckets(
    session: Session,
    machine_ids: Sequence[str] | None,
    since: datetime,
    until: datetime,
    width: float,
) -> Sequence[Row]:
    """Per machine and bucket of ``width`` seconds from ``since``: windows, mean and max ratio,
    outliers. Rows of (machine_id, bucket, n, mean_ratio, max_ratio, outliers)."""
    bucket = _bucket(session, Window.start_at, since, width).label("bucket")
    stmt = select(
        Window.machine_id,
        bucket,
        func.count().label("n"),
        func.avg(Window.ratio).label("mean_ratio"),
        func.max(Window.ratio).label("max_ratio"),
        func.sum(case((Window.is_outlier.is_(True), 1), else_=0)).label("outliers"),
    ).where(Window.start_at >= since, Window.start_at < until)
    if machine_ids is not None:
        stmt = stmt.where(Window.machine_id.in_(list(machine_ids)))
    stmt = stmt.group_by(Window.machine_id, bucket).order_by(Window.machine_id, bucket)
    return session.execute(stmt).all()


def last_windows(session: Session) -> dict[str, Row]:
    """Per machine its newest window: (machine_id, id, start_at, end_at, ratio, is_outlier)."""
    newest = (
        select(Window.machine_id, func.max(Window.start_at).label("start_at"))
        .group_by(Window.machine_id)
        .subquery()
    )
    stmt = select(
        Window.machine_id,
        Window.id,
        Window.start_at,
        Window.end_at,
        Window.ratio,
        Window.is_outlier,
    ).join(
        newest,
        (newest.c.machine_id == Window.machine_id) & (newest.c.start_at == Window.start_at),
    )
    out: dict[str, Row] = {}
    for row in session.execute(stmt):
        if row.machine_id not in out or row.id > out[row.machine_id].id:
            out[row.machine_id] = row
    return out

"""Windows and window audio access, including keyset pagination and retention."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, and_, delete, exists, insert, or_, select, update
from sqlalchemy.orm import Session

from service.models import BaselineWindow, Recording, RecordingAudio, Window

_DETAIL_COLUMNS = (
    Window.id,
    Window.machine_id,
    Window.recording_id,
    Window.start_at,
    Window.end_at,
    Window.score,
    Window.ratio,
    Window.is_outlier,
    Window.baseline_version,
    Window.label,
    Window.label_note,
    Window.labelled_at,
    exists().where(RecordingAudio.recording_id == Window.recording_id).label("has_audio"),
)


# The columns an ingest writes, with their Postgres types, for ``unnest`` of one array each.
_UNNEST_COLUMNS = {
    "machine_id": "text",
    "recording_id": "bigint",
    "start_at": "timestamptz",
    "end_at": "timestamptz",
    "score": "float8",
    "ratio": "float8",
    "is_outlier": "boolean",
    "baseline_version": "integer",
    "embedding": "bytea",
}
_PG_UNNEST_INSERT = (
    f"INSERT INTO {Window.__tablename__} ({', '.join(_UNNEST_COLUMNS)}) "
    "SELECT * FROM unnest("
    + ", ".join(f"%b::{kind}[]" for kind in _UNNEST_COLUMNS.values())
    + ") RETURNING id, machine_id, start_at"
)


def insert_many(session: Session, rows: list[dict[str, Any]]) -> list[int]:
    """Insert windows (dicts of column values); returns their ids in the given order.

    When the rows' ``(machine_id, start_at)`` tell them apart (the windows of one recording
    always do) this is one statement, and the ids are matched back by that key, since the
    RETURNING order is not guaranteed: on Postgres ``INSERT ... SELECT FROM unnest(...)
    RETURNING`` of one binary array per column, on SQLite a batched ``INSERT ... VALUES
    (...), (...) RETURNING`` (SQLAlchemy's insertmanyvalues, compiled once and cached).
    Otherwise SQLAlchemy's ordered form is used (one statement per row on SQLite).
    """
    if not rows:
        return []
    keys = [(row["machine_id"], row["start_at"]) for row in rows]
    if len(set(keys)) == len(keys) and session.get_bind().dialect.name == "postgresql":
        # One statement of nine array parameters whatever the number of rows, prepared once
        # by the server; ``%b``: the arrays go in psycopg's binary format (its text format
        # escapes every element, embeddings included, in Python).
        arrays = tuple([row[name] for row in rows] for name in _UNNEST_COLUMNS)
        result = session.connection().exec_driver_sql(_PG_UNNEST_INSERT, arrays)
        ids = {(machine, start): wid for wid, machine, start in result}
        if len(ids) == len(keys) and all(key in ids for key in keys):
            return [ids[key] for key in keys]
        raise RuntimeError("windows inserted but their ids could not be matched back")
    table = Window.__table__  # Core: the ORM's bulk-insert path costs more than the insert
    if len(set(keys)) == len(keys):
        result = session.execute(
            insert(table).returning(table.c.id, table.c.machine_id, table.c.start_at), rows
        )
        ids = {(machine, start): wid for wid, machine, start in result}
        if len(ids) == len(keys) and all(key in ids for key in keys):
            return [ids[key] for key in keys]
        raise RuntimeError("windows inserted but their ids could not be matched back")
    result = session.execute(
        insert(table).returning(table.c.id, sort_by_parameter_order=True), rows
    )
    return [row[0] for row in result]


def for_recording(session: Session, recording_id: int) -> Sequence[Window]:
    stmt = select(Window).where(Window.recording_id == recording_id).order_by(Window.start_at)
    return session.execute(stmt).scalars().all()


def get_detail(session: Session, window_id: int) -> Row | None:
    return session.execute(select(*_DETAIL_COLUMNS).where(Window.id == window_id)).one_or_none()


def get(session: Session, window_id: int) -> Window | None:
    return session.get(Window, window_id)


def get_audio(session: Session, window: Window) -> tuple[Recording, RecordingAudio] | None:
    """The recording of a window and its stored audio (None once pruned)."""
    row = session.execute(
        select(Recording, RecordingAudio)
        .join(RecordingAudio, RecordingAudio.recording_id == Recording.id)
        .where(Recording.id == window.recording_id)
    ).one_or_none()
    return None if row is None else (row[0], row[1])


def page(
    session: Session,
    machine_id: str,
    *,
    start: datetime | None,
    end: datetime | None,
    outliers_only: bool,
    limit: int,
    after: tuple[datetime, int] | None,
) -> Sequence[Row]:
    """Up to ``limit`` windows newest first (start_at, id), strictly after the keyset ``after``."""
    stmt = select(*_DETAIL_COLUMNS).where(Window.machine_id == machine_id)
    if start is not None:
        stmt = stmt.where(Window.start_at >= start)
    if end is not None:
        stmt = stmt.where(Window.start_at < end)
    if outliers_only:
        stmt = stmt.where(Window.is_outlier.is_(True))
    if after is not None:
        at, wid = after
        stmt = stmt.where(or_(Window.start_at < at, and_(Window.start_at == at, Window.id < wid)))
    stmt = stmt.order_by(Window.start_at.desc(), Window.id.desc()).limit(limit)
    return session.execute(stmt).all()


def baseline_material(
    session: Session,
    machine_id: str,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    enrollment_only: bool = False,
) -> Sequence[Row]:
    """Normal material: windows with an embedding, never labelled anomaly, outliers only when
    labelled normal. Rows of (id, recording_id, start_at, end_at, embedding, label)."""
    stmt = select(
        Window.id,
        Window.recording_id,
        Window.start_at,
        Window.end_at,
        Window.embedding,
        Window.label,
    ).where(
        Window.machine_id == machine_id,
        Window.embedding.is_not(None),
        or_(
            Window.label == "normal",
            and_(Window.label.is_(None), Window.is_outlier.is_(False)),
        ),
    )
    if start is not None:
        stmt = stmt.where(Window.start_at >= start)
    if end is not None:
        stmt = stmt.where(Window.start_at < end)
    if enrollment_only:
        # The machine's chosen material: enrollment and runs admitted while learning.
        stmt = stmt.join(Recording, Recording.id == Window.recording_id).where(
            or_(Recording.is_enrollment.is_(True), Recording.learned.is_(True))
        )
    return session.execute(stmt.order_by(Window.start_at, Window.id)).all()


def set_label(session: Session, window: Window, label: str, note: str | None, at: datetime) -> None:
    window.label = label
    window.label_note = note
    window.labelled_at = at
    session.flush()


def _unprotected(cutoff: datetime):
    """Windows older than ``cutoff`` that are neither outliers nor labelled."""
    return and_(Window.start_at < cutoff, Window.is_outlier.is_(False), Window.label.is_(None))


def prune_audio(session: Session, cutoff: datetime) -> int:
    """Delete the audio of recordings that ended before ``cutoff`` and hold no outlier or
    labelled window; returns the number of recordings whose audio was deleted."""
    protected = exists().where(
        Window.recording_id == Recording.id,
        or_(Window.is_outlier.is_(True), Window.label.is_not(None)),
    )
    ids = select(Recording.id).where(Recording.ended_at < cutoff, ~protected)
    result = session.execute(
        delete(RecordingAudio).where(RecordingAudio.recording_id.in_(ids)),
        execution_options={"synchronize_session": False},
    )
    return result.rowcount or 0


def prune_embeddings(session: Session, cutoff: datetime) -> int:
    """Clear embeddings of unprotected windows older than ``cutoff`` that no baseline uses and
    that are not enrollment material; returns rows updated."""
    in_baseline = exists().where(BaselineWindow.window_id == Window.id)
    enrollment = exists().where(
        Recording.id == Window.recording_id, Recording.is_enrollment.is_(True)
    )
    stmt = (
        update(Window)
        .where(_unprotected(cutoff), Window.embedding.is_not(None), ~in_baseline, ~enrollment)
        .values(embedding=None)
    )
    result = session.execute(stmt, execution_options={"synchronize_session": False})
    return result.rowcount or 0

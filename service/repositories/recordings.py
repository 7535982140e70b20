"""Recordings table access."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import insert, or_, select
from sqlalchemy.orm import Session

from service.models import Recording, RecordingAudio, utcnow


def find(session: Session, machine_id: str, sha256: str, started_at: datetime) -> Recording | None:
    """The recording with this content hash and start time, if already stored."""
    stmt = select(Recording).where(
        Recording.machine_id == machine_id,
        Recording.sha256 == sha256,
        Recording.started_at == started_at,
    )
    return session.execute(stmt).scalar_one_or_none()


def find_many(
    session: Session, keys: Sequence[tuple[str, str, datetime]]
) -> dict[tuple[str, str, datetime], int]:
    """Ids of the stored recordings among these (machine, sha256, started_at) keys: one
    query (``IN`` lists, compiled once, then the exact keys picked here)."""
    if not keys:
        return {}
    stmt = select(Recording.id, Recording.machine_id, Recording.sha256, Recording.started_at).where(
        Recording.machine_id.in_(sorted({k[0] for k in keys})),
        Recording.sha256.in_(sorted({k[1] for k in keys})),
    )
    wanted = set(keys)
    found = {}
    for r in session.execute(stmt):
        key = (r.machine_id, r.sha256, r.started_at)
        if key in wanted:
            found[key] = r.id
    return found


# Core statements on the tables: the ORM's bulk-insert path costs more than the insert.
_INSERT_RECORDING = insert(Recording.__table__).returning(Recording.__table__.c.id)
# Several recordings, matched back by the unique key: RETURNING's order is not guaranteed,
# and asking for it (``sort_by_parameter_order``) makes SQLite insert one row per statement.
_INSERT_RECORDINGS = insert(Recording.__table__).returning(
    *(Recording.__table__.c[name] for name in ("id", "machine_id", "sha256", "started_at"))
)
_INSERT_AUDIO = insert(RecordingAudio.__table__)


def add(session: Session, recording: Recording) -> Recording:
    """Insert a new recording (one cached ``INSERT ... RETURNING id``, no unit of work) and
    return it with its id and defaults set. The object is not attached to ``session``: the
    ingest only reads it."""
    values = _defaults(recording)
    recording.id = session.execute(_INSERT_RECORDING, values).scalar_one()
    return recording


_RECORDING_COLUMNS = tuple(c.key for c in Recording.__table__.columns if c.key != "id")


def _defaults(recording: Recording) -> dict:
    if recording.conditions is None:
        recording.conditions = {}
    if recording.is_enrollment is None:
        recording.is_enrollment = False
    if recording.learned is None:
        recording.learned = False
    if recording.created_at is None:
        recording.created_at = utcnow()
    return {column: getattr(recording, column) for column in _RECORDING_COLUMNS}


def add_many(session: Session, recordings: Sequence[Recording]) -> Sequence[Recording]:
    """``add`` for several recordings (distinct machine, sha256, start): one ``INSERT ...
    RETURNING``."""
    if len(recordings) == 1:
        add(session, recordings[0])
        return recordings
    values = [_defaults(r) for r in recordings]
    ids = {
        (machine, sha256, started_at): rid
        for rid, machine, sha256, started_at in session.execute(_INSERT_RECORDINGS, values)
    }
    for recording in recordings:
        recording.id = ids[(recording.machine_id, recording.sha256, recording.started_at)]
    return recordings


def add_audio_many(session: Session, rows: Sequence[tuple[int, int, str, bytes]]) -> None:
    """Audio rows ``(recording_id, sample_rate, format, data)``: one executemany."""
    session.execute(
        _INSERT_AUDIO,
        [{"recording_id": r, "sample_rate": s, "format": f, "data": d} for r, s, f, d in rows],
    )


def add_audio(session: Session, recording_id: int, sample_rate: int, fmt: str, data: bytes) -> None:
    session.execute(
        _INSERT_AUDIO,
        {"recording_id": recording_id, "sample_rate": sample_rate, "format": fmt, "data": data},
    )


def material_spans(session: Session, machine_id: str, since: datetime | None = None) -> list:
    """(id, started_at, ended_at, conditions) of the machine's baseline-material recordings
    (enrollment and learned), oldest first; with ``since`` also every recording from then."""
    condition = or_(Recording.is_enrollment.is_(True), Recording.learned.is_(True))
    if since is not None:
        condition = or_(condition, Recording.started_at >= since)
    stmt = (
        select(Recording.id, Recording.started_at, Recording.ended_at, Recording.conditions)
        .where(Recording.machine_id == machine_id, condition)
        .order_by(Recording.started_at, Recording.id)
    )
    return list(session.execute(stmt).all())


def spans_by_id(session: Session, recording_ids: list[int]) -> list:
    """(id, started_at, ended_at, conditions) of these recordings."""
    if not recording_ids:
        return []
    stmt = select(
        Recording.id, Recording.started_at, Recording.ended_at, Recording.conditions
    ).where(Recording.id.in_(recording_ids))
    return list(session.execute(stmt).all())

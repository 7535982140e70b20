"""Recordings table access."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import bindparam, insert, or_, select
from sqlalchemy.orm import Session

from service.models import Recording, RecordingAudio, UTCDateTime, utcnow


def find(session: Session, machine_id: str, sha256: str, started_at: datetime) -> Recording | None:
    """The recording with this content hash and start time, if already stored."""
    stmt = select(Recording).where(
        Recording.machine_id == machine_id,
        Recording.sha256 == sha256,
        Recording.started_at == started_at,
    )
    return session.execute(stmt).scalar_one_or_none()


_FIND_MANY = select(
    Recording.id, Recording.machine_id, Recording.sha256, Recording.started_at
).where(
    Recording.machine_id.in_(bindparam("machine_ids", expanding=True)),
    Recording.sha256.in_(bindparam("sha256s", expanding=True)),
    Recording.started_at.in_(bindparam("starts", expanding=True)),
)


def find_many(
    session: Session, keys: Sequence[tuple[str, str, datetime]]
) -> dict[tuple[str, str, datetime], int]:
    """Ids of the stored recordings among these (machine, sha256, started_at) keys: one
    query (``IN`` lists, compiled once, then the exact keys picked here; the start times
    too, so that content sent again and again, a dead microphone's digital silence, does
    not bring back every earlier copy)."""
    if not keys:
        return {}
    params = {
        "machine_ids": sorted({k[0] for k in keys}),
        "sha256s": sorted({k[1] for k in keys}),
        "starts": sorted({k[2] for k in keys}),
    }
    wanted = set(keys)
    found = {}
    for r in session.execute(_FIND_MANY, params):
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


# Postgres: one ``INSERT ... SELECT FROM unnest(...)`` of one binary array per column, the
# same text whatever the number of rows (prepared once by the server; a multi-row VALUES
# list is a new statement for every batch size, parsed again by the driver every time).
_PG_RECORDING_TYPES = {
    "machine_id": "text",
    "started_at": "timestamptz",
    "ended_at": "timestamptz",
    "duration_seconds": "float8",
    "sample_rate": "integer",
    "channels": "integer",
    "format": "text",
    "sha256": "text",
    "size_bytes": "bigint",
    "conditions": "json",
    "is_enrollment": "boolean",
    "learned": "boolean",
    "created_at": "timestamptz",
}
_PG_INSERT_RECORDINGS = (
    f"INSERT INTO {Recording.__tablename__} ({', '.join(_PG_RECORDING_TYPES)}) "
    "SELECT * FROM unnest("
    + ", ".join(f"%b::{kind}[]" for kind in _PG_RECORDING_TYPES.values())
    + ") RETURNING id, machine_id, sha256, started_at"
)
_PG_INSERT_AUDIO = (
    f"INSERT INTO {RecordingAudio.__tablename__} (recording_id, sample_rate, format, data) "
    "SELECT * FROM unnest(%b::bigint[], %b::integer[], %b::text[], %b::bytea[])"
)


def add_many(session: Session, recordings: Sequence[Recording]) -> Sequence[Recording]:
    """``add`` for several recordings (distinct machine, sha256, start): one ``INSERT ...
    RETURNING``."""
    if len(recordings) == 1:
        add(session, recordings[0])
        return recordings
    values = [_defaults(r) for r in recordings]
    if session.get_bind().dialect.name == "postgresql":
        from psycopg.types.json import Json  # what SQLAlchemy binds a JSON value as

        dialect = session.get_bind().dialect
        utc = UTCDateTime().process_bind_param  # refuses naive times, as the ORM's bind does
        arrays = tuple(
            [Json(v[name]) for v in values]
            if kind == "json"
            else [utc(v[name], dialect) for v in values]
            if kind == "timestamptz"
            else [v[name] for v in values]
            for name, kind in _PG_RECORDING_TYPES.items()
        )
        result = session.connection().exec_driver_sql(_PG_INSERT_RECORDINGS, arrays)
    else:
        result = session.execute(_INSERT_RECORDINGS, values)
    ids = {(machine, sha256, started_at): rid for rid, machine, sha256, started_at in result}
    for recording in recordings:
        recording.id = ids[(recording.machine_id, recording.sha256, recording.started_at)]
    return recordings


def add_audio_many(session: Session, rows: Sequence[tuple[int, int, str, bytes]]) -> None:
    """Audio rows ``(recording_id, sample_rate, format, data)``: one statement (Postgres: of
    one array per column), else one executemany."""
    if len(rows) > 1 and session.get_bind().dialect.name == "postgresql":
        arrays = tuple(list(column) for column in zip(*rows, strict=True))
        session.connection().exec_driver_sql(_PG_INSERT_AUDIO, arrays)
        return
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

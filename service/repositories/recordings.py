"""Recordings table access."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import insert, or_, select
from sqlalchemy.orm import Session

from service.models import Recording, RecordingAudio


def find(session: Session, machine_id: str, sha256: str, started_at: datetime) -> Recording | None:
    """The recording with this content hash and start time, if already stored."""
    stmt = select(Recording).where(
        Recording.machine_id == machine_id,
        Recording.sha256 == sha256,
        Recording.started_at == started_at,
    )
    return session.execute(stmt).scalar_one_or_none()


def add(session: Session, recording: Recording) -> Recording:
    session.add(recording)
    session.flush()
    return recording


def add_audio(session: Session, recording_id: int, sample_rate: int, fmt: str, data: bytes) -> None:
    session.execute(
        insert(RecordingAudio).values(
            recording_id=recording_id, sample_rate=sample_rate, format=fmt, data=data
        )
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

"""Recordings table access."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import insert, select
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

"""Retention: prune window audio and embeddings that are no longer worth keeping.

Kept forever: the audio of recordings holding an outlier or labelled window (window audio is
cut from its recording's audio); the embeddings of outlier and labelled windows, baseline
members and enrollment audio. Everything else keeps its audio for
``HUMWATCH_AUDIO_RETENTION_DAYS`` and its embedding for ``HUMWATCH_EMBEDDING_RETENTION_DAYS``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from service.models import utcnow
from service.repositories import windows as windows_repo
from service.runtime import Runtime

log = logging.getLogger("humwatch.retention")


@dataclass
class PruneResult:
    recording_audio_deleted: int
    embeddings_cleared: int


def prune(runtime: Runtime, now: datetime | None = None) -> PruneResult:
    """One retention pass over every machine."""
    now = now or utcnow()
    settings = runtime.settings
    with runtime.db.session() as session:
        audio = windows_repo.prune_audio(
            session, now - timedelta(days=settings.audio_retention_days)
        )
        embeddings = windows_repo.prune_embeddings(
            session, now - timedelta(days=settings.embedding_retention_days)
        )
    if audio or embeddings:
        log.info("pruned audio of %d windows and embeddings of %d", audio, embeddings)
    return PruneResult(audio, embeddings)

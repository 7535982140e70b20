"""The JetStream side shared by the bridge and the workers: connect, create the streams and the
durable consumer (idempotent), publish."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from service.stream.topics import Names

log = logging.getLogger("humwatch.stream")

# A 10 s 16 kHz mono FLAC chunk is 150-350 kB; 8 MiB leaves room for 60 s of 8-channel WAV.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
DUPLICATE_WINDOW_SECONDS = 600.0  # a republished chunk within this is dropped by JetStream
DEAD_LETTER_MAX_AGE_SECONDS = 30 * 86400.0


async def connect(url: str, *, name: str, **kwargs: Any):
    """A NATS connection that reconnects forever (``nats.connect``)."""
    import nats

    async def _error(exc: Exception) -> None:
        log.warning("NATS %s: %s", name, exc)

    async def _disconnected() -> None:
        log.warning("NATS %s: disconnected from %s", name, url)

    async def _reconnected() -> None:
        log.info("NATS %s: reconnected", name)

    return await nats.connect(
        url,
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        error_cb=_error,
        disconnected_cb=_disconnected,
        reconnected_cb=_reconnected,
        **kwargs,
    )


async def ensure_streams(js, names: Names) -> None:
    """Create the work-queue stream and the dead-letter stream when they do not exist."""
    from nats.js.api import RetentionPolicy, StorageType, StreamConfig
    from nats.js.errors import NotFoundError

    wanted = [
        StreamConfig(
            name=names.stream,
            subjects=[names.audio_subjects],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            max_msg_size=MAX_MESSAGE_BYTES,
            duplicate_window=DUPLICATE_WINDOW_SECONDS,
        ),
        StreamConfig(
            name=names.dead_stream,
            subjects=[names.dead_subjects],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_msg_size=MAX_MESSAGE_BYTES,
            max_age=DEAD_LETTER_MAX_AGE_SECONDS,
            duplicate_window=DUPLICATE_WINDOW_SECONDS,
        ),
    ]
    for config in wanted:
        try:
            await js.stream_info(config.name)
        except NotFoundError:
            await js.add_stream(config)
            log.info("created JetStream stream %s (%s)", config.name, config.subjects[0])


async def delete_streams(js, names: Names) -> None:
    """Delete the work-queue and dead-letter streams of ``names`` (those that exist): what a
    test or benchmark that made its own streams leaves behind."""
    for stream in (names.stream, names.dead_stream):
        with contextlib.suppress(Exception):
            await js.delete_stream(stream)


def consumer_config(names: Names, ack_wait: float):
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    return ConsumerConfig(
        durable_name=names.consumer,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=ack_wait,
        max_deliver=-1,  # the worker dead-letters what cannot succeed; nothing is dropped
        max_ack_pending=1000,
        filter_subject=names.audio_subjects,
    )

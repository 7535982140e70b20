"""Edge and queue commands: ``agent`` (sound card or files -> MQTT), ``bridge`` (MQTT ->
JetStream) and ``worker`` (JetStream -> database). See ``service.stream``."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from service.cli.common import ConditionOption, MachineOption, app, fail, load_settings

MqttOption = Annotated[
    str | None,
    typer.Option("--mqtt", metavar="URL", help="MQTT broker (default HUMWATCH_MQTT_URL)"),
]
NatsOption = Annotated[
    str | None,
    typer.Option("--nats", metavar="URL", help="NATS server (default HUMWATCH_NATS_URL)"),
]
TopicPrefixOption = Annotated[
    str, typer.Option(help="first MQTT topic level: PREFIX/{site}/{machine}/audio")
]
SubjectPrefixOption = Annotated[
    str, typer.Option(help="first NATS subject token: PREFIX.audio.{site}.{machine}")
]
StreamOption = Annotated[str, typer.Option(help="JetStream work-queue stream")]
DeadStreamOption = Annotated[str, typer.Option(help="JetStream dead-letter stream")]


def _logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", force=True
    )


def _names(
    topic_prefix="humwatch", subject_prefix="humwatch", stream=None, dead=None, consumer=None
):
    from service.stream.topics import CONSUMER, DEAD_STREAM, STREAM, Names

    return Names(
        mqtt_prefix=topic_prefix,
        nats_prefix=subject_prefix,
        stream=stream or STREAM,
        dead_stream=dead or DEAD_STREAM,
        consumer=consumer or CONSUMER,
    )


def _conditions(pairs: list[str] | None) -> dict[str, str]:
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail(f"--condition {pair!r}: write KEY=VALUE, e.g. rpm=1480")
        out[key] = value
    return out


@app.command()
def agent(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(metavar="[FILE_OR_DIR]...", help="audio to replay (WAV/FLAC/OGG)"),
    ] = None,
    machine: MachineOption = ...,
    mqtt: MqttOption = None,
    site: Annotated[str | None, typer.Option(help="site (topic level; default 'default')")] = None,
    device: Annotated[
        str | None,
        typer.Option(metavar="NAME", help="sound card to record (needs 'sounddevice')"),
    ] = None,
    start: Annotated[
        str | None,
        typer.Option(metavar="ISO_TIME", help="time of the replay's first sample (default now)"),
    ] = None,
    chunk_seconds: Annotated[float, typer.Option(min=1.0, max=60.0, help="chunk length")] = 10.0,
    channel: Annotated[str, typer.Option(help="'mix' or a channel index")] = "mix",
    condition: ConditionOption = None,
    buffer_dir: Annotated[
        Path | None,
        typer.Option(help="disk buffer (default ~/.cache/humwatch/agent/SITE-MACHINE)"),
    ] = None,
    buffer_mb: Annotated[float, typer.Option(min=1, help="disk buffer bound, MB")] = 512,
    pace: Annotated[
        float,
        typer.Option(
            min=0, help="replay speed: 0 as fast as the broker acks, 1 real time, 10 ten times"
        ),
    ] = 0.0,
    drain_timeout: Annotated[
        float | None,
        typer.Option(help="after a replay, wait at most this long for the broker's acks"),
    ] = None,
    topic_prefix: TopicPrefixOption = "humwatch",
) -> None:
    """Send a sound card or audio files to MQTT in FLAC chunks. Talks to the MQTT broker.

    Chunks are buffered on disk until the broker acknowledges them (bounded by --buffer-mb;
    the oldest are dropped and counted beyond it), so a broker restart loses nothing.
    """
    from service.stream.agent import (
        Agent,
        AgentError,
        AgentOptions,
        audio_files,
        device_chunks,
        file_chunks,
    )
    from service.stream.topics import token

    if bool(device) == bool(paths):
        fail("give either --device NAME or audio files/directories to replay")
    if device and start:
        fail("--start dates replayed files; a sound card is dated by the clock")
    if channel != "mix" and not channel.isdigit():
        fail(f"--channel must be 'mix' or a channel index, not {channel!r}")
    try:
        token(machine)
        token(site)
    except ValueError as exc:
        fail(str(exc))
    settings = load_settings()
    try:
        begin = datetime.fromisoformat(start) if start else datetime.now(UTC)
    except ValueError:
        fail(f"--start {start!r} is not an ISO 8601 time (e.g. 2026-01-05T08:00:00Z)")
    if begin.tzinfo is None:
        begin = begin.replace(tzinfo=UTC)
    options = AgentOptions(
        mqtt_url=mqtt or settings.mqtt_url,
        machine=machine,
        site=site,
        names=_names(topic_prefix),
        chunk_seconds=chunk_seconds,
        channel=channel,
        conditions=_conditions(condition),
        buffer_dir=buffer_dir,
        buffer_bytes=int(buffer_mb * 2**20),
        pace=pace,
        drain_timeout=drain_timeout,
    )
    _logging()
    try:
        if device:
            chunks, forever = device_chunks(device, options), True
        else:
            files = audio_files(paths or [])
            chunks, forever = file_chunks(files, options, begin.astimezone(UTC)), False
        summary = Agent(options).run(chunks, forever=forever)
    except (AgentError, ValueError, OSError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted; unsent chunks stay in the disk buffer for the next run", 130)
    typer.echo(json.dumps(summary))


@app.command()
def bridge(
    mqtt: MqttOption = None,
    nats: NatsOption = None,
    client_id: Annotated[
        str, typer.Option(help="MQTT client id of the persistent session (one per bridge)")
    ] = "humwatch-bridge",
    topic_prefix: TopicPrefixOption = "humwatch",
    subject_prefix: SubjectPrefixOption = "humwatch",
    stream: StreamOption = "HUMWATCH_AUDIO",
    dead_stream: DeadStreamOption = "HUMWATCH_DEAD",
) -> None:
    """Move chunks from MQTT into the JetStream work queue. Talks to MQTT and NATS.

    A persistent QoS 1 subscription; each MQTT message is acknowledged only after JetStream
    stored it. Start it before the agents.
    """
    from service.stream.bridge import BridgeOptions, run_bridge

    settings = load_settings()
    _logging()
    options = BridgeOptions(
        mqtt_url=mqtt or settings.mqtt_url,
        nats_url=nats or settings.nats_url,
        names=_names(topic_prefix, subject_prefix, stream, dead_stream),
        client_id=client_id,
    )
    try:
        counts = run_bridge(options)
    except (ValueError, OSError) as exc:
        fail(str(exc))
    typer.echo(json.dumps(counts))


@app.command()
def worker(
    nats: NatsOption = None,
    subject_prefix: SubjectPrefixOption = "humwatch",
    stream: StreamOption = "HUMWATCH_AUDIO",
    dead_stream: DeadStreamOption = "HUMWATCH_DEAD",
    consumer: Annotated[str, typer.Option(help="durable consumer shared by the workers")] = (
        "humwatch-workers"
    ),
    ack_wait: Annotated[
        float, typer.Option(min=1, help="seconds before an unacked chunk is redelivered")
    ] = 30.0,
    max_attempts: Annotated[
        int, typer.Option(min=1, help="deliveries before an unexpected failure is dead-lettered")
    ] = 5,
    batch: Annotated[
        int,
        typer.Option(
            min=1, max=64, help="chunks pulled per request (one transaction, acked after it)"
        ),
    ] = 16,
    metrics_port: Annotated[
        int | None, typer.Option(help="serve /metrics (and /healthz) on this port")
    ] = None,
    metrics_host: Annotated[str, typer.Option(help="address of the metrics server")] = (
        "127.0.0.1"
    ),
    exit_when_idle: Annotated[
        float | None, typer.Option(help="exit after this many seconds without a chunk")
    ] = None,
) -> None:
    """Ingest chunks from the JetStream work queue. Talks to NATS and the database.

    The same validation and idempotency as the HTTP API; a chunk is acknowledged after its
    commit; refused chunks go to the dead-letter stream with the reason. The database is
    HUMWATCH_DATABASE_URL (Postgres must be at the latest schema: humwatch db upgrade).
    """
    from service.cli.serve import prepare_database
    from service.stream.worker import WorkerOptions, run_worker
    from service.warmup import ensure_numba_cache_dir

    settings = load_settings()
    prepare_database(settings)  # migrations (SQLite) / schema check (Postgres)
    ensure_numba_cache_dir()
    _logging()
    options = WorkerOptions(
        nats_url=nats or settings.nats_url,
        names=_names("humwatch", subject_prefix, stream, dead_stream, consumer),
        ack_wait=ack_wait,
        max_attempts=max_attempts,
        batch=batch,
        metrics_host=metrics_host,
        metrics_port=metrics_port,
        exit_when_idle=exit_when_idle,
    )
    counts = run_worker(settings, options)
    typer.echo(json.dumps(counts))

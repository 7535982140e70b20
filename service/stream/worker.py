"""``humwatch worker``: chunks from the JetStream work queue into the database.

Each worker process pulls a few chunks at a time (``batch``) from the durable consumer and
hands them together to the service layer (``service.services.ingest_batch``, built from the
pieces of ``POST /v1/machines/{id}/recordings``'s ``service.services.ingest``): the same
limits and validation, the same idempotency (machine + sha256 + start time), the same rows
as one upload at a time, in one transaction per batch. Only after the commit are the
messages acknowledged (the batch's acks written together, then one PING/PONG round trip
with the server, which answers after it has read them), so a worker killed mid-batch
leaves them to be redelivered after the ack wait, and a redelivered chunk that was already
stored is recognised and acknowledged. A chunk refused by the service is refused alone.

What happens to a chunk that fails:

- refused by the service (bad audio, unknown/paused/archived machine, too large, bad
  conditions: what HTTP answers with a 4xx) or not a chunk message at all: published to the
  dead-letter subject with the reason (headers ``Humwatch-Reason``, ``Humwatch-Error``),
  counted (``humwatch_queue_dead_letters_total{reason}``) and acknowledged: never retried;
- the database unreachable (or the baseline unloadable): negatively acknowledged with a
  growing delay and retried until it is back; nothing is lost during an outage;
- anything else: retried ``max_attempts`` times, then dead-lettered as ``internal_error``.

Workers hold no state another worker needs: machines, baselines and their versions come from
the database (the per-process caches are checked against the locked machine row on every
chunk, so an activation anywhere is used from the next chunk on).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from detectors.errors import ArtifactError, DetectorError
from service.config import Settings
from service.db import is_database_outage
from service.errors import ServiceError, detector_error_code
from service.stream import envelope, jetstream
from service.stream.topics import Names

log = logging.getLogger("humwatch.worker")

RETRY_DELAYS = (0.5, 1.0, 2.0, 5.0, 10.0)  # nak delays by delivery count, the last repeats
PENDING_SAMPLE_SECONDS = 10.0


@dataclass
class WorkerOptions:
    nats_url: str
    names: Names = field(default_factory=Names)
    ack_wait: float = 30.0
    max_attempts: int = 5
    fetch_timeout: float = 2.0
    # Chunks pulled per request (what is there, up to this many), ingested in one transaction
    # and acked after it: 16 costs 15 % less CPU per chunk than 4 (docs/benchmarks.md).
    batch: int = 16
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None
    exit_when_idle: float | None = None  # seconds without a chunk, then exit (replays, benches)
    max_chunks: int | None = None


@dataclass
class Outcome:
    """What became of one delivery: ``stored``, ``duplicate``, ``dead_lettered``, ``retried``."""

    kind: str
    reason: str | None = None
    detail: str | None = None
    retry_delay: float | None = None


class Transient(Exception):
    """The chunk may succeed later (database or baseline unavailable)."""


def process(runtime, payload: bytes, deliveries: int, max_attempts: int) -> Outcome:
    """Ingest one chunk message through the service layer; what to do with the message."""
    return process_batch(runtime, [(payload, deliveries)], max_attempts)[0]


def process_batch(runtime, messages: list[tuple[bytes, int]], max_attempts: int) -> list[Outcome]:
    """Ingest fetched chunk messages ``(payload, deliveries)`` through the service layer in
    one write transaction (``service.services.ingest_batch``); per message what to do."""
    from service import metrics
    from service.services import conditions as conditions_service
    from service.services import ingest_batch

    outcomes: list[Outcome | None] = [None] * len(messages)
    items, chunks, where = [], [], []
    limit = runtime.settings.max_upload_bytes
    for i, (payload, deliveries) in enumerate(messages):
        try:
            chunk = envelope.decode(payload)
        except envelope.EnvelopeError as exc:
            outcomes[i] = Outcome("dead_lettered", "bad_message", str(exc))
            continue
        if len(chunk.audio) > limit:
            outcomes[i] = Outcome(
                "dead_lettered",
                "payload_too_large",
                f"chunk audio of {len(chunk.audio)} bytes exceeds the limit of {limit} bytes "
                "(HUMWATCH_MAX_UPLOAD_BYTES)",
            )
            continue
        try:
            conditions = conditions_service.validate(chunk.conditions.items())
        except Exception as exc:  # noqa: BLE001 - classified below
            outcomes[i] = _classify(exc, chunk.machine, deliveries, max_attempts)
            continue
        items.append(
            ingest_batch.Item(
                chunk.machine, chunk.audio, chunk.started_at, conditions, sha256=chunk.sha256
            )
        )
        chunks.append(chunk)
        where.append(i)
    results = ingest_batch.ingest_many(runtime, items) if items else []
    for i, chunk, result in zip(where, chunks, results, strict=True):
        if isinstance(result, Exception):
            outcomes[i] = _classify(result, chunk.machine, messages[i][1], max_attempts)
            continue
        if chunk.published_at is not None and result.created:
            metrics.QUEUE_LATENCY.observe(max(0.0, time.time() - chunk.published_at))
        outcomes[i] = Outcome("stored" if result.created else "duplicate")
    return outcomes  # type: ignore[return-value]


def _classify(exc: Exception, machine: str, deliveries: int, max_attempts: int) -> Outcome:
    """What to do with a chunk whose ingest raised ``exc``."""
    if isinstance(exc, ServiceError):
        if exc.status_code >= 500:
            return _retry(deliveries, exc.code, exc.detail)
        return Outcome("dead_lettered", exc.code, exc.detail)
    if isinstance(exc, ArtifactError):
        return _retry(deliveries, "baseline_unavailable", str(exc))
    if isinstance(exc, DetectorError):
        return Outcome("dead_lettered", detector_error_code(exc), str(exc))
    if is_database_outage(exc):
        return _retry(deliveries, "database_unavailable", type(exc).__name__)
    if deliveries >= max_attempts:
        log.error(
            "chunk of %s failed %d times; dead-lettering it",
            machine,
            deliveries,
            exc_info=exc,
        )
        return Outcome(
            "dead_lettered",
            "internal_error",
            f"failed {deliveries} times: {type(exc).__name__}: {exc}"[:500],
        )
    log.error("chunk of %s failed (delivery %d); retrying", machine, deliveries, exc_info=exc)
    return _retry(deliveries, "internal_error", f"{type(exc).__name__}: {exc}")


def _retry(deliveries: int, reason: str, detail: str) -> Outcome:
    delay = RETRY_DELAYS[min(max(deliveries, 1), len(RETRY_DELAYS)) - 1]
    return Outcome("retried", reason, detail, retry_delay=delay)


def build_runtime(settings: Settings):
    """The worker's ``Runtime``: what the app's lifespan prepares, without the web app."""
    from service import metrics, warmup
    from service.config import DEFAULT_EMBEDDER
    from service.db import Database
    from service.runtime import Runtime

    if settings.torch_threads > 0:
        import torch
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(settings.torch_threads)
        threadpool_limits(settings.torch_threads, user_api="blas")  # see service.app
    runtime = Runtime(settings=settings, db=Database(settings.database_url))
    runtime.embedders.get(dict(DEFAULT_EMBEDDER))
    runtime.embedder_ready.set()
    metrics.initialise_from_database(runtime.db)
    warmup.warm_up_if_needed(runtime)
    return runtime


class Worker:
    """One worker process: pull, ingest, then ack (or dead-letter, or nak)."""

    def __init__(self, runtime, options: WorkerOptions) -> None:
        self.runtime = runtime
        self.options = options
        self.stopping = threading.Event()  # set from a signal handler or another thread
        self.counts: dict[str, int] = {"stored": 0, "duplicate": 0, "dead_lettered": 0}
        self.counts["retried"] = 0
        self._metrics_server: ThreadingHTTPServer | None = None
        self._nc: Any = None

    async def run(self) -> dict[str, int]:
        from nats.errors import TimeoutError as NatsTimeout

        from service import metrics

        options, names = self.options, self.options.names
        nc = self._nc = await jetstream.connect(options.nats_url, name="humwatch-worker")
        try:
            js = nc.jetstream()
            await jetstream.ensure_streams(js, names)
            sub = await js.pull_subscribe(
                names.audio_subjects,
                durable=names.consumer,
                stream=names.stream,
                config=jetstream.consumer_config(names, options.ack_wait),
            )
            self._start_metrics_server()
            log.info("worker pulling %s (consumer %s)", names.audio_subjects, names.consumer)
            idle_since = time.monotonic()
            next_sample = 0.0
            done = 0
            while not self.stopping.is_set():
                if time.monotonic() >= next_sample:
                    next_sample = time.monotonic() + PENDING_SAMPLE_SECONDS
                    with contextlib.suppress(Exception):
                        info = await sub.consumer_info()
                        metrics.QUEUE_PENDING.set(info.num_pending)
                try:
                    msgs = await sub.fetch(options.batch, timeout=options.fetch_timeout)
                except NatsTimeout:
                    idle = time.monotonic() - idle_since
                    if options.exit_when_idle is not None and idle >= options.exit_when_idle:
                        break
                    continue
                except Exception as exc:  # noqa: BLE001 - connection trouble: nats reconnects
                    log.warning("fetch failed (%s); retrying", exc)
                    await asyncio.sleep(0.5)
                    continue
                if self.stopping.is_set():
                    for msg in msgs:
                        with contextlib.suppress(Exception):
                            await msg.nak()  # not started: straight back to the queue
                    continue
                await self._handle(js, msgs)
                done += len(msgs)
                idle_since = time.monotonic()
                if options.max_chunks is not None and done >= options.max_chunks:
                    break
        finally:
            self._stop_metrics_server()
            with contextlib.suppress(Exception):
                await nc.close()
        return dict(self.counts)

    async def _handle(self, js, msgs) -> None:
        """Ingest a fetched batch in one service call, then settle each message: dead-letter,
        nak, or ack (all acks after the batch's commit, then one flush: a PONG from the
        server, which has read them, instead of a reply per ack)."""
        from service import metrics

        deliveries = [int(msg.metadata.num_delivered or 1) for msg in msgs]
        metrics.QUEUE_REDELIVERIES.inc(sum(1 for d in deliveries if d > 1))
        outcomes = await asyncio.to_thread(
            process_batch,
            self.runtime,
            [(msg.data, d) for msg, d in zip(msgs, deliveries, strict=True)],
            self.options.max_attempts,
        )
        for i, (msg, outcome) in enumerate(zip(msgs, outcomes, strict=True)):
            if outcome.kind == "dead_lettered":
                try:
                    await self._dead_letter(js, msg, outcome, deliveries[i])
                except Exception as exc:  # noqa: BLE001 - not stored anywhere: keep it
                    log.warning(
                        "dead-letter publish failed (%s); the chunk will be redelivered", exc
                    )
                    outcomes[i] = Outcome("retried", "dead_letter_unavailable", str(exc), 1.0)
        acks = [msg for msg, o in zip(msgs, outcomes, strict=True) if o.kind != "retried"]
        if acks:
            try:
                for msg in acks:
                    await msg.ack()  # buffered by the client
                await self._nc.flush(timeout=5)  # written and answered: the server has them
            except Exception as exc:  # noqa: BLE001 - redelivered later, then duplicates
                log.warning(
                    "acks of %d chunks not confirmed (%s); unacked ones will be redelivered",
                    len(acks),
                    exc,
                )
        outage = None
        for msg, outcome in zip(msgs, outcomes, strict=True):
            if outcome.kind == "retried":
                log.warning(
                    "chunk %s not stored (%s: %s); retrying in %.1f s",
                    msg.subject,
                    outcome.reason,
                    outcome.detail,
                    outcome.retry_delay,
                )
                with contextlib.suppress(Exception):
                    await msg.nak(delay=outcome.retry_delay)
                if outcome.reason == "database_unavailable":
                    outage = outcome.retry_delay or 1.0
            metrics.QUEUE_CHUNKS.labels(outcome.kind).inc()
            self.counts[outcome.kind] += 1
        if outage is not None:
            await asyncio.sleep(outage)  # no point pulling more now

    async def _dead_letter(self, js, msg, outcome: Outcome, deliveries: int) -> None:
        from service import metrics

        site = machine = None
        with contextlib.suppress(envelope.EnvelopeError):
            header = envelope.peek_header(msg.data)
            site, machine = header.get("site"), header.get("machine")
        names = self.options.names
        try:
            subject = names.dead_subject(site, machine if isinstance(machine, str) else None)
        except ValueError:
            subject = names.dead_subject(None, None)
        headers = {
            "Humwatch-Reason": outcome.reason or "unknown",
            "Humwatch-Error": (outcome.detail or "")[:1000],
            "Humwatch-Deliveries": str(deliveries),
            "Humwatch-Subject": msg.subject,
            "Nats-Msg-Id": f"dead:{msg.metadata.sequence.stream}:{names.stream}",
        }
        await js.publish(subject, msg.data, headers=headers, stream=names.dead_stream)
        metrics.QUEUE_DEAD_LETTERS.labels(metrics_label(outcome.reason)).inc()
        log.warning("chunk %s dead-lettered: %s: %s", msg.subject, outcome.reason, outcome.detail)

    def _start_metrics_server(self) -> None:
        port = self.options.metrics_port
        if port is None:
            return
        from service import metrics

        db = self.runtime.db

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                status = 200
                if self.path.split("?")[0] == "/metrics":
                    body, ctype = metrics.render(db), metrics.CONTENT_TYPE_LATEST
                elif self.path == "/healthz":
                    body, ctype = b'{"status":"ok"}', "application/json"
                elif self.path == "/readyz":
                    status, body = _database_ready(db)
                    ctype = "application/json"
                else:
                    self.send_error(404)
                    return
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: Any) -> None:
                pass

        self._metrics_server = ThreadingHTTPServer((self.options.metrics_host, port), Handler)
        threading.Thread(
            target=self._metrics_server.serve_forever, name="humwatch-metrics", daemon=True
        ).start()
        log.info("metrics on http://%s:%d/metrics", self.options.metrics_host, port)

    def _stop_metrics_server(self) -> None:
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()


def _database_ready(db) -> tuple[int, bytes]:
    """/readyz of a worker: 200 when the database answers, else 503."""
    from sqlalchemy import text

    try:
        with db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        body = f'{{"error":"not_ready","detail":"database: {type(exc).__name__}"}}'
        return 503, body.encode()
    return 200, b'{"status":"ready","checks":{"database":"ok"}}'


def metrics_label(reason: str | None) -> str:
    from service.metrics import _label

    return _label(reason)


def run_worker(settings: Settings, options: WorkerOptions) -> dict[str, int]:
    """Run one worker until SIGTERM/SIGINT (it finishes the batch in hand) or idle exit."""
    runtime = build_runtime(settings)

    async def main() -> dict[str, int]:
        worker = Worker(runtime, options)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, worker.stopping.set)
        return await worker.run()

    try:
        return asyncio.run(main())
    finally:
        runtime.db.dispose()

"""``humwatch worker``: chunks from the JetStream work queue into the database.

Each worker process pulls a few chunks at a time (``batch``) from the durable consumer and
hands each in turn to the same service layer as ``POST /v1/machines/{id}/recordings``
(``service.services.ingest``): the same limits and validation, the same idempotency
(machine + sha256 + start time), one transaction. Only after the commit is the message
acknowledged (and the ack confirmed by the server), so a worker killed mid-chunk leaves it
to be redelivered after the ack wait, and a redelivered chunk that was already stored is
recognised and acknowledged.

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

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from detectors.errors import ArtifactError, DetectorError
from service.config import Settings
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
    batch: int = 4  # chunks pulled per request (each acked on its own after its commit)
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


def is_database_outage(exc: BaseException) -> bool:
    if isinstance(exc, OperationalError | InterfaceError | PoolTimeoutError):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def process(runtime, payload: bytes, deliveries: int, max_attempts: int) -> Outcome:
    """Ingest one chunk message through the service layer; what to do with the message."""
    from service import metrics
    from service.services import conditions as conditions_service
    from service.services import ingest as ingest_service

    try:
        chunk = envelope.decode(payload)
    except envelope.EnvelopeError as exc:
        return Outcome("dead_lettered", "bad_message", str(exc))
    limit = runtime.settings.max_upload_bytes
    if len(chunk.audio) > limit:
        return Outcome(
            "dead_lettered",
            "payload_too_large",
            f"chunk audio of {len(chunk.audio)} bytes exceeds the limit of {limit} bytes "
            "(HUMWATCH_MAX_UPLOAD_BYTES)",
        )
    try:
        conditions = conditions_service.validate(chunk.conditions.items())
        result = ingest_service.ingest(
            runtime,
            chunk.machine,
            chunk.audio,
            started_at=chunk.started_at,
            conditions=conditions,
        )
    except ServiceError as exc:
        if exc.status_code >= 500:
            return _retry(deliveries, exc.code, exc.detail)
        return Outcome("dead_lettered", exc.code, exc.detail)
    except ArtifactError as exc:
        return _retry(deliveries, "baseline_unavailable", str(exc))
    except DetectorError as exc:
        return Outcome("dead_lettered", detector_error_code(exc), str(exc))
    except Exception as exc:  # noqa: BLE001 - classified below
        if is_database_outage(exc):
            return _retry(deliveries, "database_unavailable", type(exc).__name__)
        if deliveries >= max_attempts:
            log.exception(
                "chunk of %s failed %d times; dead-lettering it", chunk.machine, deliveries
            )
            return Outcome(
                "dead_lettered",
                "internal_error",
                f"failed {deliveries} times: {type(exc).__name__}: {exc}"[:500],
            )
        log.exception("chunk of %s failed (delivery %d); retrying", chunk.machine, deliveries)
        return _retry(deliveries, "internal_error", f"{type(exc).__name__}: {exc}")
    if chunk.published_at is not None and result.created:
        metrics.QUEUE_LATENCY.observe(max(0.0, time.time() - chunk.published_at))
    return Outcome("stored" if result.created else "duplicate")


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

    async def run(self) -> dict[str, int]:
        from nats.errors import TimeoutError as NatsTimeout

        from service import metrics

        options, names = self.options, self.options.names
        nc = await jetstream.connect(options.nats_url, name="humwatch-worker")
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
                for msg in msgs:
                    if self.stopping.is_set():
                        with contextlib.suppress(Exception):
                            await msg.nak()  # not started: straight back to the queue
                        continue
                    await self._handle(js, msg)
                    done += 1
                idle_since = time.monotonic()
                if options.max_chunks is not None and done >= options.max_chunks:
                    break
        finally:
            self._stop_metrics_server()
            with contextlib.suppress(Exception):
                await nc.close()
        return dict(self.counts)

    async def _handle(self, js, msg) -> None:
        from service import metrics

        deliveries = int(msg.metadata.num_delivered or 1)
        if deliveries > 1:
            metrics.QUEUE_REDELIVERIES.inc()
        outcome = await asyncio.to_thread(
            process, self.runtime, msg.data, deliveries, self.options.max_attempts
        )
        if outcome.kind == "dead_lettered":
            try:
                await self._dead_letter(js, msg, outcome, deliveries)
            except Exception as exc:  # noqa: BLE001 - not stored anywhere: keep the message
                log.warning("dead-letter publish failed (%s); the chunk will be redelivered", exc)
                outcome = Outcome("retried", "dead_letter_unavailable", str(exc), 1.0)
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
                await asyncio.sleep(outcome.retry_delay or 1.0)  # no point pulling more now
        else:
            try:
                await msg.ack_sync(timeout=5)
            except Exception as exc:  # noqa: BLE001 - redelivered later, then a duplicate
                log.warning("ack of %s failed (%s); it will be redelivered", msg.subject, exc)
        metrics.QUEUE_CHUNKS.labels(outcome.kind).inc()
        self.counts[outcome.kind] += 1

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
    """Run one worker until SIGTERM/SIGINT (it finishes the chunk in hand) or idle exit."""
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

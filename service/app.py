"""The FastAPI application factory.

``create_app(settings)`` wires settings, database, error handlers and routers. Start-up work
that must never land on a request runs in the lifespan: the default embedder is built, and,
when some baseline is large enough to use NN-descent, pynndescent's numba kernels are
compiled in a background thread (cached on disk through ``NUMBA_CACHE_DIR``; see
``service.warmup``). A periodic retention pass prunes old window audio and embeddings, and
a periodic event sweep opens sensor events for stale microphones.
The machine metrics are seeded from the database at start (``service.metrics``), and
``GET /metrics`` serves them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator

import anyio
from fastapi import FastAPI

from service import __version__, metrics, ui, warmup
from service.api import health, v1
from service.config import DEFAULT_EMBEDDER, Settings, get_settings
from service.db import Database
from service.errors import install_error_handlers
from service.middleware import GuardMiddleware
from service.runtime import Runtime
from service.services import events as events_service
from service.services import ingest_group, retention

log = logging.getLogger("humwatch")


async def _prune_periodically(runtime: Runtime, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await anyio.to_thread.run_sync(retention.prune, runtime)
        except Exception:  # noqa: BLE001 - keep the loop alive; the next pass retries
            log.exception("retention pass failed")


async def _sweep_events_periodically(runtime: Runtime, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await anyio.to_thread.run_sync(events_service.sweep, runtime)
        except Exception:  # noqa: BLE001 - keep the loop alive; the next pass retries
            log.exception("event sweep failed")


def create_app(settings: Settings | None = None, database: Database | None = None) -> FastAPI:
    """Build the app; ``database`` lets tests share one engine across apps."""
    settings = settings or get_settings()
    runtime = Runtime(settings=settings, db=database or Database(settings.database_url))

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if settings.torch_threads > 0:
            import torch

            torch.set_num_threads(settings.torch_threads)
            # numpy's BLAS (kNN matmuls) gets the same budget: with its own pool beside torch's
            # the two fight over the cores and end-to-end scoring ran 5x slower
            # (docs/benchmarks.md, end to end).
            from threadpoolctl import threadpool_limits

            threadpool_limits(settings.torch_threads, user_api="blas")
        runtime.ingest_limiter = anyio.CapacityLimiter(
            settings.ingest_workers or max(1, os.cpu_count() or 1)
        )
        # Threads of prepared uploads waiting for their (shared) write transaction: they use
        # no CPU, so they do not hold an ingest slot, but they hold their audio.
        runtime.store_limiter = anyio.CapacityLimiter(ingest_group.MAX_GROUP)
        await anyio.to_thread.run_sync(runtime.embedders.get, dict(DEFAULT_EMBEDDER))
        runtime.embedder_ready.set()
        await anyio.to_thread.run_sync(metrics.initialise_from_database, runtime.db)
        # pynndescent's kernels compile in the background, and only when some baseline is
        # large enough to use NN-descent (service.warmup).
        await anyio.to_thread.run_sync(warmup.warm_up_if_needed, runtime)
        tasks = []
        if settings.prune_interval_seconds > 0:
            tasks.append(
                asyncio.create_task(_prune_periodically(runtime, settings.prune_interval_seconds))
            )
        if settings.event_sweep_interval_seconds > 0:
            tasks.append(
                asyncio.create_task(
                    _sweep_events_periodically(runtime, settings.event_sweep_interval_seconds)
                )
            )
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if database is None:
                runtime.db.dispose()

    app = FastAPI(
        title="humwatch",
        version=__version__,
        summary="Listens to factory machines and flags the moments they sound wrong.",
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    app.add_middleware(GuardMiddleware, settings_getter=lambda: runtime.settings)
    install_error_handlers(app)
    metrics.install(app)
    app.include_router(health.router)
    app.include_router(v1)
    ui.install(app)
    return app

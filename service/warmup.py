"""pynndescent's numba warm-up, only when some baseline is large enough to use NN-descent.

Baselines under ``detectors.index.APPROXIMATE_MIN_SIZE`` vectors use exact search and never
touch numba, so a process whose baselines are all smaller skips the warm-up (it cost 20-80 s
of CPU, a 3-4x slower first upload and 0.4-0.9 GB of memory at every start). When one is
large enough, the kernels compile in a background thread at start, cached on disk in
``NUMBA_CACHE_DIR`` (``~/.cache/humwatch/numba`` when unset), and ``/readyz`` reports
``index: warming`` until they are ready. A process started before its first large baseline
existed compiles them when it first fits or loads one (a rebuild, or the first upload scored
against it): restart such processes after the first rebuild past the size.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from sqlalchemy import func, select

from service.db import Database
from service.models import Baseline, Machine
from service.runtime import Runtime

log = logging.getLogger("humwatch.warmup")

NUMBA_CACHE_ENV = "NUMBA_CACHE_DIR"
_started_lock = threading.Lock()


def ensure_numba_cache_dir() -> str:
    """Point numba at a persistent cache (before numba is imported); the directory used."""
    default = str(Path.home() / ".cache" / "humwatch" / "numba")
    return os.environ.setdefault(NUMBA_CACHE_ENV, default)


def largest_baseline(db: Database) -> int:
    """The most vectors held by any baseline of a machine that is not archived (0 if none)."""
    with db.session() as session:
        stmt = (
            select(func.max(Baseline.n_vectors))
            .join(Machine, Machine.id == Baseline.machine_id)
            .where(Machine.archived_at.is_(None))
        )
        return int(session.execute(stmt).scalar_one() or 0)


def needs_approximate_index(n_vectors: int) -> bool:
    from detectors.index import APPROXIMATE_MIN_SIZE

    return n_vectors >= APPROXIMATE_MIN_SIZE


def start_warm_up(runtime: Runtime) -> bool:
    """Compile the kernels in a background thread (once per process); True if started now."""
    with _started_lock:
        if getattr(runtime, "_index_warm_up_started", False):
            return False
        runtime._index_warm_up_started = True  # type: ignore[attr-defined]
    runtime.index_warm.clear()
    ensure_numba_cache_dir()
    threading.Thread(target=_warm, args=(runtime,), name="humwatch-warm-index", daemon=True).start()
    return True


def _warm(runtime: Runtime) -> None:
    try:
        from detectors.index import warm_up_nndescent

        warm_up_nndescent()
        log.info("pynndescent kernels compiled (cache %s)", os.environ.get(NUMBA_CACHE_ENV))
    except Exception:  # noqa: BLE001 - warm-up is an optimisation, never fatal
        log.exception("pynndescent warm-up failed; the first large baseline will compile it")
    finally:
        runtime.index_warm.set()


def warm_up_if_needed(runtime: Runtime) -> bool:
    """At start: warm up when enabled and some baseline needs NN-descent; True if started."""
    if runtime.settings.warm_up_index:
        try:
            largest = largest_baseline(runtime.db)
        except Exception:  # noqa: BLE001 - a database outage must not stop the start
            log.warning("cannot read baseline sizes; warming the index up to be safe")
            largest = None
        if largest is None or needs_approximate_index(largest):
            return start_warm_up(runtime)
    runtime.index_warm.set()
    return False

"""The directory prometheus_client's multiprocess mode shares between worker processes.

Kept apart from ``service.metrics`` on purpose: prometheus_client picks its value store when
it is imported and creates the files of unlabelled metrics when ``service.metrics`` is
imported, so the directory must be ready before either import, in the process that starts the
workers (which never imports them itself).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> str | None:
    """The directory named by ``PROMETHEUS_MULTIPROC_DIR``, if any."""
    return os.environ.get(MULTIPROC_ENV) or None


@contextmanager
def multiprocess_directory(*, required: bool) -> Iterator[str | None]:
    """Prepare ``PROMETHEUS_MULTIPROC_DIR`` for the processes about to start.

    A directory already named there is created if needed and emptied of the metric files of
    an earlier run (their counters would otherwise be added to this run's). Without one, a
    temporary directory is used and removed afterwards when ``required`` (several workers);
    otherwise nothing is set and None is yielded (a single process keeps its metrics in
    memory).
    """
    given = multiprocess_dir()
    if given is not None:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for old in path.glob("*.db"):
            old.unlink()
        yield str(path)
        return
    if not required:
        yield None
        return
    path = Path(tempfile.mkdtemp(prefix="humwatch-metrics-"))
    os.environ[MULTIPROC_ENV] = str(path)
    try:
        yield str(path)
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(path, ignore_errors=True)

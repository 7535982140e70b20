"""Several worker processes share one ``/metrics`` through ``PROMETHEUS_MULTIPROC_DIR``.

Real processes write the metric files here; the live Prometheus test runs the service itself
with ``humwatch serve --workers 2``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from fastapi import FastAPI

from service import metrics
from service.multiproc import multiprocess_directory
from tests.observability.metrics_helpers import parse, value
from tests.observability.promql import ROOT

WORKER = textwrap.dedent(
    """
    import sys
    from datetime import UTC, datetime
    from types import SimpleNamespace

    import numpy as np

    from service import metrics

    machine, n, ratio, end = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
    windows = [
        SimpleNamespace(
            end_at=datetime.fromtimestamp(end - (n - 1 - i), tz=UTC),
            score=2 * ratio,
            ratio=ratio,
            is_outlier=ratio > 1,
        )
        for i in range(n)
    ]
    metrics.observe_recording(
        machine,
        windows,
        audio_seconds=n,
        waveform=np.zeros(100 * n, dtype=np.float32),
        start_samples=np.arange(n) * 100,
        window_samples=100,
        ended_at=windows[-1].end_at,
    )
    metrics.BUILD_INFO.labels("test").set(1)
    metrics.INGEST_REJECTIONS.labels("not_found").inc()
    """
)

RENDER = textwrap.dedent(
    """
    import sys

    from service import metrics
    from service.db import Database
    from service.models import Base

    db = Database(sys.argv[1])
    Base.metadata.create_all(db.engine)
    sys.stdout.write(metrics.render(db).decode())
    """
)


def _run(script: str, *args: str, directory: Path) -> str:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory), "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", script, *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_workers_are_aggregated(tmp_path):
    directory = tmp_path / "multiproc"
    directory.mkdir()
    # Two workers, one after the other: the second writes older audio with a higher ratio.
    _run(WORKER, "mp-fan", "5", "0.5", "1000", directory=directory)
    _run(WORKER, "mp-fan", "3", "2.0", "900", directory=directory)
    assert len(list(directory.glob("*.db"))) >= 2  # one set of files per process
    samples = parse(_run(RENDER, f"sqlite:///{tmp_path / 'db.sqlite'}", directory=directory))

    # Counters and histograms add up over the processes.
    assert value(samples, "humwatch_windows_scored_total", machine="mp-fan") == 8
    assert value(samples, "humwatch_outlier_windows_total", machine="mp-fan") == 3
    assert value(samples, "humwatch_silent_windows_total", machine="mp-fan") == 8
    assert value(samples, "humwatch_recordings_ingested_total", machine="mp-fan") == 2
    assert value(samples, "humwatch_window_score_ratio_count", machine="mp-fan") == 8
    assert value(samples, "humwatch_window_score_ratio_bucket", machine="mp-fan", le="1.0") == 5
    assert value(samples, "humwatch_ingest_rejections_total", reason="not_found") == 2
    # The latest-score gauges take the most recent write, the timestamp the maximum.
    assert value(samples, "humwatch_machine_score_ratio", machine="mp-fan") == 2.0
    assert value(samples, "humwatch_machine_last_window_timestamp_seconds", machine="mp-fan") == (
        1000
    )
    # No per-process label leaks into the series.
    assert value(samples, "humwatch_build_info", version="test") == 1
    assert not any(dict(labels).get("pid") for _, labels in samples)
    # The database facts are served beside them.
    assert value(samples, "humwatch_database_up") == 1


def test_multiprocess_directory_is_emptied_or_temporary(tmp_path, monkeypatch):
    given = tmp_path / "given"
    given.mkdir()
    (given / "counter_123.db").write_bytes(b"stale")
    (given / "keep.txt").write_text("not ours")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(given))
    with multiprocess_directory(required=False) as path:
        assert path == str(given)
        assert not (given / "counter_123.db").exists() and (given / "keep.txt").exists()

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    with multiprocess_directory(required=False) as path:
        assert path is None and "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    with multiprocess_directory(required=True) as path:
        assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == path and Path(path).is_dir()
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ and not Path(path).exists()


def test_the_directory_helper_imports_no_metrics():
    """prometheus_client creates metric files when ``service.metrics`` is imported, so the
    helper the serve command calls first must not import either."""
    script = (
        "import sys, service.multiproc; "
        "assert 'prometheus_client' not in sys.modules and 'service.metrics' not in sys.modules"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_a_missing_multiprocess_directory_fails_at_start(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "absent"))
    with pytest.raises(RuntimeError, match="not a directory"):
        metrics.install(FastAPI())

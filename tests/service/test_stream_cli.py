"""The edge and queue commands as their users meet them: one-line errors, the worker's
metrics and readiness endpoints."""

from __future__ import annotations

import asyncio
import sys
import threading
import time

import httpx
import pytest
from typer.testing import CliRunner

from service.cli import app
from tests.service import brokers
from tests.service.conftest import free_port, fresh_database, make_settings


@pytest.fixture
def names():
    names = brokers.unique_names()
    yield names
    asyncio.run(brokers.delete_streams(brokers.SHARED_NATS, names))


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def test_agent_needs_either_a_device_or_files():
    result = run("agent", "--machine", "pump-01")
    assert result.exit_code == 1
    assert "give either --device NAME or audio files" in result.output


def test_agent_without_an_audio_backend_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # import fails, as without it
    result = run(
        "agent", "--machine", "pump-01", "--device", "hw:1,0", "--buffer-dir", str(tmp_path)
    )
    assert result.exit_code == 1
    assert "no audio backend" in result.output and "pip install sounddevice" in result.output


def test_agent_reports_missing_files_and_bad_names(tmp_path):
    result = run("agent", "--machine", "pump-01", str(tmp_path / "nope.wav"))
    assert result.exit_code == 1 and "no such file or directory" in result.output
    result = run("agent", "--machine", "pump/01", str(tmp_path))
    assert result.exit_code == 1 and "cannot name a topic level" in result.output
    result = run("agent", "--machine", "pump-01", "--start", "yesterday", str(tmp_path))
    assert result.exit_code == 1 and "not an ISO 8601 time" in result.output


def test_worker_serves_metrics_and_readiness(names, tmp_path):
    from service.stream.worker import Worker, WorkerOptions, build_runtime

    port = free_port()
    with fresh_database(tmp_path) as url:
        runtime = build_runtime(make_settings(url))
        worker = Worker(
            runtime,
            WorkerOptions(brokers.SHARED_NATS, names, metrics_port=port, fetch_timeout=0.5),
        )
        thread = threading.Thread(target=lambda: asyncio.run(worker.run()), daemon=True)
        thread.start()
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    ready = httpx.get(f"{base}/readyz", timeout=2)
                    break
                except httpx.HTTPError:
                    assert time.monotonic() < deadline, "metrics server did not start"
                    time.sleep(0.2)
            assert ready.status_code == 200 and ready.json()["checks"]["database"] == "ok"
            assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
            text = httpx.get(f"{base}/metrics").text
            assert 'humwatch_queue_chunks_total{outcome="stored"}' in text
            assert "humwatch_database_up 1.0" in text
        finally:
            worker.stopping.set()
            thread.join(15)
            runtime.db.dispose()
    assert not thread.is_alive()

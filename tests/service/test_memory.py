"""The probes of issue 9 items 1-3 leave the service's resident memory within 100 MiB of where
it started (a real uvicorn process; VmRSS from /proc). Before the fix one of them grew the
process past 21 GB, and four rejected specs or four 100 MiB bodies added 290-670 MiB."""

from __future__ import annotations

import socket

import httpx
import pytest

from tests.service.conftest import ADMIN_TOKEN, API_KEY, SUMMARY_LINES
from tests.service.live import rss_bytes, uvicorn_server

MiB = 1024 * 1024
KEY = {"Authorization": f"Bearer {API_KEY}"}

SPEC_PROBES = [
    {"name": "logmel", "n_fft": 16777216},
    {"name": "logmel", "n_fft": 1e9},
    {"name": "logmel", "n_fft": 1048576},
    {"name": "logmel", "n_mels": 100000},
    {"name": "logmel", "hop_length": 1, "n_fft": 8192},
    {"name": "logmel", "batch_size": 10**9},
    {"name": "hf", "model": "/", "batch_size": 10**6},
]


def _big_body_without_key(port: int, declared: int = 100 * MiB, sent: int = MiB) -> bytes:
    """Declare a 100 MiB JSON body, send 1 MiB of it, and read the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        head = (
            f"POST /v1/machines HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nContent-Length: {declared}\r\n\r\n"
        )
        sock.sendall(head.encode())
        try:
            sock.sendall(b" " * sent)
        except OSError:  # the server may already have answered and closed
            pass
        return sock.recv(4096)


@pytest.fixture
def server(db_url, tmp_path):
    env = {
        "HUMWATCH_DATABASE_URL": db_url,
        "HUMWATCH_API_KEYS": API_KEY,
        "HUMWATCH_ADMIN_TOKEN": ADMIN_TOKEN,
        "HUMWATCH_WARM_UP_INDEX": "false",
        "HUMWATCH_PRUNE_INTERVAL_SECONDS": "0",
    }
    with uvicorn_server("service.app:create_app", env, tmp_path / "service.log") as running:
        yield running


def test_probes_leave_memory_where_it_was(server):
    base, proc = server
    port = int(base.rsplit(":", 1)[1])
    with httpx.Client(base_url=base, headers=KEY, timeout=120) as http:
        # Warm the paths the probes take (validation, error handlers, one accepted machine).
        assert http.post("/v1/machines", json={"id": "warm-1"}).status_code == 201
        assert (
            http.post("/v1/machines", json={"id": "x", "embedder": {"name": "nope"}}).status_code
            == 422
        )
        start = rss_bytes(proc.pid)
        peak = start
        for _round in range(4):
            for spec in SPEC_PROBES:  # item 1: bounds before anything is allocated
                resp = http.post("/v1/machines", json={"id": "probe-1", "embedder": spec})
                assert resp.status_code == 422, resp.text
            # item 2: a spec within bounds that does not fit its window is built and dropped
            resp = http.post(
                "/v1/machines",
                json={
                    "id": "probe-2",
                    "window_seconds": 0.05,
                    "hop_seconds": 0.05,
                    "embedder": {"name": "logmel", "n_fft": 8192, "hop_length": 2048},
                },
            )
            assert resp.status_code == 422 and "n_fft" in resp.text
            # item 3: 100 MiB bodies: refused without reading them, with or without a key
            assert _big_body_without_key(port).startswith(b"HTTP/1.1 401")
            resp = http.post(
                "/v1/machines",
                content=b" " * (2 * MiB),
                headers={"Content-Type": "application/json"},
            )
            assert resp.status_code == 413
            # items 4-6 on the way
            for started_at in ("9999-12-31T23:59:59Z", "0001-01-01T00:00:00+01:00", "1700000000"):
                resp = http.post(
                    "/v1/machines/warm-1/recordings",
                    params={"started_at": started_at},
                    content=b"RIFF",
                    headers={"Content-Type": "audio/wav"},
                )
                assert resp.status_code == 422
            peak = max(peak, rss_bytes(proc.pid))
        end = rss_bytes(proc.pid)
    SUMMARY_LINES.append(
        f"memory probes: RSS {start / MiB:.0f} MiB -> {end / MiB:.0f} MiB "
        f"(peak {peak / MiB:.0f} MiB)"
    )
    assert end - start < 100 * MiB, (start, end)
    assert peak - start < 100 * MiB, (start, peak)

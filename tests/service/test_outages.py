"""Database loss answers 503 with Retry-After (items 7), and an unexpected error leaves the
keep-alive connection usable (item 8): against a real Postgres that really stops, and a
real uvicorn server."""

from __future__ import annotations

import http.client
import json

from fastapi.testclient import TestClient

from service.app import create_app
from tests.service.conftest import FAST_MACHINE, make_settings
from tests.service.live import uvicorn_server


def test_database_loss_is_503_with_retry_after(private_postgres):
    pg = private_postgres
    with TestClient(create_app(make_settings(pg.url))) as client:
        assert client.post("/v1/machines", json={"id": "fan-01", **FAST_MACHINE}).status_code == 201
        assert client.get("/v1/machines").status_code == 200

        pg.stop()
        for method, path, kwargs in [
            ("GET", "/v1/machines", {}),
            ("GET", "/v1/machines/fan-01/windows", {}),
            ("POST", "/v1/machines", {"json": {"id": "fan-02", **FAST_MACHINE}}),
            ("PATCH", "/v1/machines/fan-01", {"json": {"name": "Fan"}}),
        ]:
            resp = client.request(method, path, **kwargs)
            assert resp.status_code == 503, (path, resp.text)
            assert resp.headers["retry-after"] == "5"
            assert resp.json()["error"] == "database_unavailable"
            assert "retry" in resp.json()["detail"]
        assert client.get("/readyz").status_code == 503
        assert client.get("/healthz").status_code == 200

        pg.start()  # the pool's pre-ping replaces the dead connections
        assert client.get("/v1/machines").json()[0]["id"] == "fan-01"
        assert client.get("/readyz").status_code == 200


def test_an_unexpected_error_keeps_the_connection_usable(db_url, tmp_path):
    env = {
        "HUMWATCH_DATABASE_URL": db_url,
        "HUMWATCH_WARM_UP_INDEX": "false",
        "HUMWATCH_PRUNE_INTERVAL_SECONDS": "0",
    }
    with uvicorn_server("tests.service.crashing_app:make_app", env, tmp_path / "log") as (
        base,
        _proc,
    ):
        port = int(base.rsplit(":", 1)[1])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", "/healthz")
            assert conn.getresponse().read() and conn.sock is not None
            local = conn.sock.getsockname()
            conn.request("GET", "/crash")
            resp = conn.getresponse()
            body = json.loads(resp.read())
            assert resp.status == 500 and body["error"] == "internal_error"
            assert resp.getheader("connection") != "close"
            # The same connection answers the next request (it was reset before the fix).
            conn.request("GET", "/v1/machines")
            resp = conn.getresponse()
            assert resp.status == 200 and json.loads(resp.read()) == []
            assert conn.sock.getsockname() == local
        finally:
            conn.close()
    assert "RuntimeError: deliberate failure" in (tmp_path / "log").read_text()

"""Liveness, readiness, OpenAPI."""

from __future__ import annotations

from sqlalchemy.exc import OperationalError


def test_healthz_and_readyz(client):
    assert client.get("/healthz").json()["status"] == "ok"
    body = client.get("/readyz").json()
    assert body["status"] == "ready"
    assert body["checks"]["database"] == "ok" and body["checks"]["embedder"] == "ok"


def test_readyz_reports_a_dead_database(client, monkeypatch):
    engine = client.app.state.runtime.db.engine

    def broken(*_args, **_kwargs):
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    monkeypatch.setattr(engine, "connect", broken)
    resp = client.get("/readyz")
    assert resp.status_code == 503
    assert resp.json()["error"] == "not_ready" and "database" in resp.json()["detail"]


def test_openapi_and_docs(client):
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for path in (
        "/v1/machines",
        "/v1/machines/{machine_id}",
        "/v1/machines/{machine_id}/recordings",
        "/v1/machines/{machine_id}/windows",
        "/v1/windows/{window_id}",
        "/v1/windows/{window_id}/audio",
        "/v1/windows/{window_id}/feedback",
        "/v1/machines/{machine_id}/baselines",
        "/v1/admin/machines/{machine_id}/baselines",
        "/v1/admin/machines/{machine_id}/baselines/{version}/activate",
        "/healthz",
        "/readyz",
    ):
        assert path in paths, path
    body = paths["/v1/machines/{machine_id}/recordings"]["post"]["requestBody"]["content"]
    assert {"audio/wav", "audio/flac", "audio/ogg"} <= set(body)
    assert client.get("/docs").status_code == 200


def test_unexpected_errors_keep_the_shape(client, monkeypatch):
    from service.services import machines as machines_service

    def boom(*_args, **_kwargs):
        raise RuntimeError("bug")

    monkeypatch.setattr(machines_service, "list_machines", boom)
    from fastapi.testclient import TestClient

    quiet = TestClient(client.app, raise_server_exceptions=False)
    resp = quiet.get("/v1/machines")
    assert resp.status_code == 500
    assert resp.json() == {
        "error": "internal_error",
        "detail": "internal server error; see the service log",
    }

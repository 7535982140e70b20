"""Baselines: listing, admin rebuild from normal material, activation and rollback."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from service.models import Baseline
from tests.service.audio import wav
from tests.service.conftest import ENROLL_WINDOWS, at, enroll, upload


def _rebuild(client, **body):
    resp = client.post("/v1/admin/machines/fan-01/baselines", json=body)
    assert resp.status_code == 201, resp.text
    return resp.json()


def test_listing_describes_each_version(client):
    enroll(client, "fan-01")
    (v1,) = client.get("/v1/machines/fan-01/baselines").json()
    assert v1["version"] == 1 and v1["active"] is True
    assert v1["k"] == 5 and v1["metric"] == "euclidean" and v1["false_alarm_rate"] == 0.01
    assert v1["threshold"] > 0 and v1["threshold_method"]["false_alarm_rate"] == 0.01
    assert v1["source_filter"]["source"] == "enrollment"
    assert v1["source_from"].startswith("2025-01-06T08:00:00")
    assert v1["source_to"].startswith("2025-01-06T08:00:06")
    assert v1["embedder"]["name"] == "logmel"
    assert client.get("/v1/machines/nope/baselines").status_code == 404


def test_rebuild_uses_normal_material_and_feedback(client):
    enroll(client, "fan-01")
    normal = upload(client, "fan-01", wav(1.0, seed=50), started_at=at(10)).json()["windows"]
    faulty = upload(client, "fan-01", wav(1.0, seed=51, fault=True), started_at=at(20)).json()
    faulty = faulty["windows"]
    n_normal = sum(not w["is_outlier"] for w in normal)
    v2 = _rebuild(client, note="more material")
    # Outliers are left out; everything else (enrollment + unflagged windows) is in.
    assert v2["version"] == 2 and v2["active"] and v2["n_vectors"] == ENROLL_WINDOWS + n_normal
    assert v2["note"] == "more material" and v2["source_filter"]["source"] == "rebuild"
    # Feedback: a faulty window labelled normal joins; a normal one labelled anomaly leaves.
    client.post(f"/v1/windows/{faulty[0]['id']}/feedback", json={"label": "normal"})
    kept = next(w for w in normal if not w["is_outlier"])
    client.post(f"/v1/windows/{kept['id']}/feedback", json={"label": "anomaly"})
    v3 = _rebuild(client)
    assert v3["version"] == 3 and v3["n_vectors"] == v2["n_vectors"] + 1 - 1
    assert v3["source_filter"]["labelled_normal"] == 1
    machine = client.get("/v1/machines/fan-01").json()
    assert machine["active_baseline_version"] == 3
    # New uploads are scored with v3.
    body = upload(client, "fan-01", wav(1.0, seed=52), started_at=at(30)).json()
    assert body["baseline_version"] == 3
    assert client.get(f"/v1/windows/{body['windows'][0]['id']}").json()["baseline_version"] == 3


def test_rebuild_options(client):
    enroll(client, "fan-01")
    upload(client, "fan-01", wav(1.0, seed=50), started_at=at(10))
    v2 = _rebuild(client, k=2, false_alarm_rate=0.1, activate=False)
    assert v2["k"] == 2 and v2["false_alarm_rate"] == 0.1 and v2["active"] is False
    assert client.get("/v1/machines/fan-01").json()["active_baseline_version"] == 1
    # Time range: only the first two enrollment seconds.
    v3 = _rebuild(client, **{"from": at(0), "to": at(2)})
    assert v3["n_vectors"] == 14 and v3["n_recordings"] == 2
    assert v3["source_filter"]["from"].startswith("2025-01-06T08:00:00")
    resp = client.post("/v1/admin/machines/fan-01/baselines", json={"from": at(100), "to": at(200)})
    assert resp.status_code == 409 and resp.json()["error"] == "insufficient_material"
    assert [b["version"] for b in client.get("/v1/machines/fan-01/baselines").json()] == [1, 2, 3]


def test_rollback_restores_the_previous_threshold(client):
    enroll(client, "fan-01")
    probe = wav(1.0, seed=60)
    before = upload(client, "fan-01", probe, started_at=at(10)).json()["windows"]
    v1 = client.get("/v1/machines/fan-01/baselines").json()[0]
    v2 = _rebuild(client, false_alarm_rate=0.3)
    assert v2["threshold"] < v1["threshold"]
    resp = client.post("/v1/admin/machines/fan-01/baselines/1/activate")
    assert resp.status_code == 200 and resp.json()["version"] == 1 and resp.json()["active"]
    listing = client.get("/v1/machines/fan-01/baselines").json()
    assert [(b["version"], b["active"]) for b in listing] == [(1, True), (2, False)]
    assert listing[0]["threshold"] == v1["threshold"]
    after = upload(client, "fan-01", probe, started_at=at(40)).json()["windows"]
    assert [w["ratio"] for w in after] == pytest.approx([w["ratio"] for w in before], rel=1e-5)
    # And forward again.
    assert client.post("/v1/admin/machines/fan-01/baselines/2/activate").status_code == 200
    assert client.get("/v1/machines/fan-01").json()["active_baseline_version"] == 2


def test_activation_reaches_other_processes(make_client):
    a = make_client()
    b = make_client()  # a second worker process on the same database
    enroll(a, "fan-01")
    probe = wav(1.0, seed=61)
    upload(b, "fan-01", probe, started_at=at(10))  # b caches v1
    _rebuild(a, false_alarm_rate=0.3)
    body = upload(b, "fan-01", probe, started_at=at(20)).json()
    assert body["baseline_version"] == 2


def test_baseline_versions_are_immutable(client):
    enroll(client, "fan-01")
    db = client.app.state.runtime.db
    with pytest.raises(RuntimeError, match="immutable"), db.session() as session:
        baseline = session.query(Baseline).one()
        baseline.threshold = 0.0
        session.flush()


def test_archived_machine_cannot_rebuild(client):
    enroll(client, "fan-01")
    client.delete("/v1/machines/fan-01")
    resp = client.post("/v1/admin/machines/fan-01/baselines", json={})
    assert resp.status_code == 409
    assert client.get("/v1/machines/fan-01/baselines").status_code == 200


def test_slow_rebuild_does_not_block_other_requests(client, monkeypatch):
    from service.services import baselines as baselines_service

    enroll(client, "fan-01")
    fit = baselines_service.fit_baseline

    def slow_fit(*args, **kwargs):
        time.sleep(1.5)
        return fit(*args, **kwargs)

    monkeypatch.setattr(baselines_service, "fit_baseline", slow_fit)
    app = client.app

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            rebuild = asyncio.create_task(http.post("/v1/admin/machines/fan-01/baselines", json={}))
            await asyncio.sleep(0.2)
            t0 = time.perf_counter()
            health = await http.get("/v1/machines/fan-01")
            probe = await http.post(
                "/v1/machines/fan-01/recordings",
                content=wav(1.0, seed=62),
                headers={"Content-Type": "audio/wav"},
            )
            elapsed = time.perf_counter() - t0
            assert not rebuild.done()
            return health, probe, elapsed, await rebuild

    health, probe, elapsed, rebuilt = asyncio.run(scenario())
    assert health.status_code == 200 and probe.status_code == 201
    assert elapsed < 1.2
    assert rebuilt.status_code == 201 and rebuilt.json()["version"] == 2

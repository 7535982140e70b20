"""Baselines within an operating condition (``baseline_condition``), end to end on SQLite.

A machine runs in two patterns (the same hum at two speeds, sent with ``pattern=a`` and
``pattern=b``). With ``baseline_condition="pattern"`` each pattern gets a baseline of its own:
pattern b's sound sent as pattern a is flagged, the same sound sent as pattern b is not. A
pooled baseline (the setting off) calls it normal either way.
"""

from __future__ import annotations

import numpy as np
import pytest

from detectors.baseline import KNNBaseline
from detectors.conditions import POOLED, ConditionalBaseline, load_baseline
from service.models import Baseline, Recording, Window
from tests.service.audio import wav
from tests.service.conftest import at, create_machine, upload

SPEED = {"a": 120.0, "b": 190.0}  # fundamental (Hz) of each pattern
RUNS_PER_PATTERN = 6


def enroll_patterns(client, machine_id: str, **fields) -> None:
    """Six one-second runs of each pattern, alternating (every clip its own run)."""
    create_machine(client, machine_id, enrollment_seconds=2 * RUNS_PER_PATTERN, **fields)
    for i in range(RUNS_PER_PATTERN):
        for j, pattern in enumerate("ab"):
            n = 2 * i + j
            resp = upload(
                client,
                machine_id,
                wav(1.0, seed=300 + n, f0=SPEED[pattern]),
                started_at=at(n),
                pattern=pattern,
                run=f"r{n}",
            )
            assert resp.status_code == 201, resp.text
    machine = client.get(f"/v1/machines/{machine_id}").json()
    assert machine["state"] == "monitoring" and machine["active_baseline_version"] == 1


def outliers(client, machine_id: str, seed: int, sent_as: str | None, start: float) -> float:
    """Share of windows flagged when pattern b's sound is sent labelled ``sent_as``."""
    params = {} if sent_as is None else {"pattern": sent_as}
    resp = upload(
        client,
        machine_id,
        wav(1.0, seed=seed, f0=SPEED["b"]),
        started_at=at(start),
        run=f"probe-{seed}",
        **params,
    )
    assert resp.status_code == 201, resp.text
    windows = resp.json()["windows"]
    assert all(w["score"] is not None for w in windows)
    return float(np.mean([w["is_outlier"] for w in windows]))


@pytest.fixture
def conditional(client):
    enroll_patterns(client, "valve-01", baseline_condition="pattern")
    return client


def test_a_pattern_is_judged_within_its_own_condition(conditional, client):
    flagged_as_a = [outliers(conditional, "valve-01", 500 + i, "a", 100 + i) for i in range(3)]
    flagged_as_b = [outliers(conditional, "valve-01", 510 + i, "b", 200 + i) for i in range(3)]
    assert min(flagged_as_a) > 0.8, flagged_as_a
    assert max(flagged_as_b) < 0.3, flagged_as_b
    # The same sound with the condition left out: no baseline of its own, and every pattern
    # has one, so it is normal if it is normal in any (here: in b).
    assert outliers(conditional, "valve-01", 520, None, 300) < 0.3
    # Without the setting the pooled baseline finds pattern b's material and calls it normal.
    enroll_patterns(client, "valve-02")
    assert client.get("/v1/machines/valve-02").json()["baseline_condition"] is None
    pooled_as_a = [outliers(client, "valve-02", 500 + i, "a", 100 + i) for i in range(3)]
    assert max(pooled_as_a) < 0.3, pooled_as_a


def test_window_ratios_and_the_stored_baseline(conditional):
    client = conditional
    (v1,) = client.get("/v1/machines/valve-01/baselines").json()
    assert v1["threshold"] == 1.0 and v1["n_vectors"] == 2 * RUNS_PER_PATTERN * 7
    method = v1["threshold_method"]
    assert method["rule"] == "within condition" and method["condition"] == "pattern"
    assert method["runs"] == 2 * RUNS_PER_PATTERN
    per_value = {c["value"]: c for c in method["conditions"]}
    assert set(per_value) == {"a", "b"} and not any(c["pooled"] for c in per_value.values())
    for c in per_value.values():
        assert c["runs"] == RUNS_PER_PATTERN and c["n_vectors"] == RUNS_PER_PATTERN * 7
        assert c["threshold"] > 0 and c["rule"]
    # Stored scores are ratios: score / threshold is the ratio, is_outlier is ratio > 1.
    resp = upload(client, "valve-01", wav(1.0, seed=530, f0=SPEED["b"]), started_at=at(400))
    for w in resp.json()["windows"]:
        assert w["ratio"] == pytest.approx(w["score"]) and w["is_outlier"] == (w["ratio"] > 1.0)

    # The artifact in the database round-trips to the model the process scores with.
    runtime = client.app.state.runtime
    with runtime.db.session() as session:
        row = session.query(Baseline).filter_by(machine_id="valve-01", version=1).one()
        machine_embedder = row.embedder
        artifact = row.artifact
        vectors = np.stack(
            [
                np.frombuffer(w.embedding, dtype="<f4")
                for w in session.query(Window).filter(Window.machine_id == "valve-01")
                if w.embedding is not None
            ]
        )
    loaded = load_baseline(artifact, expected_embedder=machine_embedder)
    cached = runtime.baselines.get("valve-01", 1)
    assert isinstance(loaded, ConditionalBaseline) and isinstance(cached, ConditionalBaseline)
    assert loaded.condition_name == "pattern" and set(loaded.models_) == {"a", "b"}
    for value in ("a", "b", None):
        np.testing.assert_array_equal(
            loaded.decision_function(vectors, value), cached.decision_function(vectors, value)
        )


def test_rebuild_rollback_and_switching_the_setting_off(conditional):
    client = conditional
    resp = client.post("/v1/admin/machines/valve-01/baselines", json={})
    assert resp.status_code == 201, resp.text
    assert resp.json()["threshold_method"]["rule"] == "within condition"
    # Rolling back loads version 1 from its artifact (the process cache is cleared first).
    client.app.state.runtime.baselines.clear()
    assert client.post("/v1/admin/machines/valve-01/baselines/1/activate").status_code == 200
    assert outliers(client, "valve-01", 540, "a", 500) > 0.8
    # Switched off, the next version is one pooled kNN baseline again.
    resp = client.patch("/v1/machines/valve-01", json={"baseline_condition": None})
    assert resp.status_code == 200 and resp.json()["baseline_condition"] is None
    resp = client.post("/v1/admin/machines/valve-01/baselines", json={})
    assert resp.status_code == 201, resp.text
    assert resp.json()["threshold_method"]["rule"] != "within condition"
    assert resp.json()["threshold"] != 1.0
    assert isinstance(client.app.state.runtime.baselines.get("valve-01", 3), KNNBaseline)
    assert outliers(client, "valve-01", 541, "a", 600) < 0.3


def test_neighbours_come_from_the_windows_own_condition(conditional):
    client = conditional
    windows = upload(
        client, "valve-01", wav(1.0, seed=550, f0=SPEED["b"]), started_at=at(700), pattern="a"
    ).json()["windows"]
    runtime = client.app.state.runtime
    with runtime.db.session() as session:
        pattern_of = {
            w.id: r.conditions.get("pattern")
            for w, r in session.query(Window, Recording).join(
                Recording, Window.recording_id == Recording.id
            )
        }
    for window in windows[:2]:
        resp = client.get(f"/v1/windows/{window['id']}/neighbours")
        assert resp.status_code == 200, resp.text
        body = resp.json()
        # Scored within pattern a: its neighbours are pattern a's windows, far away.
        assert {pattern_of[n["window_id"]] for n in body["neighbours"]} == {"a"}
        assert body["mean_distance"] / body["threshold"] == pytest.approx(window["score"], rel=1e-4)
        explained = client.get(f"/v1/windows/{window['id']}/explanation")
        assert explained.status_code == 200, explained.text


def test_the_setting_is_validated(client):
    create_machine(client, "valve-03", baseline_condition="domain")
    assert client.get("/v1/machines/valve-03").json()["baseline_condition"] == "domain"
    for bad in ("not a name", "9lives", "x" * 65, "run"):
        resp = client.patch("/v1/machines/valve-03", json={"baseline_condition": bad})
        assert resp.status_code == 422, (bad, resp.text)
        resp = client.post("/v1/machines", json={"id": "valve-04", "baseline_condition": bad})
        assert resp.status_code == 422, (bad, resp.text)
    resp = client.patch("/v1/machines/valve-03", json={"baseline_condition": "pattern"})
    assert resp.status_code == 200 and resp.json()["baseline_condition"] == "pattern"


def test_recordings_without_the_condition_use_the_pooled_baseline(client):
    enroll_patterns(client, "valve-05", baseline_condition="pattern")
    # Two more runs without the attribute, then a rebuild: they join the pooled baseline only.
    for n in range(2):
        resp = upload(client, "valve-05", wav(1.0, seed=560 + n), started_at=at(800 + n))
        assert resp.status_code == 201
    resp = client.post("/v1/admin/machines/valve-05/baselines", json={})
    assert resp.status_code == 201, resp.text
    conditions = resp.json()["threshold_method"]["conditions"]
    assert [(c["value"], c["pooled"]) for c in conditions] == [
        ("a", False),
        ("b", False),
        (None, True),
    ]
    pooled = next(c for c in conditions if c["pooled"])
    assert pooled["n_vectors"] == resp.json()["n_vectors"]
    model = client.app.state.runtime.baselines.get("valve-05", 2)
    body = upload(client, "valve-05", wav(1.0, seed=570, f0=SPEED["b"]), started_at=at(900))
    windows = body.json()["windows"]
    assert all(w["score"] is not None for w in windows)
    runtime = client.app.state.runtime
    with runtime.db.session() as session:
        vectors = np.stack(
            [np.frombuffer(session.get(Window, w["id"]).embedding, dtype="<f4") for w in windows]
        )
    own = model.models_[POOLED]
    np.testing.assert_allclose(
        [w["score"] for w in windows],
        own.decision_function(vectors) / own.threshold_,
        rtol=1e-5,
    )


def test_learning_admits_runs_within_their_condition(client):
    enroll_patterns(client, "valve-06", baseline_condition="pattern", learning_days=1.0)

    def send_run(name: str, start: float, pattern: str, f0: float, seed: int, clips: int = 2):
        for i in range(clips):
            resp = upload(
                client,
                "valve-06",
                wav(1.0, seed=seed + i, f0=f0),
                started_at=at(start + i),
                pattern=pattern,
                run=name,
            )
            assert resp.status_code == 201, resp.text

    # A normal run of pattern b, then the next run starts: admitted, v2 within conditions.
    send_run("L1", 100, "b", SPEED["b"], 600)
    send_run("L2", 110, "a", SPEED["a"], 610, clips=1)
    versions = {b["version"]: b for b in client.get("/v1/machines/valve-06/baselines").json()}
    assert sorted(versions) == [1, 2]
    assert versions[2]["source_filter"]["source"] == "learning"
    assert versions[2]["threshold_method"]["rule"] == "within condition"
    # (L2, one normal clip of pattern a, is admitted when L3 starts: v3.) Pattern b's sound
    # sent as pattern a is far above pattern a's threshold: never admitted.
    send_run("L3", 120, "a", SPEED["b"], 620)
    assert client.get("/v1/machines/valve-06").json()["active_baseline_version"] == 3
    send_run("L4", 130, "a", SPEED["a"], 630, clips=1)
    assert client.get("/v1/machines/valve-06").json()["active_baseline_version"] == 3


def test_a_false_alarm_joins_its_condition_when_the_event_closes(conditional):
    client = conditional
    params = {"open_ratio": 1.3, "resolve_ratio": 1.2}
    assert client.put("/v1/machines/valve-01/event-params", json=params).status_code == 200
    for i in range(3):
        assert outliers(client, "valve-01", 580 + i, "a", 1000 + i) > 0.8
    (event,) = client.get("/v1/events").json()["items"]
    resp = client.post(
        f"/v1/events/{event['id']}/close",
        json={"by": "a", "disposition": "false_alarm", "rebuild_baseline": True},
    )
    assert resp.status_code == 200, resp.text
    machine = client.get("/v1/machines/valve-01").json()
    assert machine["active_baseline_version"] == 2
    (v2,) = [b for b in client.get("/v1/machines/valve-01/baselines").json() if b["version"] == 2]
    assert v2["threshold_method"]["rule"] == "within condition"
    per_value = {c["value"]: c for c in v2["threshold_method"]["conditions"]}
    # The event's windows (pattern a) joined pattern a's baseline, not pattern b's.
    assert per_value["b"]["n_vectors"] == RUNS_PER_PATTERN * 7
    assert per_value["a"]["n_vectors"] > RUNS_PER_PATTERN * 7
    assert outliers(client, "valve-01", 590, "a", 1100) < 0.5

"""Whitened baselines in two spaces (``machines.block_space``): new machines get the default
preset's statistic block, machines registered before keep one space, stored artifacts of the
single-space format keep scoring, and review compares distances within the primary space."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import numpy as np
import pytest
from sqlalchemy import select, update

from detectors.baseline import _ARRAYS, KNNBaseline, arrays_checksum
from service.errors import InvalidInputError
from service.models import Baseline, Machine, Window
from service.services.machines import _block_space
from tests.service.audio import wav
from tests.service.conftest import T0, create_machine, upload
from tests.service.test_runs import send_run

RUNS = 8  # the service's enrollment and KNNBaseline's whiten_min_runs


def _db(client):
    return client.app.state.runtime.db


def enroll_runs(client, machine_id: str) -> None:
    """Eight runs of two 1 s clips, hours apart: a whitened baseline."""
    for r in range(RUNS):
        send_run(client, machine_id, T0 + timedelta(hours=2 * r), clips=2, seed=100 + 10 * r)
    assert client.get(f"/v1/machines/{machine_id}").json()["state"] == "monitoring"


@pytest.fixture
def runs_client(make_client):
    return make_client(min_enrollment_runs=RUNS, run_gap_seconds=60.0, min_enrollment_seconds=16.0)


def fault_windows(client, machine_id: str) -> list[dict]:
    at = (T0 + timedelta(days=2)).isoformat()
    resp = upload(client, machine_id, wav(1.0, seed=50, fault=True), started_at=at)
    assert resp.status_code == 201, resp.text
    return resp.json()["windows"]


def test_new_machine_scores_in_both_spaces_and_review_uses_the_primary_threshold(runs_client):
    client = runs_client
    machine = create_machine(client, "press-01")
    assert machine["block_space"] == machine["embedder"]["n_mels"] == 128
    enroll_runs(client, "press-01")
    (v1,) = client.get("/v1/machines/press-01/baselines").json()
    method = v1["threshold_method"]
    assert method["whitened"] is True and method["runs"] == RUNS
    spaces = {s["space"]: s for s in method["spaces"]}
    assert set(spaces) == {"per-dimension", "block"} and spaces["block"]["block"] == 128
    windows = fault_windows(client, "press-01")
    flagged = [w for w in windows if w["is_outlier"]]
    assert flagged, windows
    for w in flagged[:3]:
        body = client.get(f"/v1/windows/{w['id']}/neighbours").json()
        # The distance is the per-dimension space's, so is its threshold; the window's score
        # is the larger of both spaces' ratios, at least the per-dimension one.
        assert body["threshold"] == pytest.approx(spaces["per-dimension"]["threshold"])
        assert body["threshold"] != pytest.approx(v1["threshold"])
        assert body["score"] >= body["mean_distance"] / body["threshold"] * (1 - 1e-4)
        explained = client.get(f"/v1/windows/{w['id']}/explanation")
        assert explained.status_code == 200, explained.text
        assert explained.json()["bands"]


def test_machine_of_before_keeps_one_space_and_its_stored_artifact_keeps_scoring(runs_client):
    client = runs_client
    create_machine(client, "press-02")
    with _db(client).session() as session:  # registered before block_space: NULL
        session.execute(update(Machine).where(Machine.id == "press-02").values(block_space=None))
    assert client.get("/v1/machines/press-02").json()["block_space"] is None
    enroll_runs(client, "press-02")
    (v1,) = client.get("/v1/machines/press-02/baselines").json()
    assert v1["threshold_method"]["whitened"] is True and "spaces" not in v1["threshold_method"]

    # The stored artifact rewritten as the code before block_space wrote it (version 2).
    with _db(client).session() as session:
        row = session.execute(
            select(Baseline).where(Baseline.machine_id == "press-02")
        ).scalar_one()
        current = KNNBaseline.from_bytes(row.artifact)
        old = _as_version_2(row.artifact)
        session.execute(update(Baseline).where(Baseline.id == row.id).values(artifact=old))
    client.app.state.runtime.baselines.discard("press-02")
    assert KNNBaseline.from_bytes(old).get_params()["block_space"] is None
    windows = fault_windows(client, "press-02")
    with _db(client).session() as session:
        stored = session.execute(
            select(Window.embedding)
            .where(Window.id.in_([w["id"] for w in windows]))
            .order_by(Window.id)
        ).scalars()
        vectors = np.stack([np.frombuffer(e, dtype="<f4") for e in stored])
    expected = current.decision_function(vectors)
    assert [w["score"] for w in windows] == pytest.approx(expected.tolist(), rel=1e-6)
    assert [w["is_outlier"] for w in windows] == (expected > current.threshold_).tolist()


def test_embedder_with_other_bands_gets_its_own_block(runs_client):
    spec = {"name": "logmel", "n_mels": 64, "pooling": ["mean", "std"]}
    machine = create_machine(runs_client, "press-03", embedder=spec)
    assert machine["block_space"] == 64
    resp = runs_client.patch("/v1/machines/press-03", json={"embedder": {"name": "logmel"}})
    assert resp.status_code == 200, resp.text
    assert resp.json()["block_space"] == resp.json()["embedder"]["n_mels"]


def _as_version_2(blob: bytes) -> bytes:
    """A single-space artifact in the version-2 envelope (no block_space anywhere)."""
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
        meta = json.loads(npz["meta"].tobytes().decode())
        arrays = {name: npz[name] for name in _ARRAYS[2]}
    assert meta["format_version"] == 3 and "block_threshold" not in meta
    params = {k: v for k, v in meta["params"].items() if k != "block_space"}
    meta.update(format_version=2, params=params, checksum=arrays_checksum(arrays, _ARRAYS[2]))
    buf = io.BytesIO()
    np.savez(buf, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
    return buf.getvalue()


def test_patch_two_spaces_moves_a_machine_of_before_to_two_spaces_from_its_next_version(
    runs_client,
):
    client = runs_client
    create_machine(client, "press-04")
    with _db(client).session() as session:  # registered before block_space: NULL
        session.execute(update(Machine).where(Machine.id == "press-04").values(block_space=None))
    enroll_runs(client, "press-04")
    (v1,) = client.get("/v1/machines/press-04/baselines").json()
    assert "spaces" not in v1["threshold_method"]

    resp = client.patch("/v1/machines/press-04", json={"two_spaces": True})
    assert resp.status_code == 200, resp.text
    assert resp.json()["block_space"] == 128
    resp = client.post("/v1/admin/machines/press-04/baselines", json={})
    assert resp.status_code == 201, resp.text
    assert resp.json()["version"] == 2
    spaces = {s["space"] for s in resp.json()["threshold_method"]["spaces"]}
    assert spaces == {"per-dimension", "block"}
    # The version built before keeps its one space.
    v1_again = next(
        b for b in client.get("/v1/machines/press-04/baselines").json() if b["version"] == 1
    )
    assert "spaces" not in v1_again["threshold_method"]

    resp = client.patch("/v1/machines/press-04", json={"two_spaces": False})
    assert resp.status_code == 200, resp.text
    assert resp.json()["block_space"] is None


def test_two_spaces_is_refused_where_it_cannot_apply_and_changes_nothing(runs_client):
    client = runs_client
    machine = create_machine(client, "press-05", two_spaces=False)
    assert machine["block_space"] is None
    before = client.get("/v1/machines/press-05").json()
    resp = client.patch("/v1/machines/press-05", json={"two_spaces": None, "k": 7})
    assert resp.status_code == 422, resp.text
    assert "two_spaces" in resp.json()["detail"]
    assert client.get("/v1/machines/press-05").json() == before
    # Embedders without statistic blocks (aisfx, transformers) cannot have two spaces.
    with pytest.raises(InvalidInputError, match="log-mel"):
        _block_space({"name": "aisfx"}, True, explicit=True)
    assert _block_space({"name": "aisfx"}, True) is None

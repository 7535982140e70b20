"""Machines on the aisfx embedder: weights from HUMWATCH_MODELS_DIR (random ones here)."""

from __future__ import annotations

import pytest

from detectors.embedders.aisfx import CHECKPOINT_NAME
from tests.detectors.aisfx_weights import save_checkpoint
from tests.service.audio import wav
from tests.service.conftest import at, create_machine, upload

AISFX_MACHINE = {"embedder": {"name": "aisfx"}, "window_seconds": 1.0, "hop_seconds": 0.5}


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("models")
    save_checkpoint(directory / "aisfx" / CHECKPOINT_NAME)
    return directory


def test_machine_on_aisfx_scores_uploads(make_client, models_dir):
    client = make_client(models_dir=models_dir)
    body = create_machine(client, "fan-01", **AISFX_MACHINE)
    spec = body["embedder"]
    assert spec["name"] == "aisfx" and spec["pooling"] == "mean"
    assert len(spec["checkpoint_sha256"]) == 64 and "model_dir" not in spec
    resp = upload(client, "fan-01", wav(2.0, seed=1), started_at=at(0))  # 16 kHz, resampled
    assert resp.status_code == 201, resp.text
    assert len(resp.json()["windows"]) == 3


def test_without_weights_the_error_says_how_to_fetch_them(make_client, tmp_path):
    client = make_client(models_dir=tmp_path / "empty")
    resp = client.post("/v1/machines", json={"id": "fan-01", **AISFX_MACHINE})
    assert resp.status_code == 503, resp.text  # the request is fine; the server lacks weights
    assert resp.json()["error"] == "weights_unavailable"
    assert "humwatch models fetch aisfx" in resp.json()["detail"]
    assert client.get("/v1/machines").json() == []


def test_clients_cannot_choose_where_weights_are_read(make_client, models_dir):
    client = make_client(models_dir=models_dir)
    embedder = {"name": "aisfx", "model_dir": "/etc"}
    resp = client.post("/v1/machines", json={"id": "fan-01", **AISFX_MACHINE, "embedder": embedder})
    assert resp.status_code == 422, resp.text
    assert "leave model_dir out" in resp.json()["detail"]
    assert "/etc" not in resp.json()["detail"]

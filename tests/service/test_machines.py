"""Machine registry: create, list, get, update, archive."""

from __future__ import annotations

import pytest

from service.config import DEFAULT_BASELINE, DEFAULT_HOP_SECONDS, DEFAULT_WINDOW_SECONDS
from tests.service.audio import wav
from tests.service.conftest import create_machine, upload


def test_create_with_defaults(client):
    resp = client.post("/v1/machines", json={"id": "fan-01"})
    assert resp.status_code == 201
    body = resp.json()
    assert body["id"] == "fan-01" and body["name"] == "fan-01"
    assert body["state"] == "enrolling"
    assert body["window_seconds"] == DEFAULT_WINDOW_SECONDS
    assert body["hop_seconds"] == DEFAULT_HOP_SECONDS
    assert body["channel"] == "mix"
    assert body["embedder"]["name"] == "logmel" and body["embedder"]["sample_rate"] == 16000
    assert body["k"] == DEFAULT_BASELINE["k"]
    assert body["false_alarm_rate"] == DEFAULT_BASELINE["false_alarm_rate"]
    assert body["active_baseline_version"] is None and body["archived_at"] is None
    assert body["created_at"].endswith(("Z", "+00:00"))


def test_create_full_and_get(client):
    fields = {
        "id": "press_07",
        "name": "Press 7",
        "site": "plant-a",
        "area": "stamping",
        "machine_type": "press",
        "labels": {"line": "3", "vendor": "acme"},
        "window_seconds": 2.0,
        "hop_seconds": 1.0,
        "channel": 0,
        "embedder": {"name": "logmel", "n_mels": 64},
        "k": 3,
        "false_alarm_rate": 0.05,
    }
    assert client.post("/v1/machines", json=fields).status_code == 201
    body = client.get("/v1/machines/press_07").json()
    for key in ("name", "site", "area", "machine_type", "labels", "window_seconds", "k"):
        assert body[key] == fields[key]
    assert body["channel"] == 0
    assert body["embedder"]["n_mels"] == 64


def test_taken_id_is_409(client):
    create_machine(client, "fan-01")
    resp = client.post("/v1/machines", json={"id": "fan-01"})
    assert resp.status_code == 409
    assert resp.json()["error"] == "conflict"


@pytest.mark.parametrize(
    "bad_id", ["Fan-01", "fan 01", "-fan", "fan-", "", "a" * 65, "fan/01", "fän", "fan.01"]
)
def test_bad_slug_is_422(client, bad_id):
    resp = client.post("/v1/machines", json={"id": bad_id})
    assert resp.status_code == 422
    assert set(resp.json()) == {"error", "detail"}
    assert "id" in resp.json()["detail"]


@pytest.mark.parametrize(
    "fields, needle",
    [
        ({"embedder": {"name": "nope"}}, "unknown embedder"),
        ({"embedder": {"name": "logmel", "pooling": ["bogus"]}}, "pooling"),
        ({"window_seconds": 0.01, "hop_seconds": 0.01}, "n_fft"),
        ({"window_seconds": 1.0, "hop_seconds": 2.0}, "hop_seconds"),
        ({"window_seconds": -1}, "window_seconds"),
        ({"channel": "left"}, "channel"),
        ({"unknown_field": 1}, "unknown_field"),
    ],
)
def test_bad_detection_settings_are_422(client, fields, needle):
    resp = client.post("/v1/machines", json={"id": "fan-01", **fields})
    assert resp.status_code == 422, resp.text
    assert needle in resp.json()["detail"]
    assert client.get("/v1/machines").json() == []


def test_list_filters_by_site_and_state(client):
    create_machine(client, "a1", site="north")
    create_machine(client, "a2", site="north")
    create_machine(client, "b1", site="south")
    assert [m["id"] for m in client.get("/v1/machines").json()] == ["a1", "a2", "b1"]
    assert [m["id"] for m in client.get("/v1/machines?site=north").json()] == ["a1", "a2"]
    assert client.get("/v1/machines?state=monitoring").json() == []
    assert len(client.get("/v1/machines?state=enrolling").json()) == 3
    assert client.get("/v1/machines?state=bogus").status_code == 422


def test_get_unknown_is_404(client):
    resp = client.get("/v1/machines/nope")
    assert resp.status_code == 404
    assert resp.json() == {"error": "not_found", "detail": "machine 'nope' does not exist"}


def test_patch_descriptive_fields(client):
    create_machine(client, "fan-01")
    resp = client.patch("/v1/machines/fan-01", json={"name": "Fan 1", "labels": {"x": "y"}})
    assert resp.status_code == 200
    assert resp.json()["name"] == "Fan 1" and resp.json()["labels"] == {"x": "y"}
    assert client.patch("/v1/machines/fan-01", json={"name": None}).status_code == 422
    assert client.patch("/v1/machines/nope", json={"name": "x"}).status_code == 404


def test_patch_refuses_null_for_every_required_setting_and_changes_nothing(client):
    # Found by schemathesis: a null false_alarm_rate reached the database (NOT NULL) as a 500.
    create_machine(client, "fan-02")
    before = client.get("/v1/machines/fan-02").json()
    resp = client.patch("/v1/machines/fan-02", json={"site": "east", "false_alarm_rate": None})
    assert resp.status_code == 422 and "false_alarm_rate cannot be null" in resp.json()["detail"]
    assert client.get("/v1/machines/fan-02").json() == before


def test_detection_settings_change_only_before_audio(client):
    create_machine(client, "fan-01")
    resp = client.patch("/v1/machines/fan-01", json={"window_seconds": 0.5, "hop_seconds": 0.25})
    assert resp.status_code == 200 and resp.json()["window_seconds"] == 0.5
    assert upload(client, "fan-01", wav(1.0)).status_code == 201
    resp = client.patch("/v1/machines/fan-01", json={"window_seconds": 1.0})
    assert resp.status_code == 409
    assert "register a new machine" in resp.json()["detail"]


def test_state_changes(client):
    create_machine(client, "fan-01")
    resp = client.patch("/v1/machines/fan-01", json={"state": "monitoring"})
    assert resp.status_code == 409 and "no baseline" in resp.json()["detail"]
    assert client.patch("/v1/machines/fan-01", json={"state": "enrolling"}).status_code == 422


def test_delete_archives_and_keeps_history(client):
    create_machine(client, "fan-01")
    assert upload(client, "fan-01", wav(1.0)).status_code == 201
    resp = client.delete("/v1/machines/fan-01")
    assert resp.status_code == 200 and resp.json()["archived_at"] is not None
    assert client.get("/v1/machines").json() == []
    assert [m["id"] for m in client.get("/v1/machines?include_archived=true").json()] == ["fan-01"]
    assert client.get("/v1/machines/fan-01").status_code == 200
    assert len(client.get("/v1/machines/fan-01/windows").json()["items"]) > 0
    # Archived: read-only, and the id stays taken.
    assert upload(client, "fan-01", wav(1.0, seed=3)).status_code == 409
    assert client.patch("/v1/machines/fan-01", json={"name": "x"}).status_code == 409
    assert client.post("/v1/machines", json={"id": "fan-01"}).status_code == 409
    assert client.delete("/v1/machines/fan-01").status_code == 409

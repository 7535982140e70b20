"""Audio ingest: enrollment, scoring, idempotency, formats, atomicity."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from tests.service.audio import hum, to_bytes, wav
from tests.service.conftest import (
    ENROLL_CLIPS,
    ENROLL_WINDOWS,
    T0,
    at,
    create_machine,
    enroll,
    table_counts,
    upload,
)


def test_enrollment_then_monitoring(client):
    create_machine(client, "fan-01")
    for i in range(ENROLL_CLIPS):
        resp = upload(client, "fan-01", wav(1.0, seed=i), started_at=at(i))
        assert resp.status_code == 201, resp.text
        body = resp.json()
        # 1 s at 0.25 s windows every 0.125 s -> 7 windows, unscored while enrolling.
        assert len(body["windows"]) == 7
        if i < ENROLL_CLIPS - 1:
            assert body["machine_state"] == "enrolling"
            assert all(w["score"] is None and w["ratio"] is None for w in body["windows"])
    # The sixth second completes enrollment (min 6 s): v1 is built and active.
    assert body["machine_state"] == "monitoring" and body["baseline_version"] == 1
    machine = client.get("/v1/machines/fan-01").json()
    assert machine["state"] == "monitoring" and machine["active_baseline_version"] == 1
    assert machine["enrolled_seconds"] == pytest.approx(ENROLL_CLIPS)
    baselines = client.get("/v1/machines/fan-01/baselines").json()
    assert (
        len(baselines) == 1
        and baselines[0]["active"]
        and baselines[0]["n_vectors"] == ENROLL_WINDOWS
    )
    assert baselines[0]["n_recordings"] == ENROLL_CLIPS
    # Six back-to-back clips are one run: cut into five segments for calibration.
    method = baselines[0]["threshold_method"]
    assert method["rule"] == "run_effects_t" and method["groups"] == 5
    assert method["runs"] == 1 and method["groups_are"] == "segments of one run"

    normal = upload(client, "fan-01", wav(1.0, seed=50), started_at=at(10)).json()
    faulty = upload(client, "fan-01", wav(1.0, seed=51, fault=True), started_at=at(11)).json()
    for body in (normal, faulty):
        assert all(w["score"] is not None and w["ratio"] is not None for w in body["windows"])
        for w in body["windows"]:
            assert w["is_outlier"] == (w["ratio"] > 1.0)
    normal_ratio = np.mean([w["ratio"] for w in normal["windows"]])
    faulty_ratio = np.mean([w["ratio"] for w in faulty["windows"]])
    assert faulty_ratio > 2 * normal_ratio
    assert all(w["is_outlier"] for w in faulty["windows"])
    assert np.mean([w["is_outlier"] for w in normal["windows"]]) < 0.3


def test_windows_have_absolute_times(client):
    create_machine(client, "fan-01")
    body = upload(client, "fan-01", wav(1.0), started_at="2025-03-01T10:00:00+01:00").json()
    rec = body["recording"]
    assert datetime.fromisoformat(rec["started_at"]) == datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
    assert datetime.fromisoformat(rec["ended_at"]) == datetime(2025, 3, 1, 9, 0, 1, tzinfo=UTC)
    starts = [datetime.fromisoformat(w["start_at"]) for w in body["windows"]]
    assert starts[0] == datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
    assert starts[1] - starts[0] == timedelta(seconds=0.125)
    end = datetime.fromisoformat(body["windows"][-1]["end_at"])
    assert end == datetime(2025, 3, 1, 9, 0, 1, tzinfo=UTC)


def test_naive_started_at_is_utc(client):
    create_machine(client, "fan-01")
    body = upload(client, "fan-01", wav(1.0), started_at="2025-03-01T10:00:00").json()
    assert datetime.fromisoformat(body["recording"]["started_at"]).utcoffset() == timedelta(0)
    assert body["recording"]["started_at"].startswith("2025-03-01T10:00:00")


def test_started_at_defaults_to_receive_time_minus_duration(client):
    create_machine(client, "fan-01")
    before = datetime.now(UTC)
    body = upload(client, "fan-01", wav(2.0)).json()
    after = datetime.now(UTC)
    started = datetime.fromisoformat(body["recording"]["started_at"])
    assert before - timedelta(seconds=2.5) <= started <= after - timedelta(seconds=1.5)


def test_same_audio_same_start_is_stored_once(client):
    create_machine(client, "fan-01")
    first = upload(client, "fan-01", wav(1.0), started_at=at(0))
    assert first.status_code == 201 and first.json()["created"] is True
    counts = table_counts(client)
    again = upload(client, "fan-01", wav(1.0), started_at=at(0))
    assert again.status_code == 200 and again.json()["created"] is False
    assert again.json()["recording"]["id"] == first.json()["recording"]["id"]
    assert [w["id"] for w in again.json()["windows"]] == [w["id"] for w in first.json()["windows"]]
    assert table_counts(client) == counts
    # A different start time is a different recording.
    assert upload(client, "fan-01", wav(1.0), started_at=at(5)).status_code == 201
    assert table_counts(client)["recordings"] == counts["recordings"] + 1


def test_operating_conditions_are_stored(client):
    create_machine(client, "fan-01")
    body = upload(client, "fan-01", wav(1.0), rpm="1480", load="0.75", mode="eco").json()
    assert body["recording"]["conditions"] == {"rpm": 1480, "load": 0.75, "mode": "eco"}


@pytest.mark.parametrize(
    "fmt, content_type", [("FLAC", "audio/flac"), ("OGG", "audio/ogg"), ("WAV", "audio/x-wav")]
)
def test_other_containers(client, fmt, content_type):
    create_machine(client, "fan-01")
    data = to_bytes(hum(1.0), 16000, fmt)
    resp = upload(client, "fan-01", data, content_type=content_type)
    assert resp.status_code == 201, resp.text
    assert resp.json()["recording"]["format"] == ("WAV" if fmt == "WAV" else fmt)


@pytest.mark.parametrize("rate", [44100, 48000, 8000])
def test_other_sample_rates_are_resampled(client, rate):
    create_machine(client, "fan-01")
    resp = upload(client, "fan-01", wav(1.0, rate))
    assert resp.status_code == 201, resp.text
    assert resp.json()["recording"]["sample_rate"] == rate
    assert len(resp.json()["windows"]) == 7


def test_multichannel_is_mixed_or_picked(client):
    create_machine(client, "mix-01")
    create_machine(client, "ch3-01", channel=3)
    data = to_bytes(hum(1.0, channels=8))
    for machine in ("mix-01", "ch3-01"):
        resp = upload(client, machine, data)
        assert resp.status_code == 201, resp.text
        assert resp.json()["recording"]["channels"] == 8


def test_scoring_survives_a_restart(make_client):
    first = make_client()
    enroll(first, "fan-01")
    before = upload(first, "fan-01", wav(1.0, seed=9), started_at=at(20)).json()
    # A new app on the same database (fresh baseline cache) scores identically.
    second = make_client()
    assert second.app.state.runtime.baselines.get("fan-01", 1) is None
    after = upload(second, "fan-01", wav(1.0, seed=9), started_at=at(40)).json()
    assert [w["score"] for w in after["windows"]] == pytest.approx(
        [w["score"] for w in before["windows"]], rel=1e-5
    )


def test_failure_after_inserts_rolls_back_everything(client, monkeypatch):
    from service.repositories import windows as windows_repo

    create_machine(client, "fan-01")
    counts = table_counts(client)

    def boom(*_args, **_kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(windows_repo, "insert_many", boom)
    resp = upload(client, "fan-01", wav(1.0))
    assert resp.status_code == 500 and resp.json()["error"] == "internal_error"
    assert table_counts(client) == counts


def test_enrollment_completion_failure_rolls_back(client, monkeypatch):
    from service.services import baselines as baselines_service

    create_machine(client, "fan-01")
    for i in range(ENROLL_CLIPS - 1):
        assert upload(client, "fan-01", wav(1.0, seed=i), started_at=at(i)).status_code == 201
    counts = table_counts(client)

    def boom(*_args, **_kwargs):
        raise RuntimeError("fit failed")

    monkeypatch.setattr(baselines_service, "fit_baseline", boom)
    resp = upload(client, "fan-01", wav(1.0, seed=9), started_at=at(9))
    assert resp.status_code == 500 and resp.json()["error"] == "internal_error"
    assert table_counts(client) == counts
    machine = client.get("/v1/machines/fan-01").json()
    assert machine["state"] == "enrolling" and machine["enrolled_seconds"] == pytest.approx(
        ENROLL_CLIPS - 1
    )


def test_one_long_enrollment_recording_is_split_for_calibration(client):
    create_machine(client, "fan-01")
    body = upload(client, "fan-01", wav(6.0, seed=3), started_at=T0.isoformat()).json()
    assert body["machine_state"] == "monitoring"
    baseline = client.get("/v1/machines/fan-01/baselines").json()[0]
    assert baseline["n_recordings"] == 1
    assert baseline["threshold_method"]["groups_are"] == "segments of one run"
    # Consecutive segments of the recording are the calibration groups, so the threshold
    # is above plain leave-one-out (where each window's overlapping twin is its neighbour).
    same = upload(client, "fan-01", wav(6.0, seed=3), started_at=at(10)).json()
    assert not any(w["is_outlier"] for w in same["windows"])
    faulty = upload(client, "fan-01", wav(1.0, seed=4, fault=True), started_at=at(20)).json()
    assert all(w["is_outlier"] for w in faulty["windows"])


def test_paused_machine_refuses_audio(client):
    enroll(client, "fan-01")
    assert client.patch("/v1/machines/fan-01", json={"state": "paused"}).status_code == 200
    counts = table_counts(client)
    resp = upload(client, "fan-01", wav(1.0, seed=7))
    assert resp.status_code == 409 and "paused" in resp.json()["detail"]
    assert table_counts(client) == counts
    assert client.patch("/v1/machines/fan-01", json={"state": "monitoring"}).status_code == 200
    assert upload(client, "fan-01", wav(1.0, seed=7)).status_code == 201


def test_silent_enrollment_keeps_enrolling(client):
    create_machine(client, "fan-01")
    silence = to_bytes(np.zeros(16000, dtype=np.float32))
    for i in range(ENROLL_CLIPS + 1):
        resp = upload(client, "fan-01", silence, started_at=at(i))
        assert resp.status_code == 201, resp.text
        assert resp.json()["machine_state"] == "enrolling"
    assert client.get("/v1/machines/fan-01/baselines").json() == []
    # Once real sound arrives, enrollment completes.
    resp = upload(client, "fan-01", wav(1.0, seed=1), started_at=at(20))
    assert resp.json()["machine_state"] == "monitoring", resp.text

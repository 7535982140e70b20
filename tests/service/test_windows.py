"""Windows: keyset pagination, filters, detail, audio, feedback, retention."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import numpy as np
import soundfile as sf

from tests.service.audio import wav
from tests.service.conftest import ENROLL_CLIPS, ENROLL_WINDOWS, at, enroll, upload


def _all_pages(client, url, limit):
    ids, cursor, pages = [], None, 0
    while True:
        params = {"limit": limit} | ({"cursor": cursor} if cursor else {})
        body = client.get(url, params=params).json()
        ids += [w["id"] for w in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            return ids, pages


def test_pagination_newest_first_without_gaps(client):
    enroll(client, "fan-01")
    upload(client, "fan-01", wav(1.0, seed=7), started_at=at(10))
    upload(client, "fan-01", wav(1.0, seed=8, fault=True), started_at=at(20))
    full = client.get("/v1/machines/fan-01/windows", params={"limit": 500}).json()
    assert full["next_cursor"] is None and len(full["items"]) == ENROLL_WINDOWS + 14
    starts = [datetime.fromisoformat(w["start_at"]) for w in full["items"]]
    assert starts == sorted(starts, reverse=True)
    ids, pages = _all_pages(client, "/v1/machines/fan-01/windows", limit=4)
    assert ids == [w["id"] for w in full["items"]] and pages == -(-(ENROLL_WINDOWS + 14) // 4)
    # A window arriving during paging (newer) does not shift older pages.
    first = client.get("/v1/machines/fan-01/windows", params={"limit": 5}).json()
    upload(client, "fan-01", wav(1.0, seed=9), started_at=at(30))
    second = client.get(
        "/v1/machines/fan-01/windows", params={"limit": 5, "cursor": first["next_cursor"]}
    ).json()
    assert [w["id"] for w in second["items"]] == [w["id"] for w in full["items"][5:10]]


def test_equal_start_times_page_by_id(client):
    # Two recordings with the same start (different audio) give windows with equal start_at.
    enroll(client, "fan-01")
    upload(client, "fan-01", wav(1.0, seed=70), started_at=at(10))
    upload(client, "fan-01", wav(1.0, seed=71), started_at=at(10))
    full = client.get("/v1/machines/fan-01/windows", params={"limit": 500}).json()["items"]
    ids, _ = _all_pages(client, "/v1/machines/fan-01/windows", limit=3)
    assert ids == [w["id"] for w in full] and len(set(ids)) == len(ids) == ENROLL_WINDOWS + 14


def test_time_range_and_outlier_filters(client):
    enroll(client, "fan-01")
    normal = upload(client, "fan-01", wav(1.0, seed=7), started_at=at(10)).json()
    faulty = upload(client, "fan-01", wav(1.0, seed=8, fault=True), started_at=at(20)).json()
    in_range = client.get(
        "/v1/machines/fan-01/windows", params={"from": at(10), "to": at(11)}
    ).json()["items"]
    assert len(in_range) == 7
    assert all(at(10) <= w["start_at"].replace("Z", "+00:00") < at(11) for w in in_range)
    outliers = client.get("/v1/machines/fan-01/windows", params={"outliers_only": True}).json()
    scored = normal["windows"] + faulty["windows"]
    assert {w["id"] for w in outliers["items"]} == {w["id"] for w in scored if w["is_outlier"]}
    assert len(outliers["items"]) >= 7
    assert (
        client.get("/v1/machines/fan-01/windows", params={"from": at(11), "to": at(10)}).status_code
        == 422
    )


def test_window_detail_and_audio(client):
    enroll(client, "fan-01")
    body = upload(client, "fan-01", wav(1.0, seed=7, sample_rate=48000), started_at=at(10))
    window = body.json()["windows"][2]
    detail = client.get(f"/v1/windows/{window['id']}").json()
    assert detail["machine_id"] == "fan-01" and detail["baseline_version"] == 1
    assert detail["score"] == window["score"] and detail["has_audio"] is True
    assert detail["label"] is None
    resp = client.get(f"/v1/windows/{window['id']}/audio")
    assert resp.status_code == 200 and resp.headers["content-type"] == "audio/wav"
    samples, rate = sf.read(io.BytesIO(resp.content))
    assert rate == 16000 and samples.shape == (4000,)  # 0.25 s at the model's rate
    assert np.abs(samples).max() > 0.05


def test_feedback(client):
    enroll(client, "fan-01")
    window = upload(client, "fan-01", wav(1.0, seed=7), started_at=at(10)).json()["windows"][0]
    resp = client.post(
        f"/v1/windows/{window['id']}/feedback", json={"label": "anomaly", "note": "bearing?"}
    )
    assert resp.status_code == 200
    body = resp.json()
    assert body["label"] == "anomaly" and body["label_note"] == "bearing?"
    assert body["labelled_at"] is not None
    resp = client.post(f"/v1/windows/{window['id']}/feedback", json={"label": "normal"})
    assert resp.json()["label"] == "normal" and resp.json()["label_note"] is None
    assert client.post(f"/v1/windows/{window['id']}/feedback", json={}).status_code == 422


def test_prune_keeps_outliers_labelled_and_baseline_members(make_client):
    client = make_client(audio_retention_days=1, embedding_retention_days=2)
    enroll(client, "fan-01")  # windows in January 2025: long past the retention period
    labelled = upload(client, "fan-01", wav(1.0, seed=7), started_at=at(10)).json()["windows"]
    plain = upload(client, "fan-01", wav(1.0, seed=50), started_at=at(15)).json()["windows"]
    faulty = upload(client, "fan-01", wav(1.0, seed=8, fault=True), started_at=at(20)).json()
    faulty = faulty["windows"]
    recent_at = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    recent = upload(client, "fan-01", wav(1.0, seed=9), started_at=recent_at).json()["windows"]
    client.post(f"/v1/windows/{labelled[0]['id']}/feedback", json={"label": "normal"})
    assert all(w["is_outlier"] for w in faulty)
    plain_pruned = not any(w["is_outlier"] for w in plain)
    unprotected = [w for w in labelled[1:] + plain if not w["is_outlier"]]

    resp = client.post("/v1/admin/prune")
    assert resp.status_code == 200
    # Audio goes for the enrollment recordings and the old recording without outliers or
    # labels; embeddings only for old unflagged, unlabelled windows outside any baseline.
    assert resp.json() == {
        "recording_audio_deleted": ENROLL_CLIPS + plain_pruned,
        "embeddings_cleared": len(unprotected),
    }
    gone = client.get("/v1/machines/fan-01/windows", params={"to": at(6)}).json()["items"][0]
    assert gone["has_audio"] is False
    assert client.get(f"/v1/windows/{gone['id']}/audio").status_code == 410
    for kept in (labelled[0], labelled[3], faulty[0], recent[0]):
        assert client.get(f"/v1/windows/{kept['id']}/audio").status_code == 200
    # Idempotent.
    assert client.post("/v1/admin/prune").json() == {
        "recording_audio_deleted": 0,
        "embeddings_cleared": 0,
    }
    # Baseline members (enrollment) keep their embeddings: a rebuild still has material.
    resp = client.post("/v1/admin/machines/fan-01/baselines", json={})
    assert resp.status_code == 201, resp.text
    # enrollment + labelled normal + recent unflagged ones
    assert resp.json()["n_vectors"] == ENROLL_WINDOWS + 1 + sum(not w["is_outlier"] for w in recent)


def test_window_audio_is_cut_from_the_recording(client):
    from tests.service.audio import to_bytes

    enroll(client, "fan-01")
    # A recording whose samples encode time: a ramp, so every cut shows where it came from.
    ramp = np.linspace(-0.9, 0.9, 16000, dtype=np.float32)
    windows = upload(client, "fan-01", to_bytes(ramp), started_at=at(30)).json()["windows"]
    for i in (0, 3, 6):
        samples, _ = sf.read(
            io.BytesIO(client.get(f"/v1/windows/{windows[i]['id']}/audio").content)
        )
        expected = ramp[i * 2000 : i * 2000 + 4000]
        assert samples.shape == expected.shape
        assert np.abs(samples - expected).max() < 1e-3


def test_periodic_retention_pass(make_client):
    import time

    client = make_client(prune_interval_seconds=0.2, audio_retention_days=0)
    client.post("/v1/machines", json={"id": "fan-01", "window_seconds": 0.25, "hop_seconds": 0.125})
    window = upload(client, "fan-01", wav(1.0), started_at=at(0)).json()["windows"][0]
    deadline = time.monotonic() + 10
    while client.get(f"/v1/windows/{window['id']}").json()["has_audio"]:
        assert time.monotonic() < deadline, "the periodic pass did not prune"
        time.sleep(0.1)
    assert client.get(f"/v1/windows/{window['id']}/audio").status_code == 410

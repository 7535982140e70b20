"""Review endpoints: spectrogram, neighbours, explanation, ratio series, plant overview."""

from __future__ import annotations

import io
from datetime import timedelta

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import delete, select, update

from detectors.baseline import KNNBaseline
from service.models import Baseline, BaselineWindow, Machine, RecordingAudio, Window
from tests.service.audio import wav
from tests.service.conftest import (
    API_KEY,
    ENROLL_WINDOWS,
    T0,
    at,
    create_machine,
    enroll,
    upload,
)


@pytest.fixture
def flagged(client):
    """An enrolled machine and one upload with a 3.1 kHz whine and clicks (all flagged)."""
    enroll(client, "press-01", site="north", area="hall 1", machine_type="press")
    body = upload(client, "press-01", wav(1.0, seed=50, fault=True), started_at=at(60)).json()
    ids = [w["id"] for w in body["windows"] if w["is_outlier"]]
    assert ids
    return ids


def _db(client):
    return client.app.state.runtime.db


def test_spectrogram_is_a_png_of_the_requested_size(client, flagged):
    resp = client.get(f"/v1/windows/{flagged[0]}/spectrogram.png?width=300&height=120")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(resp.content))
    assert image.size == (300, 120) and image.mode == "RGB"
    top, bottom = float(resp.headers["x-db-max"]), float(resp.headers["x-db-min"])
    assert top > bottom
    assert float(resp.headers["x-high-hz"]) == 8000.0
    # The same range for another window: the colours are comparable.
    other = client.get(
        f"/v1/windows/{flagged[1]}/spectrogram.png",
        params={"width": 300, "height": 120, "db_min": bottom, "db_max": top},
    )
    assert other.status_code == 200
    assert float(other.headers["x-db-min"]) == pytest.approx(bottom, abs=0.01)
    # The whine (3.1 kHz) is a bright row: the brightest row of the picture lies near it.
    pixels = np.asarray(image).astype(float).sum(axis=2).mean(axis=1)  # (height,) top first
    brightest = int(np.argmax(pixels[: int(0.8 * len(pixels))]))
    mel = lambda f: 2595 * np.log10(1 + f / 700)  # noqa: E731
    expected = (1 - mel(3100) / mel(8000)) * 120
    assert abs(brightest - expected) <= 6


@pytest.mark.parametrize(
    "query, message",
    [
        ("width=5000", "less than or equal to 2048"),
        ("height=10", "greater than or equal to 32"),
        ("db_min=0&db_max=-10", "must be above db_min"),
        ("db_max=1000", "less than or equal to 100"),
    ],
)
def test_spectrogram_bad_sizes_are_422(client, flagged, query, message):
    resp = client.get(f"/v1/windows/{flagged[0]}/spectrogram.png?{query}")
    assert resp.status_code == 422
    assert message in resp.json()["detail"]


def test_spectrogram_of_pruned_audio_is_410_and_unknown_window_404(client, flagged):
    with _db(client).session() as session:
        rec = session.get(Window, flagged[0]).recording_id
        session.execute(delete(RecordingAudio).where(RecordingAudio.recording_id == rec))
    assert client.get(f"/v1/windows/{flagged[0]}/spectrogram.png").status_code == 410
    assert client.get("/v1/windows/999999/spectrogram.png").status_code == 404


def test_neighbours_are_the_baseline_windows_the_score_came_from(client, flagged):
    window_id = flagged[0]
    resp = client.get(f"/v1/windows/{window_id}/neighbours")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["k"] == 5 and len(body["neighbours"]) == 5
    assert body["mean_distance"] == pytest.approx(body["score"], rel=1e-4)
    distances = [n["distance"] for n in body["neighbours"]]
    assert distances == sorted(distances)
    # Brute force over the baseline members' stored embeddings gives the same windows.
    with _db(client).session() as session:
        baseline = session.execute(select(Baseline)).scalar_one()
        model = KNNBaseline.from_bytes(
            session.execute(
                select(Baseline.artifact).where(Baseline.id == baseline.id)
            ).scalar_one()
        )
        members = session.execute(
            select(Window.id, Window.embedding)
            .join(BaselineWindow, BaselineWindow.window_id == Window.id)
            .where(BaselineWindow.baseline_id == baseline.id)
        ).all()
        query = session.get(Window, window_id).embedding
    assert len(members) == ENROLL_WINDOWS
    vectors = model.transform(np.stack([np.frombuffer(m.embedding, "<f4") for m in members]))
    q = model.transform(np.frombuffer(query, "<f4")[None])[0]
    dist = np.linalg.norm(vectors - q, axis=1)
    nearest = [members[i].id for i in np.argsort(dist)[:5]]
    assert [n["window_id"] for n in body["neighbours"]] == nearest
    assert distances == pytest.approx(np.sort(dist)[:5].tolist(), rel=1e-4)
    more = client.get(f"/v1/windows/{window_id}/neighbours?k=12").json()
    assert len(more["neighbours"]) == 12


def test_neighbours_use_the_version_that_scored_the_window(client, flagged, make_client):
    admin = make_client()
    new = admin.post("/v1/admin/machines/press-01/baselines", json={"k": 3})
    assert new.status_code == 201, new.text
    body = client.get(f"/v1/windows/{flagged[0]}/neighbours").json()
    assert body["baseline_version"] == 1 and body["k"] == 5
    v2 = client.get(f"/v1/windows/{flagged[0]}/neighbours?version=2").json()
    assert v2["baseline_version"] == 2 and v2["k"] == 3
    assert client.get(f"/v1/windows/{flagged[0]}/neighbours?version=9").status_code == 404


def test_neighbours_need_a_baseline(client):
    create_machine(client, "new-01")
    body = upload(client, "new-01", wav(1.0, seed=1), started_at=at(0)).json()
    resp = client.get(f"/v1/windows/{body['windows'][0]['id']}/neighbours")
    assert resp.status_code == 409
    assert "no baseline yet" in resp.json()["detail"]


def test_neighbours_refuse_members_that_do_not_line_up(client, flagged):
    with _db(client).session() as session:
        baseline_id = session.execute(select(Baseline.id)).scalar_one()
        first = (
            session.execute(
                select(BaselineWindow.window_id).where(BaselineWindow.baseline_id == baseline_id)
            )
            .scalars()
            .first()
        )
        session.execute(delete(BaselineWindow).where(BaselineWindow.window_id == first))
    resp = client.get(f"/v1/windows/{flagged[0]}/neighbours")
    assert resp.status_code == 409
    assert "member windows" in resp.json()["detail"]


def test_explanation_puts_the_whine_on_top(client, flagged):
    resp = client.get(f"/v1/windows/{flagged[0]}/explanation?bands=32")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert len(body["bands"]) == 32 and body["stats"] == ["mean", "std", "max", "dstd"]
    assert body["bands"][0]["low_hz"] == 0 and body["bands"][-1]["high_hz"] == 8000
    top = body["top"][0]
    assert top["low_hz"] <= 3100 <= top["high_hz"], body["top"]
    assert "kHz" in top["text"] and "louder" in top["text"]
    assert body["summary"].startswith("Most unusual")
    full = client.get(f"/v1/windows/{flagged[0]}/explanation?bands=512").json()
    assert len(full["bands"]) == 128  # capped at the embedder's mel bands


def test_explanation_needs_a_logmel_embedder(client, flagged):
    with _db(client).session() as session:
        session.execute(
            update(Machine).where(Machine.id == "press-01").values(embedder={"name": "hf"})
        )
    resp = client.get(f"/v1/windows/{flagged[0]}/explanation")
    assert resp.status_code == 409
    assert "log-mel embedder" in resp.json()["detail"]


def test_explanation_recomputes_a_pruned_embedding(client, flagged):
    before = client.get(f"/v1/windows/{flagged[0]}/explanation").json()
    with _db(client).session() as session:
        session.execute(update(Window).where(Window.id == flagged[0]).values(embedding=None))
    after = client.get(f"/v1/windows/{flagged[0]}/explanation").json()
    assert after["top"][0]["low_hz"] == before["top"][0]["low_hz"]
    assert after["top"][0]["deviation"] == pytest.approx(before["top"][0]["deviation"], rel=0.05)


def test_ratio_series_buckets_the_windows(client, flagged):
    params = {"from": at(0), "to": at(70), "buckets": 7}
    body = client.get("/v1/machines/press-01/ratio-series", params=params).json()
    assert body["bucket_seconds"] == 10
    assert sum(p["n"] for p in body["points"]) == ENROLL_WINDOWS + 7
    last = body["points"][-1]
    assert last["start"].startswith((T0 + timedelta(seconds=60)).isoformat()[:19])
    assert last["outliers"] == len(flagged) and last["max_ratio"] > 1
    assert body["points"][0]["mean_ratio"] is None  # enrollment windows are not scored
    bad = client.get("/v1/machines/press-01/ratio-series", params={**params, "to": at(0)})
    assert bad.status_code == 422
    many = client.get("/v1/machines/press-01/ratio-series", params={**params, "buckets": 5000})
    assert many.status_code == 422
    assert client.get("/v1/machines/nope/ratio-series").status_code == 404


def test_plant_lists_every_machine_with_its_newest_window(client, flagged):
    create_machine(client, "idle-01", site="south")
    body = client.get("/v1/plant?hours=24&buckets=6").json()
    machines = {m["id"]: m for m in body["machines"]}
    assert set(machines) == {"press-01", "idle-01"}
    press = machines["press-01"]
    assert press["last_window_at"].startswith((T0 + timedelta(seconds=61)).isoformat()[:19])
    assert press["last_is_outlier"] is True and press["embedder"] == "logmel"
    assert len(press["trend"]) == 6
    assert machines["idle-01"]["last_window_at"] is None


def test_review_reads_need_the_key_when_keys_are_configured(make_client, flagged):
    keyed = make_client(api_keys=[API_KEY])
    paths = [
        f"/v1/windows/{flagged[0]}/spectrogram.png",
        f"/v1/windows/{flagged[0]}/neighbours",
        f"/v1/windows/{flagged[0]}/explanation",
        "/v1/machines/press-01/ratio-series",
        "/v1/plant",
        "/v1/search/capabilities",
    ]
    for path in paths:
        assert keyed.get(path).status_code == 401, path
        assert (
            keyed.get(path, headers={"Authorization": "Bearer wrong-key-000000"}).status_code == 403
        )
        ok = keyed.get(path, headers={"Authorization": f"Bearer {API_KEY}"})
        assert ok.status_code == 200, (path, ok.text)


def test_openapi_documents_the_review_endpoints(client):
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    png = paths["/v1/windows/{window_id}/spectrogram.png"]["get"]
    assert "image/png" in png["responses"]["200"]["content"]
    for path in (
        "/v1/windows/{window_id}/neighbours",
        "/v1/windows/{window_id}/explanation",
        "/v1/machines/{machine_id}/ratio-series",
        "/v1/plant",
    ):
        assert "200" in paths[path]["get"]["responses"], path
    search = paths["/v1/search"]["post"]["requestBody"]["content"]
    assert {"application/json", "audio/wav", "audio/flac", "audio/ogg"} <= set(search)
    assert "/v1/search/capabilities" in paths

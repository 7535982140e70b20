"""POST /v1/search: by window, by uploaded clip, filters, pagination, text, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import select

from service.models import Window
from tests.service.audio import hum, to_bytes, wav
from tests.service.conftest import at, enroll, table_counts, upload


@pytest.fixture
def fleet(client):
    """Two presses (sites north and south) enrolled, one whining upload each later on."""
    enroll(client, "press-01", site="north", area="hall 1", machine_type="press")
    enroll(client, "press-02", site="south", area="hall 9", machine_type="press")
    a = upload(client, "press-01", wav(1.0, seed=60, fault=True), started_at=at(3600)).json()
    b = upload(client, "press-02", wav(1.0, seed=61, fault=True), started_at=at(7200)).json()
    return {
        "press-01": [w["id"] for w in a["windows"]],
        "press-02": [w["id"] for w in b["windows"]],
    }


def _search(client, **body):
    resp = client.post("/v1/search", json=body)
    assert resp.status_code == 200, resp.text
    return resp.json()


def _brute_force(client, query_id: int, exclude_recording: bool = True):
    """Expected order: z-score every stored embedding with their own mean and scale."""
    with client.app.state.runtime.db.session() as session:
        rows = session.execute(
            select(Window.id, Window.recording_id, Window.embedding).order_by(Window.id)
        ).all()
    vectors = np.stack([np.frombuffer(r.embedding, "<f4") for r in rows])
    mean, std = vectors.mean(axis=0), vectors.std(axis=0)
    scale = np.maximum(std, 1e-3 * std.mean())
    z = (vectors - mean) / scale
    ids = np.array([r.id for r in rows])
    q = z[ids == query_id][0]
    rec = rows[int(np.flatnonzero(ids == query_id)[0])].recording_id
    keep = (ids != query_id) & (
        (np.array([r.recording_id for r in rows]) != rec) | (not exclude_recording)
    )
    dist = np.linalg.norm(z[keep] - q, axis=1)
    order = np.argsort(dist, kind="stable")
    return ids[keep][order].tolist(), dist[order]


def test_search_by_window_is_exact_nearest_first(client, fleet):
    query = fleet["press-01"][2]
    body = _search(client, window_id=query, limit=10)
    expected, dist = _brute_force(client, query)
    assert [h["window_id"] for h in body["items"]] == expected[:10]
    assert [h["distance"] for h in body["items"]] == pytest.approx(dist[:10].tolist(), rel=1e-3)
    assert query not in [h["window_id"] for h in body["items"]]
    assert body["machines"] == ["press-01", "press-02"]
    assert body["metric"] == "euclidean" and body["embedder"]["name"] == "logmel"
    assert body["searched_windows"] == len(expected)
    # The other press's whining windows are nearer than any normal window of its own.
    assert {h["machine_id"] for h in body["items"][:5]} == {"press-02"}


def test_pages_follow_each_other(client, fleet):
    query = fleet["press-01"][0]
    whole = _search(client, window_id=query, limit=30)["items"]
    first = _search(client, window_id=query, limit=15)
    second = _search(client, window_id=query, limit=15, offset=first["next_offset"])
    assert [h["window_id"] for h in first["items"] + second["items"]] == [
        h["window_id"] for h in whole
    ]
    assert [h["rank"] for h in second["items"]][0] == 16
    resp = client.post("/v1/search", json={"window_id": query, "limit": 100, "offset": 901})
    assert resp.status_code == 422


def test_filters(client, fleet):
    query = fleet["press-01"][0]
    own = _search(client, window_id=query, machine=["press-01"], exclude_same_recording=False)
    assert {h["machine_id"] for h in own["items"]} == {"press-01"}
    assert set(fleet["press-01"][1:6]) <= {h["window_id"] for h in own["items"]}
    south = _search(client, window_id=query, site="south")
    assert {h["machine_id"] for h in south["items"]} == {"press-02"}
    assert _search(client, window_id=query, area="nowhere")["items"] == []
    assert _search(client, window_id=query, machine_type="press")["items"]
    outliers = _search(client, window_id=query, label="outlier")
    assert outliers["items"] and all(h["is_outlier"] for h in outliers["items"])
    # Date range: only the enrollment hour.
    early = _search(client, window_id=query, **{"from": at(0), "to": at(600)})
    assert early["items"] and all(h["start_at"] < at(600)[:19] for h in early["items"])
    # Time of day (UTC): the enrollment is at 08:00, the whining uploads 09:00 and 10:00.
    tod = _search(client, window_id=query, time_from="08:59:00", time_to="09:30:00")
    assert {h["machine_id"] for h in tod["items"]} == set()  # press-01's 09:00 is its own recording
    tod = _search(client, window_id=query, time_from="09:59:00", time_to="10:30:00", limit=100)
    assert tod["items"] and {h["machine_id"] for h in tod["items"]} == {"press-02"}
    wrapped = _search(client, window_id=query, time_from="23:00", time_to="08:30", limit=100)
    assert wrapped["items"] and all("T08:" in h["start_at"] for h in wrapped["items"])


def test_labels_and_new_windows_are_seen_by_the_next_search(client, fleet):
    query = fleet["press-01"][0]
    assert _search(client, window_id=query, label="normal")["items"] == []
    target = fleet["press-02"][3]
    assert (
        client.post(f"/v1/windows/{target}/feedback", json={"label": "normal"}).status_code == 200
    )
    labelled = _search(client, window_id=query, label="normal")["items"]
    assert [h["window_id"] for h in labelled] == [target]
    later = upload(client, "press-02", wav(1.0, seed=62, fault=True), started_at=at(9000)).json()
    new_ids = {w["id"] for w in later["windows"]}
    found = {h["window_id"] for h in _search(client, window_id=query, limit=100)["items"]}
    assert new_ids <= found


def test_search_by_uploaded_clip_with_filters_as_query_parameters(client, fleet):
    clip = to_bytes(hum(2.0, seed=70, fault=True, f0=150.0), fmt="FLAC")
    resp = client.post(
        "/v1/search",
        content=clip,
        headers={"Content-Type": "audio/flac"},
        params={"limit": 5, "machine_type": "press"},
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["query"]["audio_seconds"] == 2.0 and body["query"]["query_windows"] >= 1
    assert all(h["is_outlier"] for h in body["items"])
    only = client.post(
        "/v1/search?machine=press-01&limit=3",
        content=clip,
        headers={"Content-Type": "audio/flac"},
    ).json()
    assert {h["machine_id"] for h in only["items"]} == {"press-01"}


def test_embedders_are_never_mixed(client, fleet):
    enroll(
        client,
        "mic-64",
        site="north",
        embedder={"name": "logmel", "n_mels": 64, "pooling": ["mean", "std"]},
    )
    body = _search(client, window_id=fleet["press-01"][0], limit=100)
    assert "mic-64" not in body["machines"]
    assert "mic-64" not in {h["machine_id"] for h in body["items"]}
    resp = client.post(
        "/v1/search?site=north", content=wav(1.0, seed=3), headers={"Content-Type": "audio/wav"}
    )
    assert resp.status_code == 422
    assert "different embedders" in resp.json()["detail"]
    own = client.post(
        "/v1/search?machine=mic-64", content=wav(1.0, seed=3), headers={"Content-Type": "audio/wav"}
    )
    assert own.status_code == 200 and {h["machine_id"] for h in own.json()["items"]} == {"mic-64"}


@pytest.mark.parametrize(
    "body, status, message",
    [
        ({}, 422, "exactly one of window_id or text"),
        ({"window_id": 1, "text": "x"}, 422, "exactly one"),
        ({"window_id": 999999}, 404, "does not exist"),
        ({"window_id": 1, "label": "weird"}, 422, "label"),
        ({"window_id": 1, "time_from": "10:00"}, 422, "both time_from and time_to"),
        ({"window_id": 1, "from": at(10), "to": at(0)}, 422, "'from' must be before 'to'"),
        ({"window_id": 1, "limit": 0}, 422, "limit"),
        ({"window_id": 1, "colour": "red"}, 422, "colour"),
        ({"text": "a squealing belt"}, 422, "full CLAP model"),
    ],
)
def test_bad_json_queries_are_4xx_and_change_nothing(client, fleet, body, status, message):
    before = table_counts(client)
    resp = client.post("/v1/search", json=body)
    assert resp.status_code == status, resp.text
    assert message in resp.json()["detail"]
    assert table_counts(client) == before


def test_bad_uploads(client, fleet):
    text = client.post("/v1/search", content=b"hi", headers={"Content-Type": "text/plain"})
    assert text.status_code == 415 and "application/json" in text.json()["detail"]
    empty = client.post("/v1/search", content=b"", headers={"Content-Type": "audio/wav"})
    assert empty.status_code == 422 and "empty" in empty.json()["detail"]
    junk = client.post("/v1/search", content=b"RIFF1234", headers={"Content-Type": "audio/wav"})
    assert junk.status_code == 422
    long = client.post(
        "/v1/search", content=wav(61.0, sample_rate=8000), headers={"Content-Type": "audio/wav"}
    )
    assert long.status_code == 413 and "at most 60 s" in long.json()["detail"]
    short = client.post("/v1/search", content=wav(0.1), headers={"Content-Type": "audio/wav"})
    assert short.status_code == 422 and "shorter than one window" in short.json()["detail"]
    none = client.post(
        "/v1/search?site=mars", content=wav(1.0), headers={"Content-Type": "audio/wav"}
    )
    assert none.status_code == 422 and "no machine matches" in none.json()["detail"]
    malformed = client.post(
        "/v1/search", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert malformed.status_code == 400


def test_capabilities_say_why_text_is_unavailable(client, fleet):
    body = client.get("/v1/search/capabilities").json()
    assert body["text_search"] is False and "full CLAP model" in body["text_reason"]
    assert body["embedders"][0]["machines"] == 2


def test_a_pruned_embedding_is_recomputed_for_the_query(client, fleet):
    query = fleet["press-02"][0]
    before = _search(client, window_id=query, limit=5)["items"]
    with client.app.state.runtime.db.session() as session:
        session.get(Window, query).embedding = None
    after = _search(client, window_id=query, limit=5)["items"]
    assert [h["window_id"] for h in after] == [h["window_id"] for h in before]


@pytest.mark.parametrize("fraction", [0.002, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_store_search_equals_brute_force_for_any_filter(fraction, metric):
    """Selective filters search a copy of the allowed rows, loose ones mask: same answers."""
    from service.services.search import EmbeddingStore, _Columns

    rng = np.random.default_rng(1)
    n, dim = 3000, 16
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    store = EmbeddingStore(metric)
    half = n // 2  # two adds: z-scoring fixed by the first, rows split over the tail
    for part in (slice(0, half), slice(half, n)):
        m = part.stop - part.start
        store.add(
            vectors[part],
            _Columns(
                window_id=np.arange(part.start, part.stop, dtype=np.int64),
                recording_id=np.zeros(m, np.int64),
                machine=np.zeros(m, np.int32),
                start=np.zeros(m),
                label=np.zeros(m, np.int8),
                outlier=np.zeros(m, bool),
            ),
        )
    allowed = rng.uniform(size=n) < fraction
    queries = rng.standard_normal((3, dim)).astype(np.float32)
    dist, rows = store.search(queries, allowed, 10)
    data, q = store._prepared(vectors), store._prepared(queries)
    if metric == "cosine":
        data = data / np.linalg.norm(data, axis=1, keepdims=True)
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        full = (1 - q @ data.T).min(axis=0)
    else:
        full = np.linalg.norm(data[None] - q[:, None], axis=2).min(axis=0)
    full[~allowed] = np.inf
    expected = np.argsort(full, kind="stable")[: min(10, int(allowed.sum()))]
    assert rows.tolist() == expected.tolist()
    assert dist == pytest.approx(full[expected], abs=1e-4)

"""Hardening (issue 9): every probe that once exhausted memory, gave a 500 or was silently
accepted now gets a clear 4xx, and leaves the database as it was.

Runs on SQLite, and on Postgres with HUMWATCH_TEST_DATABASE_URL (as CI does for tests/service).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import soundfile as sf

from service.app import create_app
from service.runtime import EmbedderRegistry
from tests.service.audio import hum, to_bytes, wav
from tests.service.conftest import (
    ADMIN_TOKEN,
    API_KEY,
    FAST_MACHINE,
    enroll,
    make_settings,
    table_counts,
    upload,
)

READ_KEY = "test-read-only-key-0123456789"
METRICS_TOKEN = "test-metrics-token-0123456789"
KEY = {"Authorization": f"Bearer {API_KEY}"}
READ = {"Authorization": f"Bearer {READ_KEY}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture(scope="module")
def setup(module_make_client):
    """One enrolled machine (so windows, a baseline and cursors exist), keys off."""
    client = module_make_client()
    enroll(client, "fan-01")
    return client, table_counts(client)


def _cursor(payload: dict | str) -> str:
    raw = payload if isinstance(payload, str) else json.dumps(payload)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _pcm_wav(n_samples: int, rate: int) -> bytes:
    buf = io.BytesIO()
    x = (0.1 * np.sin(np.arange(n_samples) * 0.3)).astype(np.float32)
    sf.write(buf, x, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


SOON = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
TOO_FAR = (datetime.now(UTC) + timedelta(days=2)).isoformat()

# -- items 1, 4, 5, 6: (case, method, path, request kwargs, status, text in the detail) ----
REQUEST_CASES = [
    # 1. embedder parameters are bounded before anything is built
    *[
        (
            f"logmel {field}={value}",
            "post",
            "/v1/machines",
            {"json": {"id": "x-1", "embedder": {"name": "logmel", field: value}}},
            422,
            field,
        )
        for field, value in [
            ("n_fft", 16777216),
            ("n_fft", 1e9),
            ("n_fft", 1048576),
            ("n_fft", 8),
            ("hop_length", 0),
            ("hop_length", 10**12),
            ("n_mels", 0),
            ("n_mels", 100000),
            ("sample_rate", 1),
            ("sample_rate", 10**9),
            ("f_min", -1),
            ("f_max", 1e12),
            ("batch_size", 10**9),
            ("batch_size", 0),
            ("pooling", ["p101"]),
            ("pooling", ["mean"] * 100),
            ("pooling", []),
        ]
    ],
    (
        "f_max above Nyquist",
        "post",
        "/v1/machines",
        {"json": {"id": "x-1", "embedder": {"name": "logmel", "sample_rate": 8000, "f_max": 6000}}},
        422,
        "half the sample rate",
    ),
    (
        "n_mels beyond the fft bins",
        "post",
        "/v1/machines",
        {
            "json": {
                "id": "x-1",
                "embedder": {"name": "logmel", "n_fft": 64, "hop_length": 16, "n_mels": 64},
            }
        },
        422,
        "frequency bins",
    ),
    (
        "spectrogram batch over budget",
        "post",
        "/v1/machines",
        {
            "json": {
                "id": "x-1",
                "window_seconds": 60,
                "hop_seconds": 30,
                "embedder": {"name": "logmel", "n_fft": 8192, "hop_length": 16},
            }
        },
        422,
        "GiB",
    ),
    (
        "recording spectrogram over budget",
        "post",
        "/v1/machines",
        {
            "json": {
                "id": "x-1",
                **FAST_MACHINE,
                "embedder": {"name": "logmel", "framing": "recording", "hop_length": 16},
            }
        },
        422,
        "HUMWATCH_MAX_RECORDING_SECONDS",
    ),
    (
        "unknown framing",
        "post",
        "/v1/machines",
        {"json": {"id": "x-1", "embedder": {"name": "logmel", "framing": "bogus"}}},
        422,
        "framing",
    ),
    *[
        (
            f"hf {field}={value!r}",
            "post",
            "/v1/machines",
            {"json": {"id": "x-1", "embedder": {"name": "hf", "model": "m", field: value}}},
            422,
            field,
        )
        for field, value in [
            ("batch_size", 10**6),
            ("layer", 10**6),
            ("device", "cuda:999999"),
            ("dtype", "float64"),
            ("revision", "../x"),
            ("local_files_only", False),
        ]
    ],
    # 4. dates out of range, cursors with absurd ids, versions beyond the columns
    *[
        (
            f"started_at={value}",
            "upload",
            "/v1/machines/fan-01/recordings",
            {"params": {"started_at": value}},
            422,
            "started_at",
        )
        for value in [
            "9999-12-31T23:59:59Z",
            "0001-01-01T00:00:00+01:00",
            "0001-01-01T00:00:00Z",
            "1999-12-31T23:59:59Z",
            TOO_FAR,
            "1700000000",
            "1.7e9",
        ]
    ],
    *[
        (
            f"windows {name}={value}",
            "get",
            "/v1/machines/fan-01/windows",
            {"params": {name: value}},
            422,
            name,
        )
        for name, value in [
            ("from", "0001-01-01T00:00:00+01:00"),
            ("to", "9999-12-31T23:59:59-01:00"),
        ]
    ],
    (
        "baseline build from year 1 with an offset",
        "post",
        "/v1/admin/machines/fan-01/baselines",
        {"json": {"from": "0001-01-01T00:00:00+01:00"}},
        422,
        "from",
    ),
    *[
        (
            f"cursor {label}",
            "get",
            "/v1/machines/fan-01/windows",
            {"params": {"cursor": _cursor(raw)}},
            422,
            "cursor",
        )
        for label, raw in [
            ("id 2^70", {"t": "2025-01-06T08:00:00+00:00", "id": 2**70}),
            ("id 2^63", {"t": "2025-01-06T08:00:00+00:00", "id": 2**63}),
            ("id Infinity", '{"t": "2025-01-06T08:00:00+00:00", "id": Infinity}'),
            ("id 1e400", '{"t": "2025-01-06T08:00:00+00:00", "id": 1e400}'),
            ("id 1.5", {"t": "2025-01-06T08:00:00+00:00", "id": 1.5}),
            ("year 1 with an offset", {"t": "0001-01-01T00:00:00+01:00", "id": 1}),
        ]
    ],
    *[
        (
            f"activate version {version}",
            "post",
            f"/v1/admin/machines/fan-01/baselines/{version}/activate",
            {},
            422,
            "version",
        )
        for version in (2**31, 2**63, 2**64)
    ],
    ("window id 2^63", "get", f"/v1/windows/{2**63}", {}, 422, "window_id"),
    # 5. NUL characters (Postgres cannot store them): 422 on both backends
    (
        "NUL in a machine name",
        "post",
        "/v1/machines",
        {"json": {"id": "x-1", "name": "fan\x00one"}},
        422,
        "NUL",
    ),
    (
        "NUL in a label",
        "post",
        "/v1/machines",
        {"json": {"id": "x-1", "labels": {"line": "2\x00"}}},
        422,
        "NUL",
    ),
    (
        "NUL in a feedback note",
        "post",
        "/v1/windows/1/feedback",
        {"json": {"label": "normal", "note": "ok\x00"}},
        422,
        "NUL",
    ),
    ("NUL in a site filter", "get", "/v1/machines", {"params": {"site": "north\x00"}}, 422, "NUL"),
    ("NUL in a machine id", "get", "/v1/machines/fan%00", {}, 422, "NUL"),
    (
        "NUL in a condition",
        "upload",
        "/v1/machines/fan-01/recordings",
        {"params": {"rpm": "1\x00"}},
        422,
        "NUL",
    ),
    # 6. audio the embedders cannot use
    (
        "1 Hz WAV",
        "upload",
        "/v1/machines/fan-01/recordings",
        {"data": _pcm_wav(10, 1)},
        422,
        "1 Hz",
    ),
    (
        "7999 Hz WAV",
        "upload",
        "/v1/machines/fan-01/recordings",
        {"data": _pcm_wav(8000, 7999)},
        422,
        "8000-192000 Hz",
    ),
    (
        "384 kHz WAV",
        "upload",
        "/v1/machines/fan-01/recordings",
        {"data": to_bytes(hum(0.5, 384000), 384000)},
        422,
        "8000-192000 Hz",
    ),
    # 9. a JSON body sent as a form or as text says which Content-Type to use
    *[
        (
            f"JSON as {media}",
            "post",
            "/v1/machines",
            {"content": b'{"id": "x-1"}', "headers": {"Content-Type": media}},
            422,
            "Content-Type: application/json",
        )
        for media in ("application/x-www-form-urlencoded", "text/plain")
    ],
    # 3. JSON bodies are capped at 1 MiB
    (
        "2 MiB JSON body",
        "post",
        "/v1/machines",
        {"json": {"id": "x-1", "name": "n" * (2 * 1024 * 1024)}},
        413,
        "1 MiB",
    ),
]


def _send(client, method, path, kwargs):
    kwargs = dict(kwargs)
    if method == "upload":
        return upload(
            client,
            path.split("/")[3],
            kwargs.pop("data", wav(1.0, seed=77)),
            **kwargs.get("params", {}),
        )
    return client.request(method.upper(), path, **kwargs)


@pytest.mark.parametrize(
    "method, path, kwargs, status, needle",
    [case[1:] for case in REQUEST_CASES],
    ids=[case[0] for case in REQUEST_CASES],
)
def test_bad_requests_get_a_clear_4xx(setup, method, path, kwargs, status, needle):
    client, counts = setup
    embedders = len(client.app.state.runtime.embedders)
    resp = _send(client, method, path, kwargs)
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error", "detail"}
    assert needle in body["detail"], body["detail"]
    assert table_counts(client) == counts
    assert len(client.app.state.runtime.embedders) == embedders  # nothing built or cached


def test_plausible_dates_are_accepted(setup):
    client, _ = setup
    for started_at in ("2000-01-01T00:00:00Z", SOON, "2025-01-06T09:00:00+01:00"):
        resp = upload(client, "fan-01", wav(1.0, seed=3), started_at=started_at)
        assert resp.status_code == 201, resp.text
    resp = upload(client, "fan-01", wav(1.0, seed=4), started_at="2025-01-06T09:00:00+01:00")
    assert resp.json()["recording"]["started_at"].startswith("2025-01-06T08:00:00")


def test_filters_take_any_iso_time(setup):
    client, _ = setup
    for params in ({"from": "0001-01-01T00:00:00Z"}, {"to": "9999-12-31T23:59:59Z"}):
        resp = client.get("/v1/machines/fan-01/windows", params=params)
        assert resp.status_code == 200, resp.text


def test_too_short_says_the_exact_numbers(make_client):
    client = make_client()
    assert client.post("/v1/machines", json={"id": "fan-02"}).status_code == 201
    resp = upload(client, "fan-02", _pcm_wav(79_999, 16000))
    assert resp.status_code == 422
    assert resp.json()["error"] == "audio_too_short"
    detail = resp.json()["detail"]
    assert "79,999 samples at 16,000 Hz" in detail and "80,000 samples (5 s)" in detail


def test_405_lists_every_method(setup):
    client, _ = setup
    resp = client.delete("/v1/machines")
    assert resp.status_code == 405
    assert resp.headers["allow"] == "GET, POST"
    resp = client.put("/v1/machines/fan-01")
    assert resp.headers["allow"] == "DELETE, GET, PATCH"
    assert "PUT is not allowed" in resp.json()["detail"]


def test_openapi_shows_the_limits(setup):
    client, _ = setup
    schema = client.get("/openapi.json").json()
    logmel = schema["components"]["schemas"]["LogMelSpec"]["properties"]
    assert logmel["n_fft"]["maximum"] == 8192 and logmel["n_mels"]["minimum"] == 1
    assert logmel["sample_rate"] == {**logmel["sample_rate"], "minimum": 8000, "maximum": 96000}
    hf = schema["components"]["schemas"]["HFSpec"]["properties"]
    assert hf["batch_size"]["maximum"] == 64
    ingest = schema["paths"]["/v1/machines/{machine_id}/recordings"]["post"]
    started = next(p for p in ingest["parameters"] if p["name"] == "started_at")
    assert "2000-01-01" in started["description"]
    activate = schema["paths"]["/v1/admin/machines/{machine_id}/baselines/{version}/activate"]
    version = next(p for p in activate["post"]["parameters"] if p["name"] == "version")
    assert version["schema"]["maximum"] == 2**31 - 1
    assert "1 MiB" in ingest["responses"]["413"]["description"]


# -- item 2: the embedder cache holds accepted specs only, and is bounded --------------------


def test_rejected_specs_are_not_cached(make_client):
    client = make_client()
    runtime = client.app.state.runtime
    before = len(runtime.embedders)
    # Within every bound, but n_fft longer than the 0.05 s window: built, checked, dropped.
    resp = client.post(
        "/v1/machines",
        json={
            "id": "x-1",
            "window_seconds": 0.05,
            "hop_seconds": 0.05,
            "embedder": {"name": "logmel", "n_fft": 4096, "hop_length": 512},
        },
    )
    assert resp.status_code == 422 and "n_fft" in resp.json()["detail"]
    assert len(runtime.embedders) == before


def test_embedder_cache_is_bounded_and_keeps_the_default():
    registry = EmbedderRegistry(capacity=3)
    default = registry.get(None)
    specs = [{"name": "logmel", "n_mels": n} for n in (8, 16, 32, 64)]
    for spec in specs:
        registry.get(spec)
    assert len(registry) <= 3
    assert registry.get(None) is default  # pinned, never evicted
    assert specs[-1] in registry and specs[0] not in registry


# -- item 3: authentication before any body is read ------------------------------------------


def test_no_body_is_read_before_authentication(db_url):
    app = create_app(make_settings(db_url, api_keys=API_KEY, admin_token=ADMIN_TOKEN))
    reads = []

    async def receive():
        reads.append(1)
        return {"type": "http.request", "body": b"x" * 1024, "more_body": True}

    sent = []

    async def send(message):
        sent.append(message)

    for headers in ([], [(b"authorization", b"Bearer not-a-key-0123456789")]):
        sent.clear()
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/v1/machines",
            "raw_path": b"/v1/machines",
            "root_path": "",
            "query_string": b"",
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(100 * 1024 * 1024).encode()),
                *headers,
            ],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 8000),
            "state": {},
        }
        asyncio.run(app(scope, receive, send))
        assert sent[0]["status"] == (403 if headers else 401)
    assert reads == []


def test_declared_oversize_json_is_refused_unread(make_client):
    client = make_client(api_keys=API_KEY)
    resp = client.post(
        "/v1/machines",
        content=b"{" + b" " * (1024 * 1024 + 10) + b"}",
        headers={**KEY, "Content-Type": "application/json"},
    )
    assert resp.status_code == 413 and resp.json()["error"] == "payload_too_large"


# -- item 10: reads behind keys, read-only keys, the metrics token, open health --------------


@pytest.fixture
def secured(make_client):
    return make_client(
        api_keys=API_KEY, read_keys=READ_KEY, admin_token=ADMIN_TOKEN, metrics_token=METRICS_TOKEN
    )


READS = [
    "/v1/machines",
    "/v1/machines/fan-01",
    "/v1/machines/fan-01/windows",
    "/v1/windows/1",
    "/v1/windows/1/audio",
    "/v1/machines/fan-01/baselines",
]


def test_every_read_needs_a_key(secured):
    enroll_with_key(secured)
    for path in READS:
        assert secured.get(path).status_code == 401, path
        assert (
            secured.get(path, headers={"Authorization": "Bearer wrong-key-0123456789"}).status_code
            == 403
        )
        for headers in (READ, KEY, ADMIN):
            assert secured.get(path, headers=headers).status_code == 200, (path, headers)
    for path in ("/healthz", "/readyz"):
        assert secured.get(path).status_code == 200


def test_read_keys_cannot_write(secured):
    resp = secured.post("/v1/machines", json={"id": "x-1", **FAST_MACHINE}, headers=READ)
    assert resp.status_code == 403 and "read-only" in resp.json()["detail"]
    assert secured.post("/v1/admin/prune", headers=READ).status_code == 403
    assert secured.post("/v1/admin/prune", headers=KEY).status_code == 403
    assert secured.post("/v1/admin/prune", headers=ADMIN).status_code == 200


def test_metrics_token(secured, make_client):
    assert secured.get("/metrics").status_code == 401
    assert secured.get("/metrics", headers=KEY).status_code == 403
    resp = secured.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert resp.status_code == 200 and "humwatch_" in resp.text
    assert make_client().get("/metrics").status_code == 200  # no token set: open


def enroll_with_key(client):
    client.headers.update(KEY)
    try:
        enroll(client, "fan-01")
    finally:
        del client.headers["Authorization"]


# -- item 11: hf models only from the models directory, one answer for everything else ------


def test_hf_models_only_from_the_models_directory(make_client, tmp_path):
    models = tmp_path / "models"
    (models / "tiny-model").mkdir(parents=True)
    (models / "tiny-model" / "config.json").write_text('{"model_type": "bert"}')
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "config.json").write_text('{"model_type": "wav2vec2"}')
    client = make_client(models_dir=str(models))
    answers = set()
    for model in (
        "/etc",
        "/etc/passwd",
        "/does/not/exist",
        str(tmp_path / "outside"),
        "../outside",
        "tiny-model/../../outside",
        "~",
        "nope",
        "facebook/wav2vec2-base",  # a hub id: downloads are not allowed
    ):
        resp = client.post(
            "/v1/machines", json={"id": "x-1", "embedder": {"name": "hf", "model": model}}
        )
        assert resp.status_code == 422, (model, resp.text)
        answers.add(resp.text)
    assert len(answers) == 1, answers
    assert "tiny-model" in answers.pop()  # the one answer lists what is on offer
    # The offered model is opened (and refused for what it is, not for where it is).
    resp = client.post(
        "/v1/machines", json={"id": "x-1", "embedder": {"name": "hf", "model": "tiny-model"}}
    )
    assert resp.status_code == 422 and "bert" in resp.json()["detail"]


def test_baseline_build_over_the_widest_range(make_client):
    """Year 1 to year 9999 (once a 500): all the material there is."""
    client = make_client()
    enroll(client, "fan-03")
    resp = client.post(
        "/v1/admin/machines/fan-03/baselines",
        json={"from": "0001-01-01T00:00:00Z", "to": "9999-12-31T23:59:59Z"},
    )
    assert resp.status_code == 201, resp.text
    assert resp.json()["version"] == 2 and resp.json()["n_vectors"] > 0


def test_an_offered_hf_model_is_chosen_by_name(make_client, tmp_path, monkeypatch):
    """A tiny wav2vec2 saved in the models directory (nothing downloaded): registered by its
    folder name, stored by name (not the server's path), and loaded again from it."""
    from tests.detectors.test_hf_embedder import _build_wav2vec2

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    models = tmp_path / "models"
    _build_wav2vec2(models / "tiny-w2v")
    client = make_client(models_dir=str(models))
    resp = client.post(
        "/v1/machines",
        json={
            "id": "hf-01",
            **FAST_MACHINE,
            "embedder": {"name": "hf", "model": "tiny-w2v", "device": "cpu"},
        },
    )
    assert resp.status_code == 201, resp.text
    assert resp.json()["embedder"]["model"] == "tiny-w2v"
    fresh = make_client(models_dir=str(models))  # a new process: builds it from the name
    resp = upload(fresh, "hf-01", wav(1.0, seed=1), started_at="2025-01-06T08:00:00Z")
    assert resp.status_code == 201, resp.text

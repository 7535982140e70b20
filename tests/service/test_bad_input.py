"""Bad-input corpus: every case gets the right 4xx in the one error shape, and leaves every
table exactly as it was."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from tests.service.audio import hum, to_bytes, wav
from tests.service.conftest import enroll, table_counts, upload

MAX_UPLOAD = 200_000  # bytes; a 16 kHz 16-bit mono WAV of ~6 s


def _nan_wav() -> bytes:
    x = hum(1.0)
    x[100:110] = np.nan
    return to_bytes(x, 16000, "WAV", "FLOAT")


def _zero_length_wav() -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.zeros((0, 1), np.float32), 16000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


GOOD = wav(1.0, seed=42)

# (case id, request kwargs, expected status, expected error code)
AUDIO_CASES = [
    ("empty body", {"data": b""}, 422, "empty_audio"),
    ("truncated wav", {"data": GOOD[: len(GOOD) // 2]}, 422, "truncated_audio"),
    ("wav header only", {"data": GOOD[:40]}, 422, "truncated_audio"),
    ("random bytes", {"data": np.random.default_rng(0).bytes(20_000)}, 422, "unsupported_format"),
    ("text as wav", {"data": b"hello, this is not audio" * 100}, 422, "unsupported_format"),
    ("nan samples", {"data": _nan_wav()}, 422, "non_finite_audio"),
    ("zero-length audio", {"data": _zero_length_wav()}, 422, "empty_audio"),
    ("shorter than a window", {"data": wav(0.1)}, 422, "audio_too_short"),
    (
        "wrong content type",
        {"data": GOOD, "content_type": "application/octet-stream"},
        415,
        "unsupported_media_type",
    ),
    ("json content type", {"data": GOOD, "content_type": "application/json"}, 415, None),
    ("mp3 content type", {"data": GOOD, "content_type": "audio/mpeg"}, 415, None),
    ("no content type", {"data": GOOD, "content_type": ""}, 415, None),
    ("oversize upload", {"data": wav(8.0)}, 413, "payload_too_large"),
    ("too long recording", {"data": to_bytes(hum(7.0), 8000)}, 413, "payload_too_large"),
    ("unknown machine", {"data": GOOD, "machine": "nope"}, 404, "not_found"),
    ("bad started_at", {"data": GOOD, "params": {"started_at": "yesterday"}}, 422, None),
    ("month 13", {"data": GOOD, "params": {"started_at": "2024-13-01T00:00:00Z"}}, 422, None),
    ("bad condition name", {"data": GOOD, "params": {"rpm speed": "3"}}, 422, "invalid_input"),
    (
        "8 channels, channel 8",
        {"data": to_bytes(hum(0.5, channels=8)), "machine": "ch8"},
        422,
        None,
    ),
]


@pytest.fixture(scope="module")
def setup(module_make_client):
    # Shared by every case: each one must leave the tables as they were, which the next
    # case's count check would also notice.
    client = module_make_client(max_upload_bytes=MAX_UPLOAD, max_recording_seconds=6.0)
    enroll(client, "fan-01")
    resp = client.post(
        "/v1/machines",
        json={"id": "ch8", "channel": 8, "window_seconds": 0.25, "hop_seconds": 0.125},
    )
    assert resp.status_code == 201
    return client, table_counts(client)


@pytest.mark.parametrize(
    "kwargs, status, code", [c[1:] for c in AUDIO_CASES], ids=[c[0] for c in AUDIO_CASES]
)
def test_bad_audio(setup, kwargs, status, code):
    client, counts = setup
    resp = upload(
        client,
        kwargs.get("machine", "fan-01"),
        kwargs["data"],
        content_type=kwargs.get("content_type", "audio/wav"),
        **kwargs.get("params", {}),
    )
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error", "detail"} and body["detail"]
    if code:
        assert body["error"] == code
    assert table_counts(client) == counts


def test_oversize_streamed_without_length(setup):
    client, counts = setup

    def chunks():
        for _ in range(10):
            yield b"\0" * 50_000

    resp = client.post(
        "/v1/machines/fan-01/recordings",
        content=chunks(),
        headers={"Content-Type": "audio/wav"},
    )
    assert resp.status_code == 413
    assert resp.json()["error"] == "payload_too_large"
    assert table_counts(client) == counts


JSON_CASES = [
    ("post", "/v1/machines", b'{"id": "x",', 400, "malformed_json"),
    ("post", "/v1/machines", b"not json at all", 400, "malformed_json"),
    ("post", "/v1/machines", b"[1, 2]", 422, "validation_error"),
    ("post", "/v1/machines", b'{"id": 5}', 422, "validation_error"),
    ("patch", "/v1/machines/fan-01", b'{"name": ', 400, "malformed_json"),
    ("patch", "/v1/machines/fan-01", b'{"state": "broken"}', 422, "validation_error"),
    ("post", "/v1/windows/1/feedback", b"{label: normal}", 400, "malformed_json"),
    ("post", "/v1/windows/1/feedback", b'{"label": "weird"}', 422, "validation_error"),
    ("post", "/v1/windows/999999/feedback", b'{"label": "normal"}', 404, "not_found"),
    ("post", "/v1/admin/machines/fan-01/baselines", b'{"from": "soon"}', 422, None),
    ("post", "/v1/admin/machines/fan-01/baselines", b'{"k": 0}', 422, None),
    (
        "post",
        "/v1/admin/machines/fan-01/baselines",
        b'{"from": "2025-01-02T00:00:00Z", "to": "2025-01-01T00:00:00Z"}',
        422,
        None,
    ),
    ("post", "/v1/admin/machines/nope/baselines", b"{}", 404, "not_found"),
    ("post", "/v1/admin/machines/fan-01/baselines/7/activate", b"", 404, "not_found"),
    ("get", "/v1/machines/fan-01/windows?from=2024-02-30", None, 422, None),
    ("get", "/v1/machines/fan-01/windows?to=noon", None, 422, None),
    ("get", "/v1/machines/fan-01/windows?cursor=garbage", None, 422, "invalid_input"),
    ("get", "/v1/machines/fan-01/windows?limit=0", None, 422, None),
    ("get", "/v1/machines/fan-01/windows?limit=100000", None, 422, None),
    ("get", "/v1/machines/nope/windows", None, 404, "not_found"),
    ("get", "/v1/windows/abc", None, 422, None),
    ("get", "/v1/windows/0", None, 422, None),
    ("get", "/v1/windows/424242", None, 404, "not_found"),
    ("get", "/v1/windows/424242/audio", None, 404, "not_found"),
    ("get", "/v1/nothing-here", None, 404, "not_found"),
    ("put", "/v1/machines", b"{}", 405, "method_not_allowed"),
]


@pytest.mark.parametrize(
    "method, path, data, status, code",
    JSON_CASES,
    ids=[f"{c[0]} {c[1]} {c[3]}" for c in JSON_CASES],
)
def test_bad_requests(setup, method, path, data, status, code):
    client, counts = setup
    headers = {"Content-Type": "application/json"} if data is not None else {}
    resp = client.request(method.upper(), path, content=data, headers=headers)
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error", "detail"} and body["detail"]
    if code:
        assert body["error"] == code
    assert table_counts(client) == counts


# Not errors: these are resampled or mixed down, and stored as one recording each.
ACCEPTED = [
    ("44.1 kHz", lambda: wav(1.0, 44100)),
    ("48 kHz", lambda: wav(1.0, 48000)),
    ("8 channels", lambda: to_bytes(hum(0.5, channels=8))),
    ("float wav", lambda: to_bytes(hum(1.0), 16000, "WAV", "FLOAT")),
    ("24-bit wav", lambda: to_bytes(hum(1.0), 16000, "WAV", "PCM_24")),
]


@pytest.mark.parametrize("make", [c[1] for c in ACCEPTED], ids=[c[0] for c in ACCEPTED])
def test_unusual_but_valid_audio_is_accepted(make_client, make):
    client = make_client(max_upload_bytes=MAX_UPLOAD)
    client.post("/v1/machines", json={"id": "fan-01", "window_seconds": 0.25, "hop_seconds": 0.125})
    before = table_counts(client)
    resp = upload(client, "fan-01", make())
    assert resp.status_code == 201, resp.text
    after = table_counts(client)
    assert after["recordings"] == before["recordings"] + 1
    assert after["recording_audio"] == before["recording_audio"] + 1
    assert after["windows"] > before["windows"]

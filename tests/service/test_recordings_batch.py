"""The batch upload (``POST /v1/recordings/batch``): what it stores is what one upload at a
time stores; each item gets the single upload's answer; a bad item fails alone; every
whole-request error and a database outage leave the tables exactly as they were. On SQLite
and on Postgres (HUMWATCH_TEST_DATABASE_URL)."""

from __future__ import annotations

import contextlib
import json
import subprocess
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.runtime import Runtime
from tests.service.audio import hum, to_bytes, wav
from tests.service.conftest import (
    API_KEY,
    FAST_MACHINE,
    T0,
    at,
    create_machine,
    enroll,
    fresh_database,
    make_settings,
    table_counts,
    upload,
)
from tests.service.test_bad_input import AUDIO_CASES
from tests.service.test_ingest_batch import dump

URL = "/v1/recordings/batch"


def item(machine: str, started_at: str, file: str, **conditions) -> dict:
    out = {"machine_id": machine, "started_at": started_at, "file": file}
    if conditions:
        out["conditions"] = conditions
    return out


def post_batch(client: TestClient, items: list[dict], audio: dict[str, bytes], **kw):
    """The request ``curl -F manifest=@m.json -F a=@a.wav ...`` sends (httpx's multipart)."""
    files = [("manifest", ("m.json", json.dumps({"items": items}), "application/json"))]
    files += [(name, (f"{name}.wav", data, "audio/wav")) for name, data in audio.items()]
    return client.post(URL, files=files, **kw)


def comparable(answer: dict) -> dict:
    """A single upload's answer without what differs between two databases (ids, clocks)."""
    rec = {k: v for k, v in answer["recording"].items() if k not in ("id", "created_at")}
    windows = [{k: v for k, v in w.items() if k != "id"} for w in answer["windows"]]
    rest = {k: v for k, v in answer.items() if k not in ("recording", "windows")}
    return {"recording": rec, "windows": windows, **rest}


@contextlib.contextmanager
def second_client(tmp_path, **overrides):
    (tmp_path / "other").mkdir()
    with (
        fresh_database(tmp_path / "other") as url,
        TestClient(create_app(make_settings(url, **overrides))) as client,
    ):
        yield client


def runtime_of(client: TestClient) -> Runtime:
    return client.app.state.runtime


def sequence() -> list[tuple[str, str, bytes, dict]]:
    """Two machines interleaved: ``a`` finishes enrollment inside the batch and is scored
    after it (a fault clip among them), ``b`` stays enrolling; conditions on some."""
    out = []
    for i in range(9):
        fault = i == 7
        out.append(("a", at(i), wav(1.0, seed=300 + i, fault=fault), {"rpm": 1480 + i}))
        if i < 3:
            out.append(("b", at(i), wav(1.0, seed=400 + i), {}))
    return out


def test_a_batch_stores_exactly_what_one_upload_at_a_time_stores(make_client, tmp_path):
    batch = make_client()
    with second_client(tmp_path) as single:
        for client in (batch, single):
            create_machine(client, "a")
            create_machine(client, "b")
        clips = sequence()
        answers = []
        for machine, start, data, conditions in clips:
            resp = upload(single, machine, data, started_at=start, **conditions)
            assert resp.status_code == 201, resp.text
            answers.append(resp.json())
        items = [
            item(machine, start, f"f{i}", **conditions)
            for i, (machine, start, _data, conditions) in enumerate(clips)
        ]
        resp = post_batch(batch, items, {f"f{i}": c[2] for i, c in enumerate(clips)})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert (body["created"], body["already_stored"], body["failed"]) == (len(clips), 0, 0)
        assert [o["index"] for o in body["items"]] == list(range(len(clips)))
        for outcome, want, (machine, *_rest) in zip(body["items"], answers, clips, strict=True):
            assert outcome["status"] == 201 and outcome["error"] is None
            assert outcome["machine_id"] == machine
            assert comparable(outcome["result"]) == comparable(want)
        states = [o["result"]["machine_state"] for o in body["items"] if o["machine_id"] == "a"]
        assert states[0] == "enrolling" and states[-1] == "monitoring"
        assert any(w["score"] is not None for w in body["items"][-1]["result"]["windows"])
        assert dump(runtime_of(batch)) == dump(runtime_of(single))


def test_a_bad_item_fails_alone_with_the_single_uploads_answer(make_client):
    """Every audio case of the bad-input corpus in one batch between good items: each gets
    the status and error the single upload gives the same audio, and only the good ones
    are stored."""
    client = make_client(max_upload_bytes=200_000, max_recording_seconds=6.0)
    enroll(client, "fan-01")
    create_machine(client, "ch8", channel=8)
    enroll(client, "held")
    assert client.patch("/v1/machines/held", json={"state": "paused"}).status_code == 200
    cases = [c for c in AUDIO_CASES if "content_type" not in c[1]]
    cases.append(("paused machine", {"data": wav(1.0), "machine": "held"}, 409, "conflict"))
    singles = []
    for _name, kwargs, status, _code in cases:
        counts = table_counts(client)
        resp = upload(
            client, kwargs.get("machine", "fan-01"), kwargs["data"], **kwargs.get("params", {})
        )
        assert resp.status_code == status, resp.text
        assert table_counts(client) == counts
        singles.append(resp.json())
    items, audio = [], {}
    for i, (_name, kwargs, _status, _code) in enumerate(cases):
        params = dict(kwargs.get("params", {}))
        start = params.pop("started_at", at(1000 + i))
        good = f"good{i}"
        items.append(item("fan-01", at(2000 + i), good))
        audio[good] = wav(1.0, seed=700 + i)
        items.append(item(kwargs.get("machine", "fan-01"), start, f"bad{i}", **params))
        audio[f"bad{i}"] = kwargs["data"]
    before = table_counts(client)
    resp = post_batch(client, items, audio)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["created"] == len(cases) and body["failed"] == len(cases)
    for i, ((name, _kwargs, status, code), single) in enumerate(zip(cases, singles, strict=True)):
        good, bad = body["items"][2 * i], body["items"][2 * i + 1]
        assert good["status"] == 201, (name, good)
        assert bad["status"] == status and bad["result"] is None, (name, bad)
        assert bad["error"]["error"] == single["error"], name
        if code is not None:
            assert bad["error"]["error"] == code, name
        if name not in ("oversize upload", "too long recording", "bad started_at", "month 13"):
            assert bad["error"]["detail"] == single["detail"], name  # the very same message
        else:
            assert bad["error"]["detail"], name
    after = table_counts(client)
    assert after["recordings"] == before["recordings"] + len(cases)
    assert after["windows"] == before["windows"] + 7 * len(cases)


def test_a_part_that_is_not_audio_and_a_condition_that_is_invalid_fail_alone(client):
    enroll(client, "fan-01")
    files = [
        (
            "manifest",
            (
                None,
                json.dumps(
                    {
                        "items": [
                            item("fan-01", at(100), "a"),
                            item("fan-01", at(101), "b"),
                            {**item("fan-01", at(102), "a"), "conditions": {"rpm speed": 3}},
                            {**item("fan-01", at(103), "a"), "extra": 1},
                            {"machine_id": "fan-01", "file": "a"},
                        ]
                    }
                ),
            ),
        ),
        ("a", ("a.wav", wav(1.0, seed=900), "application/octet-stream")),  # what curl sends
        ("b", ("b.txt", b"hello", "text/plain")),
    ]
    resp = client.post(URL, files=files)
    assert resp.status_code == 200, resp.text
    statuses = [(o["status"], o["error"] and o["error"]["error"]) for o in resp.json()["items"]]
    assert statuses == [
        (201, None),
        (415, "unsupported_media_type"),
        (422, "invalid_input"),
        (422, "validation_error"),
        (422, "validation_error"),
    ]
    assert "started_at" in resp.json()["items"][4]["error"]["detail"]


def test_duplicates_inside_a_batch_and_against_stored_audio(client):
    enroll(client, "fan-01")
    stored = upload(client, "fan-01", wav(1.0, seed=50), started_at=at(100)).json()
    items = [
        item("fan-01", at(100), "old"),  # stored before: 200, its recording
        item("fan-01", at(101), "new"),
        item("fan-01", at(101), "new"),  # the same upload again in the batch
        item("fan-01", at(102), "new"),  # same audio, another start: a recording of its own
    ]
    resp = post_batch(client, items, {"old": wav(1.0, seed=50), "new": wav(1.0, seed=51)})
    body = resp.json()
    assert [o["status"] for o in body["items"]] == [200, 201, 200, 201]
    ids = [o["result"]["recording"]["id"] for o in body["items"]]
    assert ids[0] == stored["recording"]["id"] and ids[1] == ids[2] != ids[3]
    assert body["items"][0]["result"]["created"] is False
    assert comparable(body["items"][0]["result"])["windows"] == comparable(stored)["windows"]
    assert (body["created"], body["already_stored"]) == (2, 2)
    counts = table_counts(client)
    again = post_batch(client, items, {"old": wav(1.0, seed=50), "new": wav(1.0, seed=51)})
    assert [o["status"] for o in again.json()["items"]] == [200] * 4
    assert [o["result"]["recording"]["id"] for o in again.json()["items"]] == ids
    assert table_counts(client) == counts


def _multipart(parts: list[tuple[str, bytes]], boundary: str = "XyZ") -> bytes:
    body = b""
    for name, data in parts:
        body += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        body += data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode()


GOOD = wav(1.0, seed=60)
MANIFEST = json.dumps({"items": [item("fan-01", at(100), "a")]}).encode()
MULTIPART = "multipart/form-data; boundary=XyZ"

# (case, headers, body, status, error code, a word the detail must hold)
REQUEST_CASES = [
    ("json body", {"Content-Type": "application/json"}, MANIFEST, 415, None, "multipart"),
    ("audio body", {"Content-Type": "audio/wav"}, GOOD, 415, None, "machines/{id}/recordings"),
    ("no content type", {}, GOOD, 415, None, "multipart"),
    ("no boundary", {"Content-Type": "multipart/form-data"}, GOOD, 400, None, "boundary"),
    ("other boundary", {"Content-Type": MULTIPART}, _multipart([("a", GOOD)], "Q"), 400, None, ""),
    (
        "truncated",
        {"Content-Type": MULTIPART},
        _multipart([("manifest", MANIFEST), ("a", GOOD)])[:-200],
        400,
        "malformed_multipart",
        "truncated",
    ),
    (
        "no manifest",
        {"Content-Type": MULTIPART},
        _multipart([("a", GOOD)]),
        422,
        None,
        "manifest",
    ),
    (
        "manifest not json",
        {"Content-Type": MULTIPART},
        _multipart([("manifest", b"{items: [}"), ("a", GOOD)]),
        400,
        "malformed_json",
        "JSON",
    ),
    (
        "manifest a list",
        {"Content-Type": MULTIPART},
        _multipart([("manifest", b"[]"), ("a", GOOD)]),
        422,
        None,
        "items",
    ),
    (
        "no items",
        {"Content-Type": MULTIPART},
        _multipart([("manifest", b'{"items": []}')]),
        422,
        None,
        "empty",
    ),
    (
        "item without file",
        {"Content-Type": MULTIPART},
        _multipart([("manifest", b'{"items": [{"machine_id": "fan-01"}]}'), ("a", GOOD)]),
        422,
        None,
        "file",
    ),
    (
        "missing part",
        {"Content-Type": MULTIPART},
        _multipart([("manifest", MANIFEST)]),
        422,
        None,
        "'a'",
    ),
    (
        "part named by no item",
        {"Content-Type": MULTIPART},
        _multipart([("manifest", MANIFEST), ("a", GOOD), ("stray", GOOD)]),
        422,
        None,
        "stray",
    ),
    (
        "two parts of one name",
        {"Content-Type": MULTIPART},
        _multipart([("manifest", MANIFEST), ("a", GOOD), ("a", GOOD)]),
        400,
        None,
        "'a'",
    ),
    (
        "too many items",
        {"Content-Type": MULTIPART},
        _multipart(
            [
                (
                    "manifest",
                    json.dumps({"items": [item("fan-01", at(i), "a") for i in range(4)]}).encode(),
                ),
                ("a", GOOD),
            ]
        ),
        413,
        "payload_too_large",
        "HUMWATCH_MAX_BATCH_ITEMS",
    ),
    (
        "too many parts",
        {"Content-Type": MULTIPART},
        _multipart([("manifest", MANIFEST)] + [(f"p{i}", GOOD) for i in range(4)]),
        413,
        "payload_too_large",
        "HUMWATCH_MAX_BATCH_ITEMS",
    ),
    (
        "body over the limit",
        {"Content-Type": MULTIPART},
        _multipart([("manifest", MANIFEST), ("a", GOOD * 60)]),
        413,
        "payload_too_large",
        "HUMWATCH_MAX_BATCH_BYTES",
    ),
    (
        "manifest over 1 MiB",
        {"Content-Type": MULTIPART},
        _multipart([("manifest", b" " * (1024 * 1024 + 1) + MANIFEST), ("a", GOOD)]),
        413,
        "payload_too_large",
        "manifest",
    ),
]


@pytest.fixture(scope="module")
def limited(module_make_client):
    client = module_make_client(max_batch_items=3, max_batch_bytes=1536 * 1024)
    enroll(client, "fan-01")
    return client


@pytest.mark.parametrize(
    "headers, body, status, code, word",
    [c[1:] for c in REQUEST_CASES],
    ids=[c[0] for c in REQUEST_CASES],
)
def test_a_whole_request_error_names_what_to_fix_and_writes_nothing(
    limited, headers, body, status, code, word
):
    before = table_counts(limited)
    resp = limited.post(URL, content=body, headers=headers)
    assert resp.status_code == status, resp.text
    answer = resp.json()
    assert set(answer) == {"error", "detail"}
    if code:
        assert answer["error"] == code
    assert word in answer["detail"]
    assert table_counts(limited) == before


def test_a_body_over_the_limit_streamed_without_its_length_is_refused(limited):
    before = table_counts(limited)
    head = _multipart([("manifest", MANIFEST)]).rsplit(b"--XyZ--", 1)[0]

    def chunks():
        yield head + b'--XyZ\r\nContent-Disposition: form-data; name="a"\r\n\r\n'
        for _ in range(200):
            yield b"\0" * 65536

    resp = limited.post(URL, content=chunks(), headers={"Content-Type": MULTIPART})
    assert resp.status_code == 413 and "HUMWATCH_MAX_BATCH_BYTES" in resp.json()["detail"]
    assert table_counts(limited) == before


def test_the_batch_needs_a_write_key(make_client):
    client = make_client(api_keys=API_KEY, read_keys="read-key-0123456789abc")
    client.headers["Authorization"] = f"Bearer {API_KEY}"
    enroll(client, "fan-01")
    items, audio = [item("fan-01", at(100), "a")], {"a": GOOD}
    assert post_batch(client, items, audio, headers={"Authorization": ""}).status_code == 401
    read = {"Authorization": "Bearer read-key-0123456789abc"}
    assert post_batch(client, items, audio, headers=read).status_code == 403
    assert post_batch(client, items, audio).status_code == 200


def _metric(text: str, name: str, **labels) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        series, _, value = line.rpartition(" ")
        if series == (f"{name}{{{want}}}" if labels else name):
            return float(value)
    return 0.0


def test_the_batch_records_the_single_uploads_metrics(client):
    enroll(client, "fan-01")
    before = client.get("/metrics").text
    items = [item("fan-01", at(100), "a"), item("fan-01", at(101), "b"), item("no", at(1), "a")]
    items.append(item("fan-01", at(100), "a"))
    resp = post_batch(client, items, {"a": wav(1.0, seed=70), "b": b"not audio" * 50})
    assert [o["status"] for o in resp.json()["items"]] == [201, 422, 404, 200]
    bad = client.post(URL, content=b"{}", headers={"Content-Type": "application/json"})
    assert bad.status_code == 415
    after = client.get("/metrics").text

    def grew(name: str, **labels) -> float:
        return _metric(after, name, **labels) - _metric(before, name, **labels)

    assert grew("humwatch_recordings_ingested_total", machine="fan-01") == 1
    assert grew("humwatch_windows_ingested_total", machine="fan-01") == 7
    assert grew("humwatch_audio_ingested_seconds_total", machine="fan-01") == 1.0
    assert grew("humwatch_ingest_rejections_total", reason="unsupported_format") == 1
    assert grew("humwatch_ingest_rejections_total", reason="not_found") == 1
    assert grew("humwatch_ingest_rejections_total", reason="unsupported_media_type") == 1
    for outcome, count in (("stored", 1), ("already_stored", 1), ("refused", 3), ("failed", 0)):
        assert grew("humwatch_batch_uploads_total", outcome=outcome) == count, outcome
    route = {"method": "POST", "route": URL}
    assert grew("humwatch_http_request_duration_seconds_count", **route, status="200") == 1
    assert grew("humwatch_http_request_duration_seconds_count", **route, status="415") == 1


def test_curl_sends_a_batch(db_url, tmp_path):
    """The documented command line, against a real server."""
    from tests.service.live import uvicorn_server

    env = {
        "HUMWATCH_DATABASE_URL": db_url,
        "HUMWATCH_WARM_UP_INDEX": "false",
        "HUMWATCH_PRUNE_INTERVAL_SECONDS": "0",
    }
    (tmp_path / "a.flac").write_bytes(to_bytes(hum(1.0, seed=1), 16000, "FLAC"))
    (tmp_path / "b.wav").write_bytes(wav(1.0, seed=2))
    (tmp_path / "m.json").write_text(
        json.dumps(
            {
                "items": [
                    item("fan-01", "2025-01-06T08:00:00Z", "a", rpm=1480),
                    item("fan-01", "2025-01-06T08:00:01Z", "b", rpm=1480),
                ]
            }
        )
    )
    with uvicorn_server("service.app:create_app", env, tmp_path / "log") as (base, _proc):
        import httpx

        machine = {"id": "fan-01", **FAST_MACHINE}
        assert httpx.post(f"{base}/v1/machines", json=machine).status_code == 201
        out = subprocess.run(
            ["curl", "-sS", "-F", "manifest=@m.json", "-F", "a=@a.flac", "-F", "b=@b.wav"]
            + [f"{base}{URL}"],
            cwd=tmp_path,
            capture_output=True,
            check=True,
            timeout=60,
        )
    body = json.loads(out.stdout)
    assert [o["status"] for o in body["items"]] == [201, 201], body
    assert body["items"][0]["result"]["recording"]["conditions"] == {"rpm": 1480}
    assert body["items"][0]["result"]["recording"]["format"] == "FLAC"


def test_a_database_outage_is_503_with_retry_after_and_writes_nothing(private_postgres):
    pg = private_postgres
    with TestClient(create_app(make_settings(pg.url))) as client:
        enroll(client, "fan-01")
        create_machine(client, "fan-02")  # never sent audio: no snapshot cached
        counts = table_counts(client)
        pg.stop()
        items = [item("fan-01", at(100), "a"), item("fan-02", at(0), "a")]
        items.append(item("fan-01", at(101), "b"))
        resp = post_batch(client, items, {"a": wav(1.0, seed=80), "b": b"not audio" * 50})
        assert resp.status_code == 503, resp.text
        assert resp.headers["retry-after"] == "5"
        assert resp.json()["error"] == "database_unavailable"
        pg.start()
        assert table_counts(client) == counts
        again = post_batch(client, items, {"a": wav(1.0, seed=80), "b": b"not audio" * 50})
        assert [o["status"] for o in again.json()["items"]] == [201, 201, 422]


def test_an_outage_between_a_long_batchs_transactions_answers_per_item(
    private_postgres, monkeypatch
):
    """A batch over MAX_BATCH_AUDIO_SECONDS goes in several transactions: the database lost
    after the first, its items are answered 201 (they are stored) and the others 503."""
    from service.services import ingest_batch

    pg = private_postgres
    monkeypatch.setattr(ingest_batch, "MAX_BATCH_AUDIO_SECONDS", 2.0)
    transaction = ingest_batch._transaction
    calls = []

    def then_lose_the_database(*args):
        transaction(*args)
        calls.append(1)
        if len(calls) == 1:
            pg.stop()  # a real outage, after the first transaction's commit

    monkeypatch.setattr(ingest_batch, "_transaction", then_lose_the_database)
    with TestClient(create_app(make_settings(pg.url))) as client:
        enroll(client, "fan-01")
        counts = table_counts(client)
        items = [item("fan-01", at(100 + i), f"p{i}") for i in range(4)]
        audio = {f"p{i}": wav(1.0, seed=90 + i) for i in range(4)}
        resp = post_batch(client, items, audio)
        assert resp.status_code == 200, resp.text
        assert resp.headers["retry-after"] == "5"
        body = resp.json()
        assert [o["status"] for o in body["items"]] == [201, 201, 503, 503]
        assert body["items"][2]["error"]["error"] == "database_unavailable"
        pg.start()
        after = table_counts(client)
        assert after["recordings"] == counts["recordings"] + 2
        monkeypatch.setattr(ingest_batch, "_transaction", transaction)
        again = post_batch(client, items, audio)
        assert [o["status"] for o in again.json()["items"]] == [200, 200, 201, 201]


def test_started_at_is_required_and_kept_exactly(client):
    enroll(client, "fan-01")
    start = T0 + timedelta(hours=1, microseconds=250_000)
    resp = post_batch(client, [item("fan-01", start.isoformat(), "a")], {"a": GOOD})
    recording = resp.json()["items"][0]["result"]["recording"]
    assert recording["started_at"].startswith("2025-01-06T09:00:00.25")
    assert len(resp.json()["items"][0]["result"]["windows"]) == 7

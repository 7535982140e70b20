"""The ingest path's costs: one write transaction per upload, a machine snapshot cache that is
only a hint (another process's pause, activation or settings change is honoured), FLAC that
is already what we store is stored as it came, and pynndescent warm-up only when needed."""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf
from sqlalchemy import event, select, update

from service.models import Baseline, Machine, RecordingAudio, Window
from tests.service.audio import hum, to_bytes, wav
from tests.service.conftest import at, create_machine, enroll, upload


class StatementLog:
    """Transactions begun and statements run on an engine while it is attached."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.transactions = 0
        self.statements: list[str] = []

    def _begin(self, _conn) -> None:
        self.transactions += 1

    def _statement(self, _conn, _cursor, statement, *_args) -> None:
        self.statements.append(statement.split(None, 1)[0].upper())

    def __enter__(self) -> StatementLog:
        event.listen(self.engine, "begin", self._begin)
        event.listen(self.engine, "before_cursor_execute", self._statement)
        return self

    def __exit__(self, *_exc) -> None:
        event.remove(self.engine, "begin", self._begin)
        event.remove(self.engine, "before_cursor_execute", self._statement)


def _db(client):
    return client.app.state.runtime.db


def test_a_monitoring_upload_is_one_transaction_and_leaves_the_machine_row_alone(client):
    enroll(client, "fan-01")
    upload(client, "fan-01", wav(1.0, seed=40), started_at=at(30))  # snapshot and model cached
    with _db(client).session() as session:
        updated_before = session.get(Machine, "fan-01").updated_at
    with StatementLog(_db(client).engine) as log:
        resp = upload(client, "fan-01", wav(1.0, seed=41), started_at=at(31))
    assert resp.status_code == 201, resp.text
    assert all(w["score"] is not None for w in resp.json()["windows"])
    assert log.transactions == 1
    assert "UPDATE" not in log.statements
    # the machine locked with the duplicate check, then recording, audio and all windows
    assert log.statements.count("SELECT") == 1
    assert log.statements.count("INSERT") == 3
    with _db(client).session() as session:
        assert session.get(Machine, "fan-01").updated_at == updated_before


def test_enrolling_uploads_still_count_enrolled_seconds(client):
    create_machine(client, "fan-01")
    upload(client, "fan-01", wav(1.0, seed=1), started_at=at(0))
    with StatementLog(_db(client).engine) as log:
        upload(client, "fan-01", wav(1.0, seed=2), started_at=at(1))
    assert log.transactions == 1
    assert client.get("/v1/machines/fan-01").json()["enrolled_seconds"] == 2.0


def test_another_process_pausing_and_resuming_is_honoured(make_client):
    ours, theirs = make_client(), make_client()
    enroll(ours, "fan-01")
    assert upload(ours, "fan-01", wav(1.0, seed=40), started_at=at(30)).status_code == 201
    assert ours.app.state.runtime.machines.get("fan-01").state == "monitoring"

    assert theirs.patch("/v1/machines/fan-01", json={"state": "paused"}).status_code == 200
    refused = upload(ours, "fan-01", wav(1.0, seed=41), started_at=at(31))
    assert refused.status_code == 409 and "paused" in refused.json()["detail"]

    assert theirs.patch("/v1/machines/fan-01", json={"state": "monitoring"}).status_code == 200
    # Our snapshot still says paused: it is re-read, not trusted to refuse.
    assert upload(ours, "fan-01", wav(1.0, seed=41), started_at=at(31)).status_code == 201


def test_an_activation_in_another_process_rescores_with_the_new_version(make_client):
    ours, theirs = make_client(), make_client()
    enroll(ours, "fan-01")
    first = upload(ours, "fan-01", wav(1.0, seed=40), started_at=at(30)).json()
    assert first["baseline_version"] == 1
    rebuilt = theirs.post("/v1/admin/machines/fan-01/baselines", json={"k": 3})
    assert rebuilt.status_code == 201, rebuilt.text
    body = upload(ours, "fan-01", wav(1.0, seed=41), started_at=at(31)).json()
    assert body["baseline_version"] == 2
    with _db(ours).session() as session:
        versions = session.execute(
            select(Window.baseline_version).where(Window.id.in_([w["id"] for w in body["windows"]]))
        ).scalars()
        assert set(versions) == {2}
    # Scored by version 2 itself: the same audio through the other process agrees.
    again = upload(theirs, "fan-01", wav(1.0, seed=41), started_at=at(32)).json()
    assert [w["score"] for w in body["windows"]] == [w["score"] for w in again["windows"]]


def test_detection_settings_changed_elsewhere_are_used(make_client):
    ours, theirs = make_client(), make_client()
    create_machine(ours, "fan-01")
    # A refused upload leaves our snapshot of the machine (0.25 s windows) cached.
    assert upload(ours, "fan-01", wav(0.1), started_at=at(0)).status_code == 422
    assert ours.app.state.runtime.machines.get("fan-01").window_seconds == 0.25
    changed = theirs.patch("/v1/machines/fan-01", json={"window_seconds": 0.5, "hop_seconds": 0.5})
    assert changed.status_code == 200, changed.text
    body = upload(ours, "fan-01", wav(1.0, seed=3), started_at=at(1)).json()
    assert len(body["windows"]) == 2  # 1 s in 0.5 s windows every 0.5 s, not 7 of 0.25 s


def _stored_audio(client) -> bytes:
    with _db(client).session() as session:
        return session.execute(select(RecordingAudio.data)).scalars().one()


def test_mono_16_bit_flac_at_the_model_rate_is_stored_as_sent(client):
    create_machine(client, "fan-01")
    body = to_bytes(hum(1.0, seed=5), fmt="FLAC")
    resp = upload(client, "fan-01", body, content_type="audio/flac", started_at=at(0))
    assert resp.status_code == 201, resp.text
    assert _stored_audio(client) == body


def test_other_audio_is_stored_as_16_bit_mono_flac_of_the_model_waveform(client):
    create_machine(client, "fan-01")
    samples = hum(1.0, seed=5, channels=3)
    resp = upload(client, "fan-01", to_bytes(samples), started_at=at(0))
    assert resp.status_code == 201, resp.text
    stored, rate = sf.read(io.BytesIO(_stored_audio(client)), dtype="int16")
    info = sf.info(io.BytesIO(_stored_audio(client)))
    assert (info.format, info.subtype, info.channels, rate) == ("FLAC", "PCM_16", 1, 16000)
    pcm = sf.read(io.BytesIO(to_bytes(samples)), dtype="int16")[0]
    expected = np.round(pcm.astype(np.float64).mean(axis=1)).astype(np.int16)
    assert np.abs(stored.astype(int) - expected.astype(int)).max() <= 1


def test_warm_up_is_skipped_without_a_large_baseline(make_client, monkeypatch):
    import detectors.index

    calls = []
    monkeypatch.setattr(detectors.index, "warm_up_nndescent", lambda: calls.append(1))
    client = make_client(warm_up_index=True)
    runtime = client.app.state.runtime
    assert runtime.index_warm.is_set() and calls == []
    assert client.get("/readyz").json()["checks"]["index"] == "ok"

    enroll(client, "fan-01")
    with runtime.db.session() as session:
        # Pretend version 1 were as large as the approximate index's threshold (a bulk
        # UPDATE: the ORM refuses to change a stored baseline).
        session.execute(
            update(Baseline.__table__).values(n_vectors=detectors.index.APPROXIMATE_MIN_SIZE)
        )
    second = make_client(warm_up_index=True)
    assert second.app.state.runtime.index_warm.wait(10)
    assert calls == [1]
    assert make_client(warm_up_index=False).app.state.runtime.index_warm.is_set()
    assert calls == [1]


def test_a_duplicate_is_found_under_the_lock_and_nothing_is_written(client):
    enroll(client, "fan-01")
    data = wav(1.0, seed=40)
    first = upload(client, "fan-01", data, started_at=at(30))
    with StatementLog(_db(client).engine) as log:
        again = upload(client, "fan-01", data, started_at=at(30))
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["recording"]["id"] == first.json()["recording"]["id"]
    assert [w["id"] for w in again.json()["windows"]] == [w["id"] for w in first.json()["windows"]]
    assert "INSERT" not in log.statements and log.transactions == 1


def test_windows_keep_their_embeddings(client):
    enroll(client, "fan-01")
    body = upload(client, "fan-01", wav(1.0, seed=7), started_at=at(30)).json()
    with _db(client).session() as session:
        rows = session.execute(
            select(Window.embedding).where(Window.id.in_([w["id"] for w in body["windows"]]))
        ).all()
    assert len(rows) == len(body["windows"]) and all(r.embedding for r in rows)

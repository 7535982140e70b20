"""Agent -> MQTT -> bridge -> JetStream -> workers -> database, on the real brokers.

After every scenario (N workers, a worker killed with SIGKILL mid-chunk, the MQTT broker
restarted while the agent publishes, Postgres restarted while workers commit) every chunk
the agent published is in the database exactly once. Shared brokers are used with names
unique to the test; restarts use private brokers and a private Postgres.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
import soundfile as sf
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from service import migrate
from service.app import create_app
from service.models import Recording
from service.stream import envelope
from service.stream.agent import Agent, AgentOptions, Spool, audio_files, file_chunks
from service.stream.bridge import Bridge, BridgeOptions
from service.stream.topics import Names
from tests.service import brokers
from tests.service.audio import hum, wav
from tests.service.conftest import T0, enroll, fresh_database, make_settings
from tests.service.live import PrivatePostgres

MACHINE = "pump-01"
REPLAY_START = T0 + timedelta(hours=1)


@pytest.fixture
def names():
    names = brokers.unique_names()
    yield names
    asyncio.run(brokers.delete_streams(brokers.SHARED_NATS, names))


@pytest.fixture
def migrated_db(tmp_path):
    """A migrated database (SQLite file or a fresh Postgres schema) workers can open."""
    with fresh_database(tmp_path, create=False) as url:
        migrate.upgrade(url)
        yield url


def monitoring_client(url: str) -> TestClient:
    client = TestClient(create_app(make_settings(url)))
    client.__enter__()
    enroll(client, MACHINE)  # six 1 s clips at T0: monitoring with baseline v1
    return client


def recording_starts(client: TestClient, after=REPLAY_START) -> list:
    with client.app.state.runtime.db.session() as session:
        return list(
            session.execute(
                select(Recording.started_at)
                .where(Recording.machine_id == MACHINE, Recording.started_at >= after)
                .order_by(Recording.started_at)
            ).scalars()
        )


def wait_for(predicate, timeout: float, what: str, detail=None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    extra = f" ({detail()})" if detail else ""
    raise AssertionError(f"timed out after {timeout} s waiting for {what}{extra}")


def stored_so_far(client: TestClient, n: int):
    """For a timeout's message: which of the n expected chunks are missing."""

    def detail() -> str:
        starts = set(recording_starts(client))
        missing = [i for i, at in enumerate(expected_starts(n)) if at not in starts]
        return f"{len(starts)} stored; missing chunks {missing}"

    return detail


def replay_files(directory: Path, seconds: int, seed: int = 3) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "replay.wav"
    sf.write(path, hum(float(seconds), seed=seed), 16000, subtype="PCM_16")
    return audio_files([directory])


def expected_starts(n: int) -> list:
    return [REPLAY_START + timedelta(seconds=i) for i in range(n)]


def assert_exactly_once(client: TestClient, n: int) -> None:
    starts = recording_starts(client)
    assert len(starts) == len(set(starts)) == n, (
        f"{len(starts)} stored, {len(set(starts))} distinct"
    )
    assert starts == expected_starts(n)


@contextlib.contextmanager
def bridge_running(mqtt_url: str, nats_url: str, names: Names):
    bridge = Bridge(BridgeOptions(mqtt_url, nats_url, names, client_id=f"bridge-{names.consumer}"))
    with brokers.running_thread_loop() as loop:
        future = asyncio.run_coroutine_threadsafe(bridge.run(), loop)
        assert bridge.connected.wait(10), "bridge did not connect to MQTT"
        try:
            yield bridge
        finally:
            bridge.stopping.set()
            future.result(15)


def agent_options(mqtt_url: str, names: Names, tmp_path: Path, **kw) -> AgentOptions:
    return AgentOptions(
        mqtt_url=mqtt_url,
        machine=MACHINE,
        site="plant-a",
        names=names,
        chunk_seconds=1.0,
        buffer_dir=tmp_path / "spool",
        min_tail_seconds=1.0,
        conditions={"rpm": "1480"},
        **kw,
    )


def run_agent(options: AgentOptions, files: list[Path]) -> dict:
    return Agent(options).run(file_chunks(files, options, REPLAY_START), forever=False)


def test_n_workers_store_every_chunk_once(migrated_db, names, tmp_path):
    client = monitoring_client(migrated_db)
    workers = [brokers.worker_process(migrated_db, brokers.SHARED_NATS, names) for _ in range(2)]
    try:
        with bridge_running(brokers.SHARED_MQTT, brokers.SHARED_NATS, names) as bridge:
            # Both workers pulling before the chunks come (one may otherwise take them all
            # while the other is still starting, and be stopped before it has begun).
            wait_for(lambda: waiting_pulls(names) >= 2, 120, "both workers pulling")
            summary = run_agent(
                agent_options(brokers.SHARED_MQTT, names, tmp_path),
                replay_files(tmp_path / "in", 24),
            )
            assert summary["chunks"] == summary["acked"] == 24 and summary["buffered"] == 0
            wait_for(
                lambda: len(recording_starts(client)) >= 24,
                120,
                "24 stored chunks",
                stored_so_far(client, 24),
            )
            assert bridge.counts["forwarded"] == 24
    finally:
        outputs = [brokers.stop_process(w) for w in workers]
    assert_exactly_once(client, 24)
    with client.app.state.runtime.db.session() as session:
        rec = session.execute(
            select(Recording).where(Recording.started_at == REPLAY_START)
        ).scalar_one()
        assert rec.conditions == {"rpm": 1480}  # validated as over HTTP: a number
        assert (rec.format, rec.channels, rec.sample_rate) == ("FLAC", 1, 16000)
    counts = [envelope_counts(out) for out, _ in outputs]
    assert sum(c["stored"] for c in counts) == 24, outputs
    assert all(c["dead_lettered"] == 0 for c in counts)
    client.__exit__(None, None, None)


def envelope_counts(stdout: str) -> dict:
    import json

    return json.loads(stdout.strip().splitlines()[-1])


def test_a_worker_killed_mid_chunk_loses_nothing(migrated_db, names, tmp_path):
    from service.repositories import machines as machines_repo

    client = monitoring_client(migrated_db)
    first = brokers.worker_process(migrated_db, brokers.SHARED_NATS, names, ack_wait=2)
    second = None
    try:
        with bridge_running(brokers.SHARED_MQTT, brokers.SHARED_NATS, names):
            wait_for(lambda: consumer_info(names) is not None, 60, "the worker pulling")
            # The machine row locked here (on SQLite: the database's write lock): the worker
            # fetches chunks and waits in its transaction, holding them unacknowledged.
            with client.app.state.runtime.db.session() as session:
                machines_repo.get(session, MACHINE, for_update=True)
                summary = run_agent(
                    agent_options(brokers.SHARED_MQTT, names, tmp_path),
                    replay_files(tmp_path / "in", 16),
                )
                assert summary["acked"] == 16
                wait_for(lambda: ack_pending(names) > 0, 60, "a chunk in the worker's hands")
                os.kill(first.pid, signal.SIGKILL)  # mid-transaction, chunks not acked
                first.wait(10)
            stored_at_kill = len(recording_starts(client))
            assert stored_at_kill < 16
            second = brokers.worker_process(migrated_db, brokers.SHARED_NATS, names, ack_wait=2)
            wait_for(
                lambda: len(recording_starts(client)) >= 16,
                120,
                "the other chunks",
                stored_so_far(client, 16),
            )
            wait_for(lambda: ack_pending(names) == 0 and pending(names) == 0, 20, "empty queue")
    finally:
        for proc in (first, second):
            if proc is not None:
                out, err = brokers.stop_process(proc)
    counts = envelope_counts(out)
    assert counts["dead_lettered"] == 0
    assert_exactly_once(client, 16)
    client.__exit__(None, None, None)


def consumer_info(names: Names):
    async def info():
        import nats

        nc = await nats.connect(brokers.SHARED_NATS)
        try:
            return await nc.jetstream().consumer_info(names.stream, names.consumer)
        finally:
            await nc.close()

    try:
        return asyncio.run(info())
    except Exception:  # noqa: BLE001 - the consumer may not exist yet
        return None


def waiting_pulls(names: Names) -> int:
    info = consumer_info(names)
    return info.num_waiting if info else 0


def ack_pending(names: Names) -> int:
    info = consumer_info(names)
    return info.num_ack_pending if info else 0


def pending(names: Names) -> int:
    info = consumer_info(names)
    return info.num_pending if info else 0


def test_a_broker_restart_while_the_agent_publishes_loses_nothing(migrated_db, names, tmp_path):
    client = monitoring_client(migrated_db)
    mosquitto = brokers.Mosquitto(tmp_path / "mosquitto")
    mosquitto.start()
    worker = brokers.worker_process(migrated_db, brokers.SHARED_NATS, names)
    try:
        with bridge_running(mosquitto.url, brokers.SHARED_NATS, names):
            options = agent_options(mosquitto.url, names, tmp_path, pace=8.0)
            agent = Agent(options)
            files = replay_files(tmp_path / "in", 30)
            result: dict = {}
            thread = threading.Thread(
                target=lambda: result.update(
                    agent.run(file_chunks(files, options, REPLAY_START), forever=False)
                )
            )
            thread.start()
            wait_for(lambda: agent.counts["acked"] >= 5, 30, "the first chunks acked")
            mosquitto.stop()
            wait_for(lambda: len(agent.spool) >= 5, 30, "chunks buffered on disk")
            mosquitto.start()
            thread.join(60)
            assert not thread.is_alive()
            assert result["chunks"] == 30 and result["buffered"] == 0 and result["dropped"] == 0
            wait_for(
                lambda: len(recording_starts(client)) >= 30,
                120,  # the workers' share of 2 loaded cores
                "30 stored chunks",
                stored_so_far(client, 30),
            )
    finally:
        brokers.stop_process(worker)
        mosquitto.stop()
    assert_exactly_once(client, 30)
    client.__exit__(None, None, None)


def test_a_postgres_restart_while_workers_commit_loses_nothing(names, tmp_path):
    pg = PrivatePostgres()
    workers, client = [], None
    try:
        migrate.upgrade(pg.url)
        client = monitoring_client(pg.url)
        workers = [brokers.worker_process(pg.url, brokers.SHARED_NATS, names) for _ in range(2)]
        with bridge_running(brokers.SHARED_MQTT, brokers.SHARED_NATS, names):
            options = agent_options(brokers.SHARED_MQTT, names, tmp_path, pace=4.0)
            files = replay_files(tmp_path / "in", 20)
            result: dict = {}
            thread = threading.Thread(target=lambda: result.update(run_agent(options, files)))
            thread.start()
            wait_for(lambda: len(recording_starts(client)) >= 3, 60, "workers committing")
            pg.restart()  # fast shutdown: open transactions are cut, connections dropped
            thread.join(60)
            assert result["acked"] == 20
            wait_for(lambda: stored_after_restart(pg) >= 20, 120, "20 stored chunks")
        outputs = [brokers.stop_process(proc) for proc in workers]
        workers = []
        client.__exit__(None, None, None)
        client = TestClient(create_app(make_settings(pg.url)))
        assert_exactly_once(client, 20)
        assert all(envelope_counts(out)["dead_lettered"] == 0 for out, _ in outputs)
    finally:
        for proc in workers:
            brokers.stop_process(proc)
        pg.destroy()


def stored_after_restart(pg) -> int:
    """Recordings of the replay, read on a fresh connection (the old pool died with it)."""
    from sqlalchemy import create_engine
    from sqlalchemy.exc import OperationalError

    engine = create_engine(pg.url)
    try:
        with engine.connect() as conn:
            return conn.execute(
                select(func.count())
                .select_from(Recording)
                .where(Recording.started_at >= REPLAY_START)
            ).scalar_one()
    except OperationalError:  # still restarting
        return 0
    finally:
        engine.dispose()


def test_poison_chunks_are_dead_lettered_with_their_reason_and_counted(migrated_db, names):
    from service import metrics
    from service.stream.worker import Worker, WorkerOptions, build_runtime

    client = monitoring_client(migrated_db)
    good = envelope.Chunk(MACHINE, REPLAY_START, wav(1.0, seed=9), site="plant-a")
    bad_audio = envelope.Chunk(MACHINE, REPLAY_START, b"RIFF....WAVEnot audio", site="plant-a")
    unknown = envelope.Chunk("nobody", REPLAY_START, wav(1.0, seed=9), site="plant-a")
    bad_conditions = envelope.Chunk(
        MACHINE, REPLAY_START, wav(1.0, seed=10), conditions={"1bad": "x"}
    )
    payloads = [
        envelope.encode(bad_audio),
        b"garbage",
        envelope.encode(unknown),
        envelope.encode(bad_conditions),
        envelope.encode(good),
        envelope.encode(good),  # the same chunk again (another message id): stored once
    ]
    before = {
        reason: metrics.QUEUE_DEAD_LETTERS.labels(reason)._value.get()
        for reason in ("truncated_audio", "bad_message", "not_found", "invalid_input")
    }

    async def publish_and_work():
        import nats

        nc = await nats.connect(brokers.SHARED_NATS)
        js = nc.jetstream()
        from service.stream import jetstream

        await jetstream.ensure_streams(js, names)
        for i, payload in enumerate(payloads):
            await js.publish(
                names.audio_subject("plant-a", MACHINE), payload, headers={"Nats-Msg-Id": str(i)}
            )
        settings = make_settings(migrated_db)
        worker = Worker(
            build_runtime(settings),
            WorkerOptions(brokers.SHARED_NATS, names, exit_when_idle=2.0, fetch_timeout=0.5),
        )
        counts = await worker.run()
        dead = await js.pull_subscribe(names.dead_subjects, stream=names.dead_stream)
        msgs = await dead.fetch(10, timeout=5)
        await nc.close()
        return counts, msgs

    counts, dead = asyncio.run(publish_and_work())
    assert counts == {"stored": 1, "duplicate": 1, "dead_lettered": 4, "retried": 0}
    reasons = sorted(m.headers["Humwatch-Reason"] for m in dead)
    assert reasons == ["bad_message", "invalid_input", "not_found", "truncated_audio"]
    by_reason = {m.headers["Humwatch-Reason"]: m for m in dead}
    assert "nobody" in by_reason["not_found"].headers["Humwatch-Error"]
    assert by_reason["bad_message"].data == b"garbage"  # kept as it came, for a person
    for reason, value in before.items():
        assert metrics.QUEUE_DEAD_LETTERS.labels(reason)._value.get() == value + 1
    assert recording_starts(client) == [REPLAY_START]
    client.__exit__(None, None, None)


def test_the_disk_buffer_is_bounded_drops_oldest_and_drains_when_the_broker_returns(
    names, tmp_path
):
    import paho.mqtt.client as mqtt

    mosquitto = brokers.Mosquitto(tmp_path / "mosquitto")  # not started yet: unreachable
    files = replay_files(tmp_path / "in", 10)
    one_chunk = len(envelope.encode(envelope.Chunk(MACHINE, REPLAY_START, b"x" * 32000))) * 1.3
    options = agent_options(
        mosquitto.url, names, tmp_path, pace=50.0, buffer_bytes=int(3 * one_chunk)
    )
    agent = Agent(options)
    result: dict = {}
    thread = threading.Thread(
        target=lambda: result.update(
            agent.run(file_chunks(files, options, REPLAY_START), forever=False)
        )
    )
    thread.start()
    wait_for(lambda: agent.counts["chunks"] == 10, 30, "all chunks produced")
    kept = sorted(agent.spool.files)
    assert agent.spool.total_bytes <= options.buffer_bytes
    assert agent.spool.dropped == 10 - len(kept) and 1 <= len(kept) < 10
    assert kept == list(range(10 - len(kept), 10))  # the newest stay, the oldest went

    received: list[dict] = []
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"sub-{names.consumer}")
    sub.on_message = lambda _c, _u, m: received.append(envelope.peek_header(m.payload))
    mosquitto.start()
    try:
        sub.connect("127.0.0.1", mosquitto.port)
        sub.subscribe(names.mqtt_subscription, qos=1)
        sub.loop_start()
        time.sleep(0.5)  # subscribed before the agent's retry reaches the broker
        thread.join(30)
        assert not thread.is_alive()
        wait_for(lambda: len(received) >= len(kept), 10, "the buffered chunks")
    finally:
        sub.loop_stop()
        mosquitto.stop()
    assert result["buffered"] == 0 and result["dropped"] == 10 - len(kept)
    assert sorted(h["seq"] for h in received) == kept
    assert Spool(options.buffer_dir, options.buffer_bytes).dropped == 10 - len(kept)  # persisted


def test_replayed_chunks_are_consecutive_mono_flac(tmp_path):
    files = replay_files(tmp_path / "in", 5)
    sf.write(tmp_path / "in" / "replay2.wav", hum(2.5, seed=4, channels=2), 16000)
    options = AgentOptions(mqtt_url="mqtt://x", machine=MACHINE, chunk_seconds=2.0)
    chunks = list(file_chunks(audio_files([tmp_path / "in"]), options, REPLAY_START))
    assert [c[0] for c in chunks] == [REPLAY_START + timedelta(seconds=2 * i) for i in range(3)]
    assert all(pcm.size == 32000 for _, pcm in chunks)  # 7.5 s: three 2 s chunks, 1.5 s left
    # A 16-bit mono file at the model rate goes out sample for sample.
    original = sf.read(files[0], dtype="int16")[0]
    assert (chunks[0][1] == original[:32000]).all()
    from service.stream.agent import encode_flac

    info = sf.info(__import__("io").BytesIO(encode_flac(chunks[0][1], 16000)))
    assert (info.format, info.subtype, info.channels) == ("FLAC", "PCM_16", 1)

"""Batched ingest (``service.services.ingest_batch``, the worker's path) stores what one upload
at a time stores: the same chunk sequence both ways, into two fresh databases, gives the same
rows (recordings, audio, windows and their scores and ratios, events and their windows,
health and the event tracker's state, enrollment and learning baselines); refusals,
duplicates, a unique-key race and a database outage are handled as one by one. Runs on
SQLite and on Postgres (HUMWATCH_TEST_DATABASE_URL)."""

from __future__ import annotations

import contextlib
import hashlib
from datetime import timedelta

import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from service.db import Database
from service.errors import ServiceError
from service.models import (
    Baseline,
    BaselineWindow,
    Event,
    EventWindow,
    Machine,
    MachineHealth,
    Recording,
    RecordingAudio,
    Window,
)
from service.runtime import Runtime
from service.schemas import MachineCreate
from service.services import events as events_service
from service.services import ingest, ingest_batch
from service.services.ingest_batch import Item
from service.services.machines import create_machine
from tests.service.audio import hum, to_bytes, wav
from tests.service.conftest import FAST_MACHINE, T0, fresh_database, make_settings

EVENT_PARAMS = {"open_ratio": 1.3, "resolve_ratio": 1.2}  # as tests/service/test_events.py
HOUR = timedelta(hours=1)


def clip(seed: int, **kw) -> bytes:
    return wav(1.0, seed=seed, **kw)


def setup_fleet(runtime: Runtime) -> None:
    """Identical in both databases, one upload at a time: ``mon`` monitoring with event
    parameters that open events on the faulty clips, ``learn`` monitoring inside its learning
    period, ``enr`` half way through enrollment, ``held`` paused."""
    machines = {
        "mon": {},
        "learn": {"learning_days": 1.0, "run_gap_seconds": 60.0},
        "enr": {},
        "held": {},
    }
    with runtime.db.session() as session:
        for machine_id, fields in machines.items():
            create_machine(session, runtime, MachineCreate(id=machine_id, **FAST_MACHINE, **fields))
        for machine_id in ("mon", "learn"):
            events_service.set_params(session, machine_id, EVENT_PARAMS)
    for machine_id, clips in (("mon", 6), ("learn", 6), ("enr", 3)):
        for i in range(clips):
            result = ingest.ingest(
                runtime,
                machine_id,
                clip(100 + i),
                started_at=T0 + timedelta(seconds=i),
                conditions={},
            )
    assert result.machine_state == "enrolling"
    with runtime.db.session() as session:
        session.get(Machine, "held").state = "paused"


def batches() -> list[list[Item]]:
    """Chunks of several machines interleaved, as workers fetch them (each machine's in
    start-time order): ``enr`` completes enrollment inside the first batch and its next
    chunks are scored by the new baseline; ``learn``'s run of hour 1 ends when hour 2
    starts, inside the second batch (learning activates v2, the chunks after it are scored
    by v2); ``mon`` goes faulty (an anomaly event opens and escalates), silent (a sensor
    event), then normal again; a chunk stored before, a chunk twice in one batch, bad audio,
    an unknown and a paused machine."""

    def at(hours: float, seconds: float) -> object:
        return T0 + hours * HOUR + timedelta(seconds=seconds)

    silent = to_bytes(np.zeros(16000, dtype=np.float32))
    twice = Item("mon", clip(205), at(1, 5), {})
    return [
        [
            Item("enr", clip(103), T0 + timedelta(seconds=3), {}),
            Item("mon", clip(200), at(1, 0), {}),
            Item("enr", clip(104), T0 + timedelta(seconds=4), {}),
            Item("learn", clip(300), at(1, 0), {}),
            Item("enr", clip(105), T0 + timedelta(seconds=5), {}),  # enrollment completes
            Item("mon", clip(201, fault=True), at(1, 1), {}),
            Item("enr", clip(106), T0 + timedelta(seconds=6), {}),  # scored by v1
            Item("mon", clip(100), T0, {}),  # stored before: a duplicate
            Item("enr", clip(107), T0 + timedelta(seconds=7), {}),
        ],
        [
            Item("learn", clip(301), at(1, 1), {}),
            Item("mon", clip(202, fault=True), at(1, 2), {}),
            Item("learn", clip(302), at(1, 2), {}),
            Item("mon", clip(203, fault=True), at(1, 3), {}),
            Item("nobody", clip(9), at(1, 0), {}),  # unknown machine
            Item("learn", clip(303), at(2, 0), {}),  # ends the run of hour 1: v2
            Item("mon", b"RIFF....WAVEnot audio", at(1, 4), {}),  # bad audio
            Item("learn", clip(304), at(2, 1), {}),  # scored by v2
            Item("held", clip(9), at(1, 0), {}),  # paused machine
        ],
        [
            Item("mon", silent, at(1, 4), {}),
            twice,
            twice,  # the same chunk again in one batch
            Item("mon", clip(206), at(1, 6), {"rpm": "1480"}),
            Item("learn", clip(305), at(2, 2), {}),
            Item("mon", clip(207), at(1, 7), {}),
            Item("enr", clip(108), T0 + timedelta(seconds=8), {}),
        ],
    ]


def one_by_one(runtime: Runtime, items: list[Item]) -> list:
    out = []
    # What the batch does: each machine's chunks in start-time order (here they come so).
    for item in items:
        try:
            out.append(
                ingest.ingest(
                    runtime,
                    item.machine_id,
                    item.body,
                    started_at=item.started_at,
                    conditions=item.conditions,
                )
            )
        except Exception as exc:  # noqa: BLE001 - compared with the batch's outcome
            out.append(exc)
    return out


def summary(outcome) -> tuple:
    if isinstance(outcome, ServiceError):
        return ("refused", type(outcome).__name__, outcome.status_code)
    if isinstance(outcome, Exception):
        return ("failed", type(outcome).__name__)
    return ("created" if outcome.created else "duplicate", outcome.machine_state)


def digest(data: bytes | None) -> str | None:
    return None if data is None else hashlib.sha256(data).hexdigest()


def dump(runtime: Runtime) -> dict:
    """Every row the ingest writes, keyed by natural keys (ids differ between databases:
    the order of inserts across machines does), without wall-clock times."""
    with runtime.db.session() as s:
        rec_key = {
            r.id: (r.machine_id, r.started_at.isoformat(), r.sha256)
            for r in s.execute(select(Recording)).scalars()
        }
        win_key = {
            w.id: (w.machine_id, w.start_at.isoformat(), rec_key[w.recording_id])
            for w in s.execute(select(Window)).scalars()
        }
        event_key = {
            e.id: (e.machine_id, e.kind, e.opened_at.isoformat())
            for e in s.execute(select(Event)).scalars()
        }
        baseline_key = {
            b.id: (b.machine_id, b.version) for b in s.execute(select(Baseline)).scalars()
        }
        out: dict = {}
        out["machines"] = {
            m.id: (m.state, m.enrolled_seconds, m.active_baseline_version, m.learning_until)
            for m in s.execute(select(Machine)).scalars()
        }
        out["recordings"] = {
            rec_key[r.id]: (
                r.ended_at,
                r.duration_seconds,
                r.sample_rate,
                r.channels,
                r.format,
                r.size_bytes,
                r.conditions,
                r.is_enrollment,
                r.learned,
            )
            for r in s.execute(select(Recording)).scalars()
        }
        out["audio"] = {
            rec_key[a.recording_id]: (a.sample_rate, a.format, digest(a.data))
            for a in s.execute(select(RecordingAudio)).scalars()
        }
        out["windows"] = {
            win_key[w.id]: (
                w.end_at,
                w.score,
                w.ratio,
                w.is_outlier,
                w.baseline_version,
                digest(w.embedding),
                w.label,
            )
            for w in s.execute(select(Window)).scalars()
        }
        out["baselines"] = {
            baseline_key[b.id]: (
                b.embedder,
                b.k,
                b.threshold,
                b.threshold_method,
                b.n_vectors,
                b.n_recordings,
                b.source_from,
                b.source_to,
                b.source_filter,
                b.note,
                digest(b.artifact),
            )
            for b in s.execute(select(Baseline)).scalars()
        }
        members: dict = {}
        for m in s.execute(select(BaselineWindow)).scalars():
            members.setdefault(baseline_key[m.baseline_id], set()).add(win_key[m.window_id])
        out["baseline_windows"] = members
        out["events"] = {
            event_key[e.id]: (
                e.cause,
                e.state,
                e.severity,
                e.escalated_at,
                e.resolved_at,
                e.n_windows,
                e.n_scored,
                e.mean_ratio,
                e.peak_ratio,
                e.history,
            )
            for e in s.execute(select(Event)).scalars()
        }
        event_members: dict = {}
        for m in s.execute(select(EventWindow)).scalars():
            event_members.setdefault(event_key[m.event_id], set()).add(win_key[m.window_id])
        out["event_windows"] = event_members
        health = {}
        for h in s.execute(select(MachineHealth)).scalars():
            tracker = dict(h.tracker)
            tracker.pop("last_received", None)  # the wall clock of each ingest
            tracker["heard"] = [[*row[:3], win_key.get(row[3])] for row in tracker.get("heard", [])]
            health[h.machine_id] = (
                h.health,
                event_key.get(h.anomaly_event_id),
                event_key.get(h.sensor_event_id),
                h.params,
                tracker,
            )
        out["health"] = health
    return out


@contextlib.contextmanager
def fleet(tmp_path, name: str):
    """A runtime on a fresh database with the fleet set up."""
    directory = tmp_path / name
    directory.mkdir()
    with fresh_database(directory) as url:
        runtime = Runtime(settings=make_settings(url), db=Database(url))
        try:
            setup_fleet(runtime)
            yield runtime
        finally:
            runtime.db.dispose()


@pytest.mark.parametrize("max_audio", [None, 2.5], ids=["one transaction", "cut by audio"])
def test_a_batch_stores_exactly_what_one_upload_at_a_time_stores(tmp_path, monkeypatch, max_audio):
    if max_audio is not None:  # batches cut into transactions of at most ~2.5 s of audio
        monkeypatch.setattr(ingest_batch, "MAX_BATCH_AUDIO_SECONDS", max_audio)
    with fleet(tmp_path, "one") as single, fleet(tmp_path, "batch") as batched:
        expected, got = [], []
        for items in batches():
            expected += [summary(o) for o in one_by_one(single, items)]
            got += [summary(o) for o in ingest_batch.ingest_many(batched, items)]
        assert got == expected
        want, have = dump(single), dump(batched)
        # The sequence did what it is meant to exercise, in both databases.
        assert ("refused", "NotFoundError", 404) in got and ("refused", "ConflictError", 409) in got
        assert sum(1 for o in got if o[0] == "duplicate") == 2
        assert any(o[0] == "failed" or o[0] == "refused" and o[2] == 422 for o in got)
        assert want["machines"]["enr"][0] == "monitoring"
        assert want["machines"]["learn"][2] == 2  # learning activated v2 mid-batch
        windows = want["windows"]
        assert any(v[4] == 2 for k, v in windows.items() if k[0] == "learn")
        assert any(v[1] is not None for k, v in windows.items() if k[0] == "enr")
        kinds = {(k[0], k[1]) for k in want["events"]}
        assert ("mon", "anomaly") in kinds
        for table in want:
            assert have[table] == want[table], table


def test_a_batch_that_fails_in_its_transaction_is_ingested_one_by_one(tmp_path, monkeypatch):
    """A unique-key race (another process stored a chunk after the duplicate check): the
    batch's transaction fails, nothing of it stays, and one by one each chunk is stored or
    recognised."""
    from service.repositories import recordings as recordings_repo

    with fleet(tmp_path, "race") as runtime:
        items = [
            Item("mon", clip(400), T0 + HOUR, {}),
            Item("mon", clip(100), T0, {}),  # stored in the setup
            Item("mon", clip(401), T0 + HOUR + timedelta(seconds=1), {}),
        ]
        monkeypatch.setattr(recordings_repo, "find_many", lambda session, keys: {})
        out = ingest_batch.ingest_many(runtime, items)
        assert [summary(o)[0] for o in out] == ["created", "duplicate", "created"]
        with runtime.db.session() as s:
            starts = s.execute(
                select(Recording.started_at).where(Recording.machine_id == "mon")
            ).scalars()
            starts = sorted(starts)
        assert starts == [T0 + timedelta(seconds=i) for i in range(6)] + [
            T0 + HOUR,
            T0 + HOUR + timedelta(seconds=1),
        ]


def test_a_database_outage_fails_the_whole_batch_and_stores_nothing(tmp_path, monkeypatch):
    from service.repositories import machines as machines_repo

    with fleet(tmp_path, "outage") as runtime:
        before = dump(runtime)
        items = [
            Item("mon", clip(400), T0 + HOUR, {}),
            Item("mon", b"not audio at all", T0 + HOUR, {}),
            Item("learn", clip(401), T0 + HOUR, {}),
        ]

        def lost(*_args, **_kw):
            raise OperationalError("SELECT", {}, Exception("server closed the connection"))

        monkeypatch.setattr(machines_repo, "lock_many", lost)
        out = ingest_batch.ingest_many(runtime, items)
        assert isinstance(out[0], OperationalError) and isinstance(out[2], OperationalError)
        assert not isinstance(out[1], OperationalError)  # bad audio stays refused
        assert dump(runtime) == before


@pytest.mark.parametrize("size", [1, 4])
def test_the_worker_outcomes_of_a_batch(tmp_path, size):
    """``process_batch``: per message stored, duplicate, dead-lettered with the reason."""
    from service.stream import envelope
    from service.stream.worker import process_batch

    with fleet(tmp_path, f"worker{size}") as runtime:
        good = envelope.Chunk("mon", T0 + HOUR, clip(500))
        payloads = [
            envelope.encode(good),
            b"garbage",
            envelope.encode(envelope.Chunk("nobody", T0 + HOUR, clip(500))),
            envelope.encode(good),
            envelope.encode(envelope.Chunk("mon", T0 + 2 * HOUR, to_bytes(hum(0.1)))),
        ]
        outcomes = []
        for i in range(0, len(payloads), size):
            outcomes += process_batch(runtime, [(p, 1) for p in payloads[i : i + size]], 5)
        assert [(o.kind, o.reason) for o in outcomes] == [
            ("stored", None),
            ("dead_lettered", "bad_message"),
            ("dead_lettered", "not_found"),
            ("duplicate", None),
            ("dead_lettered", outcomes[4].reason),
        ]
        assert outcomes[4].reason not in (None, "internal_error")


def test_a_batch_of_one_machine_is_one_transaction_with_one_insert_per_table(tmp_path):
    from tests.service.test_ingest_path import StatementLog

    with fleet(tmp_path, "statements") as runtime:
        ingest.ingest(runtime, "mon", clip(600), started_at=T0 + HOUR, conditions={})
        items = [
            Item("mon", clip(601 + i), T0 + HOUR + timedelta(seconds=1 + i), {}) for i in range(4)
        ]
        with StatementLog(runtime.db.engine) as log:
            out = ingest_batch.ingest_many(runtime, items)
        assert [summary(o)[0] for o in out] == ["created"] * 4
        assert all(w.score is not None for o in out for w in o.windows)
        assert log.transactions == 1
        assert log.count("INSERT INTO RECORDINGS ") == 1
        assert log.count("INSERT INTO RECORDING_AUDIO") == 1
        assert log.count("INSERT INTO WINDOWS") == 1
        assert log.count("UPDATE MACHINE_HEALTH") == 1
        assert sum(1 for s in log.full if "FROM MACHINE_HEALTH" in s) == 1
        assert sum(1 for s in log.full if "FROM MACHINES" in s) == 1  # the lock
        assert len(log.full) <= 8, log.full


def learning_sequence() -> tuple[list[Item], list[list[Item]]]:
    """``learn`` inside its learning period: chunks stored one by one before, then batches
    whose chunks continue runs, start new ones (by a gap, by a client ``run`` label), and
    fall before, between and after recordings stored before the batch."""

    def at(hours: float, seconds: float) -> object:
        return T0 + hours * HOUR + timedelta(seconds=seconds)

    before = [
        Item("learn", clip(700), at(1, 0), {}),
        Item("learn", clip(701), at(1, 1), {}),
        Item("learn", clip(702), at(3, 30), {}),  # lies between the chunks of a later batch
    ]
    later = [
        [
            Item("learn", clip(710), at(1, 2), {}),  # continues the run of hour 1
            Item("learn", clip(711), at(1, 3), {}),
            Item("learn", clip(712), at(2, 0), {}),  # a gap: ends the run of hour 1
            Item("learn", clip(713), at(2, 1), {}),
            Item("learn", clip(714), at(2, 2), {"run": "a"}),  # the client's run: a new one
            Item("learn", clip(715), at(2, 3), {"run": "a"}),
        ],
        [
            Item("learn", clip(720), at(3, 0), {}),  # ends run "a"
            Item("learn", clip(721), at(3, 1), {}),
            Item("learn", clip(722), at(3, 31), {}),  # right after the chunk stored at 3:00:30
            Item("learn", clip(723), at(3, 90), {}),  # a gap after it
            Item("learn", clip(724), at(4, 0), {}),
        ],
    ]
    return before, later


def test_batches_inside_the_learning_period_store_what_one_at_a_time_stores(tmp_path, monkeypatch):
    """Only a chunk that starts a new run after one learning may admit goes through the
    single upload's path; the chunks that continue a run are written with the batch, and the
    rows are the same as one by one."""
    before, later = learning_sequence()
    stores = []
    real_store = ingest._store
    monkeypatch.setattr(
        ingest,
        "_store",
        lambda session, runtime, machine, *a: (
            stores.append(a[4]) or real_store(session, runtime, machine, *a)
        ),
    )
    with fleet(tmp_path, "one") as single, fleet(tmp_path, "batch") as batched:
        for runtime in (single, batched):
            one_by_one(runtime, before)
        expected, got, single_path = [], [], []
        for items in later:
            expected += [summary(o) for o in one_by_one(single, items)]
            stores.clear()
            got += [summary(o) for o in ingest_batch.ingest_many(batched, items)]
            single_path.append(list(stores))
        assert got == expected == [("created", "monitoring")] * 11
        want, have = dump(single), dump(batched)
        assert want["machines"]["learn"][2] >= 3  # learning admitted runs before and here
        for table in want:
            assert have[table] == want[table], table
        # Through the single path: the chunks that start a run after one not yet learned
        # (2:00:00 after the hour-1 run, "a" at 2:00:02, 3:00:00 after "a", 4:00:00); not
        # 1:00:02 (continues a stored run), 3:00:31 (continues the chunk stored at 3:00:30),
        # 3:01:30 (58 s after the end of 3:00:31-3:00:32, the run goes on).
        starts = [[t - T0 for t in batch] for batch in single_path]
        assert starts == [
            [2 * HOUR, 2 * HOUR + timedelta(seconds=2)],
            [3 * HOUR, 4 * HOUR],
        ]


def test_add_many_stores_what_add_stores_row_for_row(tmp_path):
    """The batch's recording and audio inserts (Postgres: one statement of one array per
    column) store, column for column and in the JSON text, what the one-row inserts store."""
    from sqlalchemy import text

    from service.repositories import recordings as recordings_repo

    assert set(recordings_repo._PG_RECORDING_TYPES) == set(recordings_repo._RECORDING_COLUMNS)
    conditions = [{}, {"rpm": 1480.0, "load": "high"}, {"nested": {"a": [1, 2]}, "é": "ü"}]

    def rows(machine_id: str) -> list[Recording]:
        return [
            Recording(
                machine_id=machine_id,
                started_at=T0 + timedelta(seconds=10 * i),
                ended_at=T0 + timedelta(seconds=10 * i + 9.5),
                duration_seconds=9.5,
                sample_rate=16000 + i,
                channels=1 + i,
                format="FLAC",
                sha256=f"{i:064x}",
                size_bytes=123_456_789_012 + i,
                conditions=c,
                is_enrollment=i == 1,
                created_at=T0 + timedelta(days=1, microseconds=i),
            )
            for i, c in enumerate(conditions)
        ]

    with fleet(tmp_path, "add-many") as runtime:
        with runtime.db.session() as session:
            one = [recordings_repo.add(session, r) for r in rows("mon")]
            many = recordings_repo.add_many(session, rows("learn"))
            for recordings in (one, many):
                recordings_repo.add_audio_many(
                    session,
                    [(r.id, r.sample_rate, "FLAC", bytes([r.channels]) * 9) for r in recordings],
                )
            assert len({r.id for r in one + list(many)}) == 6
        with runtime.db.session() as session:
            raw = (
                "r.conditions::text" if runtime.db.url.startswith("postgresql") else "r.conditions"
            )
            stored = {
                machine: session.execute(
                    text(
                        "SELECT r.started_at, r.ended_at, r.duration_seconds, r.sample_rate, "
                        f"r.channels, r.format, r.sha256, r.size_bytes, {raw}, r.is_enrollment, "
                        "r.learned, r.created_at, a.sample_rate, a.format, a.data "
                        "FROM recordings r JOIN recording_audio a ON a.recording_id = r.id "
                        "WHERE r.machine_id = :m AND r.size_bytes > 123456789000 "
                        "ORDER BY r.started_at"
                    ),
                    {"m": machine},
                ).all()
                for machine in ("mon", "learn")
            }
        assert len(stored["mon"]) == 3
        assert stored["mon"] == stored["learn"]
        with runtime.db.session() as session:
            naive = rows("enr")
            naive[2].started_at = naive[2].started_at.replace(tzinfo=None)
            with pytest.raises(Exception, match="naive datetime"):
                recordings_repo.add_many(session, naive)

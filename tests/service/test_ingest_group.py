"""Group commit (``service.services.ingest_group``): single uploads that wait for their write
transaction together share one, and store exactly what one upload at a time stores; a
refusal fails only its machine's uploads, an outage every upload of the transaction, and a
lone upload keeps its own transaction. The uploads come from real threads, held at the
transaction until all have arrived so that the grouping is certain. Runs on SQLite and on
Postgres (HUMWATCH_TEST_DATABASE_URL)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import timedelta

import pytest
from prometheus_client import REGISTRY
from sqlalchemy.exc import OperationalError

from service.errors import ConflictError
from service.models import Machine
from service.services import ingest_group
from service.services.ingest_batch import Item
from tests.service.test_ingest_batch import HOUR, T0, batches, clip, dump, fleet, one_by_one
from tests.service.test_ingest_batch import summary as summary_of


def shared_transactions() -> float:
    """Transactions the group commit has written in this process (its histogram's count)."""
    return REGISTRY.get_sample_value("humwatch_ingest_group_uploads_count") or 0.0


def concurrently(runtime, items: list[Item], before_release=None) -> list:
    """Each item's outcome through ``ingest_group.ingest``, one thread per item, all held at
    the write transaction until every upload has been prepared (or refused before it)."""
    group = runtime.ingest_group
    out: list = [None] * len(items)
    done = threading.Semaphore(0)
    finished_early = [0]  # refused before reaching the transaction

    def run(i: int, item: Item) -> None:
        try:
            out[i] = ingest_group.ingest(
                runtime,
                item.machine_id,
                item.body,
                started_at=item.started_at,
                conditions=item.conditions,
            )
        except Exception as exc:  # noqa: BLE001 - the outcome under test
            out[i] = exc
        done.release()

    threads = [threading.Thread(target=run, args=(i, it)) for i, it in enumerate(items)]
    with group._writing:  # no transaction starts until all have arrived
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while len(group._waiting) + finished_early[0] < len(items):
            if done.acquire(timeout=0.01):
                finished_early[0] += 1
            assert time.monotonic() < deadline, "uploads did not reach the transaction"
        if before_release is not None:
            before_release()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    return out


def grouped_batches() -> list[list[Item]]:
    """``test_ingest_batch``'s batches without the machines that enroll or learn (those keep
    a transaction of their own: ``test_uploads_that_may_fit_a_baseline_keep_their_own``)."""
    return [[it for it in items if it.machine_id not in ("enr", "learn")] for items in batches()]


def test_concurrent_uploads_share_a_transaction_and_store_what_one_at_a_time_stores(tmp_path):
    with fleet(tmp_path, "one") as single, fleet(tmp_path, "group") as grouped:
        expected, got = Counter(), Counter()
        transactions = []
        for items in grouped_batches():
            expected.update(summary_of(o) for o in one_by_one(single, items))
            before = shared_transactions()
            got.update(summary_of(o) for o in concurrently(grouped, items))
            transactions.append(shared_transactions() - before)
        # Outcomes match as a multiset: threads arrive in any order, and of the chunk sent
        # twice at once either copy may be the one stored.
        assert got == expected
        assert transactions == [1, 1, 1]  # each batch's uploads in one shared transaction
        assert expected[("refused", "NotFoundError", 404)] == 1
        assert expected[("refused", "ConflictError", 409)] == 1
        assert sum(n for o, n in expected.items() if o[0] == "duplicate") == 2
        want, have = dump(single), dump(grouped)
        assert ("mon", "anomaly") in {(k[0], k[1]) for k in want["events"]}
        for table in want:
            assert have[table] == want[table], table


def test_uploads_that_may_fit_a_baseline_keep_their_own_transaction(tmp_path):
    """An enrolling machine's upload (the last one builds baseline v1) and one inside the
    learning period (a run's end builds the next version) do not wait for the shared
    transaction: they are written while it is held."""
    with fleet(tmp_path, "own") as runtime:
        group = runtime.ingest_group
        before = shared_transactions()
        items = [
            Item("enr", clip(103), T0 + timedelta(seconds=3), {}),
            Item("learn", clip(300), T0 + HOUR, {}),
        ]
        out: list = []

        def send() -> None:
            for it in items:
                out.append(
                    ingest_group.ingest(
                        runtime, it.machine_id, it.body, started_at=it.started_at, conditions={}
                    )
                )

        with group._writing:  # a shared transaction "running" the whole time
            sender = threading.Thread(target=send)
            sender.start()
            sender.join(60)
            waited = sender.is_alive()
        sender.join(60)
        assert not waited, "an upload that may fit a baseline waited for the shared transaction"
        assert [o.created for o in out] == [True, True]
        assert shared_transactions() == before and not group._waiting
        from service.services import ingest

        def may_fit(machine_id: str, at) -> bool:
            upload = ingest.prepare_upload(runtime, machine_id, clip(990), at, {})
            return ingest_group.may_build_a_baseline(upload)

        assert [may_fit(m, T0 + 2 * HOUR) for m in ("enr", "learn", "mon")] == [True, True, False]
        assert not may_fit("learn", T0 + 48 * HOUR)  # after its learning period: grouped


def end_learning(runtime, machine_id: str) -> None:
    """Close the machine's learning period: its uploads join the shared transactions."""
    with runtime.db.session() as session:
        session.get(Machine, machine_id).learning_until = None
    runtime.machines.discard(machine_id)


def test_a_machine_paused_while_its_upload_waited_fails_alone(tmp_path):
    with fleet(tmp_path, "paused") as runtime:
        end_learning(runtime, "learn")
        items = [
            Item("mon", clip(600), T0 + HOUR, {}),
            Item("learn", clip(601), T0 + HOUR, {}),
            Item("mon", clip(602), T0 + HOUR + timedelta(seconds=1), {}),
        ]

        def pause_learn() -> None:
            with runtime.db.session() as session:
                session.get(Machine, "learn").state = "paused"

        out = concurrently(runtime, items, before_release=pause_learn)
        assert isinstance(out[1], ConflictError) and out[1].status_code == 409
        assert out[0].created and out[2].created
        assert out[0].recording.id != out[2].recording.id


def test_the_same_upload_twice_at_once_is_stored_once(tmp_path):
    with fleet(tmp_path, "twice") as runtime:
        item = Item("mon", clip(700), T0 + HOUR, {})
        before = shared_transactions()
        out = concurrently(runtime, [item] * 4)
        assert shared_transactions() - before == 1
        assert sorted(o.created for o in out) == [False, False, False, True]
        assert len({o.recording.id for o in out}) == 1
        assert len({tuple(w.id for w in o.windows) for o in out}) == 1


def test_a_database_outage_fails_every_upload_of_the_transaction_and_stores_nothing(
    tmp_path, monkeypatch
):
    from service.repositories import machines as machines_repo

    with fleet(tmp_path, "outage") as runtime:
        end_learning(runtime, "learn")
        before = dump(runtime)

        def lost(*_args, **_kw):
            raise OperationalError("SELECT", {}, Exception("server closed the connection"))

        monkeypatch.setattr(machines_repo, "lock_many", lost)
        items = [
            Item("mon", clip(800), T0 + HOUR, {}),
            Item("learn", clip(801), T0 + HOUR, {}),
            Item("mon", b"not audio at all", T0 + HOUR, {}),
        ]
        out = concurrently(runtime, items)
        assert isinstance(out[0], OperationalError) and isinstance(out[1], OperationalError)
        assert not isinstance(out[2], OperationalError)  # bad audio stays refused
        assert dump(runtime) == before


@pytest.mark.parametrize("group_commit", [True, False])
def test_a_lone_upload_has_a_transaction_of_its_own(tmp_path, monkeypatch, group_commit):
    from service.services import ingest, ingest_batch

    with fleet(tmp_path, "lone") as runtime:
        runtime.settings.group_commit = group_commit
        stored = []
        monkeypatch.setattr(ingest, "store_upload", _spy(ingest.store_upload, stored))
        monkeypatch.setattr(ingest_batch, "_transaction", _refuse)
        before = shared_transactions()
        result = ingest_group.ingest(runtime, "mon", clip(900), started_at=T0 + HOUR, conditions={})
        assert result.created and len(stored) == 1
        assert shared_transactions() - before == (1 if group_commit else 0)


def _spy(fn, calls: list):
    def wrapper(*args, **kwargs):
        calls.append(args)
        return fn(*args, **kwargs)

    return wrapper


def _refuse(*_args, **_kwargs):
    raise AssertionError("a lone upload went through the batch transaction")


def test_in_the_learning_period_only_an_upload_that_may_start_a_run_goes_alone(tmp_path):
    """Inside the learning period a fit happens only where a run ends: an upload that
    continues the run of the machine's latest upload joins the shared transaction, one after
    a gap longer than the machine's (60 s) keeps its own."""
    with fleet(tmp_path, "learning") as runtime:
        group = runtime.ingest_group

        def send(seconds: float, seed: int):
            return ingest_group.ingest(
                runtime,
                "learn",
                clip(seed),
                started_at=T0 + HOUR + timedelta(seconds=seconds),
                conditions={},
            )

        assert send(0, 1000).created  # the first this process sees: alone
        before = shared_transactions()
        out: list = []
        with group._writing:
            waiter = threading.Thread(target=lambda: out.append(send(1, 1001)))
            waiter.start()
            deadline = time.monotonic() + 60
            while not group._waiting:  # it continues the run: it waits to share
                assert waiter.is_alive() and time.monotonic() < deadline
                time.sleep(0.01)
            alone = threading.Thread(target=lambda: out.append(send(3600, 1002)))
            alone.start()
            alone.join(60)  # a new run, an hour later: written while the shared one is held
            assert not alone.is_alive(), "an upload that starts a run waited to share"
        waiter.join(60)
        assert not waiter.is_alive()
        assert [o.created for o in out] == [True, True]
        assert shared_transactions() - before == 1

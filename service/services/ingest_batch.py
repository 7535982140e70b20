"""Batched ingest: several uploads (the chunks a worker fetched) in one write transaction.

The same validation, limits, idempotency (machine + sha256 + start time), scoring,
enrollment, learning and event logic as ``service.services.ingest.ingest``, built from the
same pieces; what this does once per batch instead of once per upload: the session and its
transaction, the machine row locks (each machine once, in id order), the duplicate check
(one query for every upload), the health row read and write, the commit and the caches.
Decoding, embedding and scoring run before the transaction, as for one upload.

One machine's uploads go in start-time order. Those that need nothing the uploads before
them wrote are written together (one statement per table per run of them: recordings,
their audio, their windows; then the event logic over their windows in turn). An upload
whose writing reads what came before it (the one that may complete enrollment; inside the
learning period, one that starts a new run after a run learning may admit) first writes the
uploads before it, then goes through the single upload's ``_store``: the database sees the
sequence one-by-one ingest would give, and the result is the same rows
(``tests/service/test_ingest_batch.py`` compares them). Inside the learning period the
uploads that continue a run are written together like the others: whether an upload starts
a new run is decided from the machine's recordings before the batch (read once, when first
needed) and the batch's own, with the rule ``learning.after_ingest`` applies.

A batch holding more than ``MAX_BATCH_AUDIO_SECONDS`` of audio is cut, in the items'
order, into several transactions of that much audio each (memory stays bounded).

Failures: an upload refused before any write (bad audio, unknown, paused or archived
machine, too long) fails alone; the others go on. A failure while writing rolls the whole
transaction back: when the database is unreachable every upload not refused gets that
error (the worker retries them all), anything else (a unique-key race with another
process, an unexpected error) and the batch is ingested again one upload at a time.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from service.db import is_database_outage
from service.errors import ServiceError
from service.models import Machine, Recording
from service.repositories import machines as machines_repo
from service.repositories import recordings as recordings_repo
from service.repositories import windows as windows_repo
from service.runtime import MachineSnapshot, Runtime
from service.services import events as events_service
from service.services import ingest as single
from service.services import learning
from service.services.ingest import IngestResult, Upload
from service.services.ingest_rows import recording_row, stored_windows, window_rows
from service.services.machines import check_writable

log = logging.getLogger("humwatch.ingest")

# Audio prepared and held (waveforms, embeddings) until its transaction commits: a batch of
# long recordings goes in several transactions rather than holding them all at once.
MAX_BATCH_AUDIO_SECONDS = 300.0


@dataclass
class Item:
    """One upload of a batch (``sha256`` of ``body`` when the caller has checked it)."""

    machine_id: str
    body: bytes
    started_at: datetime | None
    conditions: dict[str, Any]
    sha256: str | None = None


Outcome = IngestResult | Exception


@dataclass(frozen=True)
class _Known:
    """A recording of the machine as ``learning.may_end_a_run`` reads it: stored before the
    batch or written (or about to be) by it."""

    started_at: datetime
    ended_at: datetime
    conditions: dict[str, Any]
    is_enrollment: bool
    learned: bool


@dataclass
class _Pending:
    index: int
    upload: Upload
    basis: tuple[str, int | None] | None  # (state, version) the scores are for; None: redo
    enrolling: bool = False


def ingest_many(runtime: Runtime, items: Sequence[Item]) -> list[Outcome]:
    """Store the uploads (or refuse them one by one); per item its ``IngestResult`` or the
    exception ``ingest`` would have raised for it, in the items' order."""
    out: list[Outcome | None] = [None] * len(items)
    copies: dict[int, int] = {}  # index -> index of the same upload earlier in the batch
    first: dict[tuple[str, str, datetime], int] = {}
    ready: list[_Pending] = []
    held = 0.0
    for i, item in enumerate(items):
        try:
            sha256 = item.sha256 or hashlib.sha256(item.body).hexdigest()
            key = (item.machine_id, sha256, item.started_at)
            if item.started_at is not None and key in first:
                copies[i] = first[key]
                continue
            first[key] = i
            upload = single.prepare_upload(
                runtime, item.machine_id, item.body, item.started_at, item.conditions, sha256
            )
        except Exception as exc:  # noqa: BLE001 - this upload's outcome; the others go on
            out[i] = exc
            continue
        ready.append(_Pending(i, upload, upload.basis))
        held += upload.prepared.duration
        if held >= MAX_BATCH_AUDIO_SECONDS:
            _transaction(runtime, items, ready, out)
            ready, held = [], 0.0
    if ready:
        _transaction(runtime, items, ready, out)
    for i, original in copies.items():
        out[i] = _copy(out[original])
    return out  # type: ignore[return-value]


def store_prepared(runtime: Runtime, uploads: Sequence[Upload]) -> list[Outcome]:
    """Write uploads already prepared (``ingest.prepare_upload``) in one transaction: per
    upload its ``IngestResult`` or the exception ``ingest`` would have raised for it, in
    order. The same upload twice (machine, content and start) is stored once."""
    items = [Item(u.machine_id, u.body, u.started_at, u.conditions, u.sha256) for u in uploads]
    out: list[Outcome | None] = [None] * len(uploads)
    first: dict[tuple[str, str, datetime], int] = {}
    copies: dict[int, int] = {}
    ready: list[_Pending] = []
    for i, up in enumerate(uploads):
        key = (up.machine_id, up.sha256, up.started_at)
        if key in first:
            copies[i] = first[key]
            continue
        first[key] = i
        ready.append(_Pending(i, up, up.basis))
    _transaction(runtime, items, ready, out)
    for i, original in copies.items():
        out[i] = _copy(out[original])
    # Never None: a caller waits on each outcome.
    return [o or RuntimeError("the batch transaction gave no outcome") for o in out]


def _copy(outcome: Outcome | None) -> Outcome:
    """The outcome of an upload sent twice in one batch, for its second copy."""
    if isinstance(outcome, IngestResult):
        return IngestResult(
            recording=outcome.recording,
            windows=outcome.windows,
            created=False,
            machine_state=outcome.machine_state,
            baseline_version=outcome.baseline_version,
        )
    assert outcome is not None
    return outcome


def _transaction(runtime: Runtime, items: Sequence[Item], ready: list[_Pending], out: list) -> None:
    groups: dict[str, list[_Pending]] = {}
    for p in sorted(ready, key=lambda p: (p.upload.started_at, p.index)):
        groups.setdefault(p.upload.machine_id, []).append(p)
    writers: list[_MachineWriter] = []
    try:
        with runtime.db.session() as session:
            machines = machines_repo.lock_many(session, list(groups))
            stored = recordings_repo.find_many(
                session,
                [(p.upload.machine_id, p.upload.sha256, p.upload.started_at) for p in ready],
            )
            for machine_id in sorted(groups):
                machine = machines.get(machine_id)
                try:
                    check_writable(machine, machine_id)
                    single._check_accepts_audio(machine)
                except ServiceError as exc:
                    runtime.machines.discard(machine_id)
                    for p in groups[machine_id]:
                        out[p.index] = exc
                    continue
                writer = _MachineWriter(session, runtime, machine, out)
                writer.run(groups[machine_id], stored)
                writers.append(writer)
            snapshots = [MachineSnapshot.of(w.machine) for w in writers]
    except Exception as exc:
        for machine_id in groups:
            runtime.machines.discard(machine_id)
        if is_database_outage(exc):
            for p in ready:  # refusals stand; what was written is rolled back: retry it
                if out[p.index] is None or isinstance(out[p.index], IngestResult):
                    out[p.index] = exc
            return
        log.warning(
            "batch of %d uploads failed in its transaction (%s: %s); ingesting them one by one",
            len(ready),
            type(exc).__name__,
            exc,
        )
        for p in ready:
            out[p.index] = _one(runtime, items[p.index])
        return
    for snapshot in snapshots:
        runtime.machines.put(snapshot)
    for writer in writers:
        for version, model in writer.new_baselines:
            runtime.baselines.put(writer.machine.id, version, model)
        if writer.created:
            single.observe(
                writer.machine.id, [(out[p.index], p.upload.prepared) for p in writer.created]
            )


def _one(runtime: Runtime, item: Item) -> Outcome:
    try:
        return single.ingest(
            runtime,
            item.machine_id,
            item.body,
            started_at=item.started_at,
            conditions=item.conditions,
        )
    except Exception as exc:  # noqa: BLE001 - this upload's outcome
        return exc


class _MachineWriter:
    """One machine's uploads of a batch, in start-time order, inside the batch transaction
    (the machine row locked)."""

    def __init__(self, session, runtime: Runtime, machine: Machine, out: list) -> None:
        self.session = session
        self.runtime = runtime
        self.machine = machine
        self.out = out
        self.new_baselines: list[tuple[int, Any]] = []  # built here, cached after the commit
        self.created: list[_Pending] = []
        # The machine's recordings in the batch's time span, in the order after_ingest's
        # "latest before" query sees them; None until an upload in learning needs them.
        self.known: list[_Known] | None = None
        self.span: tuple[datetime, datetime] | None = None

    def run(self, pending: list[_Pending], stored: dict) -> None:
        machine, session = self.machine, self.session
        starts = [p.upload.started_at for p in pending]
        self.span = (min(starts), max(starts)) if starts else None
        run: list[_Pending] = []  # uploads decided, written together when needed
        for p in pending:
            up = p.upload
            duplicate_id = stored.get((machine.id, up.sha256, up.started_at))
            if duplicate_id is not None:
                recording = session.get(Recording, duplicate_id)
                self.out[p.index] = single._existing(session, machine, recording)
                continue
            try:
                self._rescore_if_needed(p)
            except SQLAlchemyError:
                raise
            except Exception as exc:  # noqa: BLE001 - refused before any write of its own
                self.out[p.index] = exc
                continue
            if self._needs_what_came_before(p):
                self._write(run)
                run = []
                result = single._store(
                    session,
                    self.runtime,
                    machine,
                    up.prepared,
                    up.scores,
                    up.audio,
                    up.sha256,
                    up.started_at,
                    up.conditions,
                    len(up.body),
                )
                if result.new_baseline is not None:
                    self.new_baselines.append(result.new_baseline)
                self.out[p.index] = result
                self.created.append(p)
                self.known = None  # it may have marked a run learned: read again when needed
                continue
            p.enrolling = machine.state == "enrolling"
            if p.enrolling:
                machine.enrolled_seconds = (
                    float(machine.enrolled_seconds or 0.0) + up.prepared.duration
                )
            run.append(p)
            if self.known is not None:
                self.known.append(self._known_of(p))
        self._write(run)

    def _rescore_if_needed(self, p: _Pending) -> None:
        """What ``ingest`` does once it holds the lock: redo the embedding when the detection
        settings changed, the scores when the state or the active version moved (within this
        batch too: enrollment completed, learning activated a version)."""
        machine, up = self.machine, p.upload
        if not up.snapshot.same_detection(machine):
            up.prepared = single.prepare(self.runtime, machine, up.body)
            up.audio = single.stored_audio(up.prepared, up.body)
            p.basis = None
        if up.scores is None or p.basis != (machine.state, machine.active_baseline_version):
            model = None
            if self.new_baselines and self.new_baselines[-1][0] == machine.active_baseline_version:
                model = self.new_baselines[-1][1]  # built in this transaction, not cached yet
            up.scores = single._score(
                self.runtime, machine, up.prepared, up.conditions, session=self.session, model=model
            )
            p.basis = (machine.state, machine.active_baseline_version)

    def _needs_what_came_before(self, p: _Pending) -> bool:
        """True when writing this upload reads rows of the uploads before it: it may complete
        enrollment, or it is inside the learning period and starts a new run after one that
        learning may admit."""
        machine, up = self.machine, p.upload
        if machine.state == "enrolling":
            enrolled = float(machine.enrolled_seconds or 0.0) + up.prepared.duration
            return enrolled >= machine.enrollment_seconds
        in_learning = (
            up.scores is not None
            and machine.state == "monitoring"
            and machine.learning_until is not None
            and machine.active_baseline_version is not None
            and up.started_at < machine.learning_until
        )
        if not in_learning:
            return False
        return learning.may_end_a_run(
            self._previous(up.started_at), self._known_of(p), machine.run_gap_seconds
        )

    def _previous(self, started_at: datetime) -> _Known | None:
        """The latest recording that started before ``started_at``, as the database would
        answer inside this transaction (what the batch wrote or will write before it included)."""
        if self.known is None:
            self.known = self._load_known()
        before = [k for k in self.known if k.started_at < started_at]
        # Stored rows come first in (started_at, id) order, then the batch's in writing order,
        # which is the order of their ids: the last of the latest start is the one.
        return max(reversed(before), key=lambda k: k.started_at) if before else None

    def _load_known(self) -> list[_Known]:
        """The machine's recordings (flushed in this transaction included) that can be the
        "latest before" of an upload of this batch: the last before the batch's first start
        and those from it up to its last start."""
        assert self.span is not None
        first, last = self.span
        columns = (
            Recording.started_at,
            Recording.ended_at,
            Recording.conditions,
            Recording.is_enrollment,
            Recording.learned,
        )
        mine = Recording.machine_id == self.machine.id
        earlier = self.session.execute(
            select(*columns)
            .where(mine, Recording.started_at < first)
            .order_by(Recording.started_at.desc(), Recording.id.desc())
            .limit(1)
        ).all()
        within = self.session.execute(
            select(*columns)
            .where(mine, Recording.started_at >= first, Recording.started_at < last)
            .order_by(Recording.started_at, Recording.id)
        ).all()
        return [
            _Known(r.started_at, r.ended_at, r.conditions or {}, r.is_enrollment, r.learned)
            for r in (*earlier, *within)
        ]

    def _known_of(self, p: _Pending) -> _Known:
        up = p.upload
        ended_at = up.started_at + timedelta(seconds=up.prepared.duration)
        return _Known(up.started_at, ended_at, up.conditions or {}, p.enrolling, False)

    def _write(self, run: list[_Pending]) -> None:
        """Insert a run of decided uploads together and apply the event logic to them."""
        if not run:
            return
        session, machine = self.session, self.machine
        recordings = recordings_repo.add_many(
            session,
            [
                recording_row(
                    machine,
                    p.upload.prepared,
                    p.upload.sha256,
                    p.upload.started_at,
                    p.upload.conditions,
                    len(p.upload.body),
                    p.enrolling,
                )
                for p in run
            ],
        )
        recordings_repo.add_audio_many(
            session,
            [
                (r.id, p.upload.prepared.sample_rate, single.AUDIO_FORMAT, p.upload.audio)
                for r, p in zip(recordings, run, strict=True)
            ],
        )
        rows = [
            window_rows(machine, r.id, p.upload.started_at, p.upload.prepared, p.upload.scores)
            for r, p in zip(recordings, run, strict=True)
        ]
        flat = [row for chunk in rows for row in chunk]
        ids = windows_repo.insert_many(session, flat)
        split, at = [], 0
        for chunk in rows:
            split.append(ids[at : at + len(chunk)])
            at += len(chunk)
        events_service.on_recordings(
            session,
            machine,
            [(r, i, p.upload.prepared.flags) for r, i, p in zip(rows, split, run, strict=True)],
        )
        session.flush()
        for p, recording, chunk, chunk_ids in zip(run, recordings, rows, split, strict=True):
            self.out[p.index] = IngestResult(
                recording=recording,
                windows=stored_windows(chunk, chunk_ids),
                created=True,
                machine_state=machine.state,
                baseline_version=machine.active_baseline_version,
            )
            self.created.append(p)

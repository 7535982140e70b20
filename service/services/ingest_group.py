"""Group commit: single uploads that arrive together share one write transaction.

Each upload is hashed, decoded, embedded and scored in its own thread, as before
(``ingest.prepare_upload``), and then waits for the write transaction. One transaction at a
time per process: the upload that finds none running writes every upload waiting at that
moment, its own included, in one transaction (``ingest_batch``'s, the worker's path: each
machine's row locked once, one duplicate query, one statement per table); the others wait
for it and, when it has written theirs, return. An upload that arrives while a transaction
runs goes in the next one. Alone, an upload goes through the single upload's transaction
(``ingest.store_upload``), so a lone client sees nothing change. So does an upload that
may fit a baseline in its transaction (``may_build_a_baseline``: enrollment, and in the
learning period an upload that may start a new run), beside the shared transactions, so
that one machine's fit never holds the others.

The outcome of each upload is what ``ingest.ingest`` gives or raises for it: a refusal
(paused or unknown machine) fails only that machine's uploads; when the database is
unreachable every upload of the transaction gets that error (a 503 for each request);
any other failure in the shared transaction writes its uploads again one by one.
Postgres commits (and fsyncs) once for the group, and spends less CPU per upload: with 16-32
clients on one process, 4-6 uploads per transaction and 10-16 % less (docs/benchmarks.md,
"group commit").
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from service import metrics
from service.runtime import Runtime
from service.services import ingest as single
from service.services import ingest_batch, runs
from service.services.ingest import IngestResult, Upload

# Uploads one transaction takes at most; more waiting go in the next one. Bounds what a
# transaction holds (audio, rows) as ``ingest_batch.MAX_BATCH_AUDIO_SECONDS`` does.
MAX_GROUP = 64


def ingest(
    runtime: Runtime,
    machine_id: str,
    body: bytes,
    *,
    started_at: datetime | None,
    conditions: dict[str, Any],
) -> IngestResult:
    """``ingest.ingest`` for one upload, its transaction shared with those waiting (or its
    own when ``HUMWATCH_GROUP_COMMIT`` is false)."""
    upload = single.prepare_upload(runtime, machine_id, body, started_at, conditions)
    return runtime.ingest_group.store(upload)


def may_build_a_baseline(upload: Upload, previous: runs.Span | None = None) -> bool:
    """True when writing ``upload`` may fit a baseline in its transaction (seconds for a large
    one): the machine is enrolling (its last enrollment upload builds v1), or the upload
    falls in its learning period and may start a new run (the end of a run builds the next
    version): unless ``previous``, the machine's latest upload this process stored, shows it
    continues the same run. Judged from the machine as it was when the upload was prepared:
    a wrong guess costs time, never a wrong row (the transaction decides again). Such
    uploads keep a transaction of their own, beside the shared ones, so that no other
    machine's upload waits for a fit."""
    machine = upload.snapshot
    if machine.state == "enrolling":
        return True
    until = machine.learning_until
    if until is None or upload.started_at >= until:
        return False
    if previous is None or previous.started_at >= upload.started_at:
        return True
    ended_at = upload.started_at + timedelta(seconds=upload.prepared.duration)
    this = runs.Span(1, upload.started_at, ended_at, upload.conditions or {})
    run_of = runs.assign_runs([previous, this], machine.run_gap_seconds)
    return run_of[previous.recording_id] != run_of[this.recording_id]


@dataclass
class _Slot:
    upload: Upload
    outcome: IngestResult | BaseException | None = None


class GroupCommit:
    """The process's write transactions for single uploads, one at a time, shared."""

    def __init__(self, runtime: Runtime, max_group: int = MAX_GROUP) -> None:
        self.runtime = runtime
        self.max_group = max_group
        self._waiting: list[_Slot] = []
        self._waiting_lock = threading.Lock()
        self._writing = threading.Lock()  # held by the thread whose transaction runs
        self._latest: dict[str, runs.Span] = {}  # machine id -> its latest stored upload

    def shares(self, upload: Upload) -> bool:
        """True when ``upload`` waits for a shared transaction; False when it gets one of its
        own (group commit off, or ``may_build_a_baseline``: a fit is CPU work)."""
        if not self.runtime.settings.group_commit:
            return False
        return not may_build_a_baseline(upload, self._latest.get(upload.machine_id))

    def store(self, upload: Upload) -> IngestResult:
        """Write a prepared upload (``ingest.prepare_upload``) in the next transaction;
        returns its result or raises its error once that transaction has ended."""
        if not self.shares(upload):
            return self._remember(upload, single.store_upload(self.runtime, upload))
        slot = _Slot(upload)
        with self._waiting_lock:
            self._waiting.append(slot)
        while slot.outcome is None:
            with self._writing:
                if slot.outcome is None:
                    with self._waiting_lock:
                        group = self._waiting[: self.max_group]
                        del self._waiting[: self.max_group]
                    self._write(group)
        if isinstance(slot.outcome, BaseException):
            raise slot.outcome
        return self._remember(upload, slot.outcome)

    def _remember(self, upload: Upload, result: IngestResult) -> IngestResult:
        """Keep the machine's latest stored upload (for ``may_build_a_baseline``)."""
        latest = self._latest.get(upload.machine_id)
        if result.created and (latest is None or latest.started_at < upload.started_at):
            recording = result.recording
            self._latest[upload.machine_id] = runs.Span(
                0, recording.started_at, recording.ended_at, recording.conditions or {}
            )
        return result

    def _write(self, group: list[_Slot]) -> None:
        """Write ``group`` in one transaction and give every slot its outcome."""
        try:
            if len(group) == 1:
                group[0].outcome = self._one(group[0].upload)
            else:
                self._together(group)
        except BaseException as exc:
            for slot in group:
                if slot.outcome is None:
                    slot.outcome = exc
            raise
        finally:
            metrics.INGEST_GROUP.observe(len(group))

    def _one(self, upload: Upload) -> IngestResult | Exception:
        try:
            return single.store_upload(self.runtime, upload)
        except Exception as exc:  # noqa: BLE001 - this upload's outcome, raised in its thread
            return exc

    def _together(self, group: list[_Slot]) -> None:
        outcomes = ingest_batch.store_prepared(self.runtime, [slot.upload for slot in group])
        for slot, outcome in zip(group, outcomes, strict=True):
            slot.outcome = outcome

"""Audio ingest: decode, window, embed, score and store one recording atomically.

The slow part (decode, resample, embed, score, encode window audio) runs before the write
transaction opens, so the transaction only inserts rows. Everything here is synchronous and
is called from a worker thread (never on the event loop).
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import soundfile as sf
from sqlalchemy.exc import IntegrityError

from detectors.audio import AudioHeader, resample
from detectors.audio import decode as decode_audio
from detectors.embedders import embed_windows
from detectors.sensor import WindowFlags, window_flags
from detectors.windows import frame
from service import metrics
from service.audio_checks import check_audio_format, check_window_fits
from service.errors import ConflictError, InsufficientMaterialError, PayloadTooLargeError
from service.models import Machine, Recording, Window, utcnow
from service.repositories import machines as machines_repo
from service.repositories import recordings as recordings_repo
from service.repositories import windows as windows_repo
from service.runtime import MachineSnapshot, Runtime
from service.services import baselines as baselines_service
from service.services import events as events_service
from service.services import learning
from service.services import machines as machines_service
from service.services.ingest_rows import StoredWindow, recording_row, stored_windows, window_rows
from service.services.machines import check_writable, get_writable_machine

log = logging.getLogger("humwatch.ingest")

AUDIO_FORMAT = "FLAC"


@dataclass
class IngestResult:
    """What one upload produced; ``created`` is False for an idempotent re-upload."""

    recording: Recording
    windows: list[Window] | list[StoredWindow]
    created: bool
    machine_state: str
    baseline_version: int | None
    new_baseline: tuple[int, Any] | None = None  # (version, fitted model) to cache on commit


@dataclass
class _Prepared:
    decoded_rate: int
    decoded_channels: int
    decoded_format: str
    decoded_subtype: str
    duration: float
    sample_rate: int
    # Released (None) once the stored audio is encoded: a batch holds its uploads until the
    # commit, and sixteen waveforms held cost the embedding of the next ones their caches.
    waveform: np.ndarray | None
    start_samples: np.ndarray
    window_samples: int
    vectors: np.ndarray
    flags: WindowFlags  # microphone health per window (silence, clipping, dropouts)
    levels: tuple[float, float] | None  # the waveform's (rms, peak), for the level gauges


def _header_check(limit: float):
    """What ``decode`` checks in the container's header before decoding: a usable sample
    rate and channel count, and no longer than ``limit`` seconds."""

    def check(header: AudioHeader) -> None:
        check_audio_format(header.sample_rate, header.channels)
        seconds = float(header.frames) / header.sample_rate
        if seconds > limit:
            raise PayloadTooLargeError(
                f"recording lasts {seconds:.1f} s, longer than the limit of {limit:g} s "
                "(HUMWATCH_MAX_RECORDING_SECONDS); split it into shorter uploads"
            )

    return check


def prepare(runtime: Runtime, machine: Machine | MachineSnapshot, body: bytes) -> _Prepared:
    """Decode, check limits, reduce to mono at the model rate, window and embed."""
    limit = runtime.settings.max_recording_seconds
    # The header is checked before decoding (refuses unusable rates and over-long audio).
    decoded = decode_audio(body, inspect=_header_check(limit))
    if decoded.duration_seconds > limit:
        raise PayloadTooLargeError(
            f"recording lasts {decoded.duration_seconds:.1f} s, longer than the limit of "
            f"{limit:g} s (HUMWATCH_MAX_RECORDING_SECONDS); split it into shorter uploads"
        )
    check_audio_format(decoded.sample_rate, decoded.channels)
    check_window_fits(decoded.n_samples, decoded.sample_rate, machine.window_seconds)
    embedder = runtime.embedders.get(machine.embedder)
    waveform = resample(
        decoded.mono(machine.channel_spec), decoded.sample_rate, embedder.sample_rate
    )
    windows = frame(waveform, embedder.sample_rate, machine.window_seconds, machine.hop_seconds)
    with metrics.time_embedding(embedder.name):
        vectors = embed_windows(embedder, waveform, windows)
    if not np.isfinite(vectors).all():
        raise ValueError("embedder produced non-finite vectors")
    flags = window_flags(
        waveform, windows.start_samples, windows.window_samples, embedder.sample_rate
    )
    return _Prepared(
        decoded_rate=decoded.sample_rate,
        decoded_channels=decoded.channels,
        decoded_format=decoded.format,
        decoded_subtype=decoded.subtype,
        duration=decoded.duration_seconds,
        sample_rate=embedder.sample_rate,
        waveform=waveform,
        start_samples=windows.start_samples,
        window_samples=windows.window_samples,
        vectors=vectors,
        flags=flags,
        levels=metrics.audio_levels(waveform),
    )


def encode_flac(samples: np.ndarray, sample_rate: int) -> bytes:
    """``(n,)`` float audio -> 16-bit FLAC bytes.

    Rounded to int16 here (x * 32768, the decoder's inverse, so 16-bit input comes back
    sample for sample) rather than by libsndfile's float path (x * 32767), which also costs
    a third more.
    """
    pcm = np.clip(np.round(samples * 32768.0), -32768, 32767).astype(np.int16)
    buf = io.BytesIO()
    sf.write(buf, pcm, sample_rate, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def stored_audio(prepared: _Prepared, body: bytes) -> bytes:
    """The recording's audio as stored (16-bit mono FLAC at the model's rate).

    An upload that already is exactly that (what ``humwatch agent`` sends) is stored as it
    came: re-encoding would give the same samples and cost 4-5 ms per 10 s.
    """
    if (
        prepared.decoded_format == "FLAC"
        and prepared.decoded_subtype == "PCM_16"
        and prepared.decoded_channels == 1
        and prepared.decoded_rate == prepared.sample_rate
    ):
        return body
    return encode_flac(prepared.waveform, prepared.sample_rate)


def ingest(
    runtime: Runtime,
    machine_id: str,
    body: bytes,
    *,
    started_at: datetime | None,
    conditions: dict[str, Any],
) -> IngestResult:
    """Store one recording and all its windows (or nothing), scoring them when monitoring.

    One write transaction per upload: the audio is prepared (and scored) outside it from the
    process's machine snapshot, and the transaction locks the machine row, checks the
    snapshot still holds (re-scoring or re-embedding when it does not), refuses a duplicate
    (same machine, content and start) and inserts.
    """
    return store_upload(runtime, prepare_upload(runtime, machine_id, body, started_at, conditions))


def store_upload(runtime: Runtime, up: Upload) -> IngestResult:
    """The write transaction of one prepared upload (``ingest`` after ``prepare_upload``)."""
    machine_id, body, conditions = up.machine_id, up.body, up.conditions
    snapshot, prepared, scores, audio = up.snapshot, up.prepared, up.scores, up.audio
    sha256, started_at = up.sha256, up.started_at
    try:
        with runtime.db.session() as session:
            machine, duplicate_id = machines_repo.lock_for_ingest(
                session, machine_id, sha256, started_at
            )
            check_writable(machine, machine_id)
            _check_accepts_audio(machine)
            if duplicate_id is not None:
                runtime.machines.put(MachineSnapshot.of(machine))
                return _existing(session, machine, session.get(Recording, duplicate_id))
            if not snapshot.same_detection(machine):
                # The detection settings changed (only possible before any audio): redo it all.
                prepared = prepare(runtime, machine, body)
                audio = stored_audio(prepared, body)
                scores = None
            if scores is None or (machine.state, machine.active_baseline_version) != (
                snapshot.state,
                snapshot.active_baseline_version,
            ):
                # Enrollment finished or the baseline moved while we embedded: rescore.
                scores = _score(runtime, machine, prepared, conditions, session=session)
            result = _store(
                session,
                runtime,
                machine,
                prepared,
                scores,
                audio,
                sha256,
                started_at,
                conditions,
                len(body),
            )
            fresh = MachineSnapshot.of(machine)
    except IntegrityError:
        # A concurrent upload of the same audio won the race: return what it stored.
        runtime.machines.discard(machine_id)
        with runtime.db.session() as session:
            machine = get_writable_machine(session, machine_id)
            existing = recordings_repo.find(session, machine.id, sha256, started_at)
            if existing is None:
                raise
            return _existing(session, machine, existing)
    except Exception:
        runtime.machines.discard(machine_id)
        raise
    runtime.machines.put(fresh)
    if result.new_baseline is not None:
        runtime.baselines.put(machine_id, *result.new_baseline)
    if result.created:
        observe(machine_id, [(result, prepared)])
    return result


@dataclass
class Upload:
    """One upload made ready for its transaction: hashed, prepared and scored from the
    machine snapshot (``basis``: the snapshot's state and version the scores are for)."""

    machine_id: str
    body: bytes
    conditions: dict[str, Any]
    sha256: str
    snapshot: MachineSnapshot
    prepared: _Prepared
    scores: Any
    audio: bytes
    started_at: datetime

    @property
    def basis(self) -> tuple[str, int | None]:
        return self.snapshot.state, self.snapshot.active_baseline_version


def prepare_upload(
    runtime: Runtime,
    machine_id: str,
    body: bytes,
    started_at: datetime | None,
    conditions: dict[str, Any],
    sha256: str | None = None,
) -> Upload:
    """Everything before the write transaction: hash, snapshot, decode, embed, score."""
    sha256 = sha256 or hashlib.sha256(body).hexdigest()
    snapshot = _snapshot(runtime, machine_id)
    received_at = utcnow()
    prepared = prepare(runtime, snapshot, body)
    scores = _score(runtime, snapshot, prepared, conditions)
    audio = stored_audio(prepared, body)
    prepared.waveform = None  # everything after this reads the stored audio or the levels
    if started_at is None:
        started_at = received_at - timedelta(seconds=prepared.duration)
    return Upload(
        machine_id, body, conditions, sha256, snapshot, prepared, scores, audio, started_at
    )


def observe(machine_id: str, stored: Sequence[tuple[IngestResult, _Prepared]]) -> None:
    """The metrics of a machine's stored recordings, in time order (after their commit)."""
    metrics.observe_recordings(
        machine_id,
        [
            (
                result.windows,
                prepared.duration,
                prepared.waveform,
                prepared.start_samples,
                prepared.window_samples,
                result.recording.ended_at,
                prepared.flags,
                prepared.levels,
            )
            for result, prepared in stored
        ],
    )


def _snapshot(runtime: Runtime, machine_id: str) -> MachineSnapshot:
    """The cached machine snapshot, read from the database when absent or refusing audio
    (a stale 'paused' must not refuse an upload the database would accept)."""
    snapshot = runtime.machines.get(machine_id)
    if snapshot is not None and snapshot.archived_at is None and snapshot.state != "paused":
        return snapshot
    with runtime.db.session() as session:
        machine = get_writable_machine(session, machine_id)
        _check_accepts_audio(machine)
        return runtime.machines.put(MachineSnapshot.of(machine))


def _check_accepts_audio(machine: Machine) -> None:
    if machine.state == "paused":
        raise ConflictError(
            f"machine {machine.id!r} is paused; resume it (PATCH state=monitoring) to send audio"
        )


def _existing(session, machine: Machine, recording: Recording) -> IngestResult:
    return IngestResult(
        recording=recording,
        windows=list(windows_repo.for_recording(session, recording.id)),
        created=False,
        machine_state=machine.state,
        baseline_version=machine.active_baseline_version,
    )


def _score(
    runtime: Runtime,
    machine: Machine | MachineSnapshot,
    prepared: _Prepared,
    conditions: dict[str, Any],
    session=None,
    model=None,
):
    """Scores, the threshold and the version used, or None while the machine has no baseline
    (a baseline within operating conditions scores in the recording's condition: ratios);
    ``model``: the active version's fitted model when the caller has it."""
    if machine.state != "monitoring" or machine.active_baseline_version is None:
        return None
    if model is None:  # the process cache first: no session for a model it holds
        model = runtime.baselines.get(machine.id, machine.active_baseline_version)
    if model is None and session is None:
        with runtime.db.session() as s:
            model = baselines_service.load_active(s, runtime, machine)
    elif model is None:
        model = baselines_service.load_active(session, runtime, machine)
    with metrics.time_scoring():
        scores = baselines_service.score(model, prepared.vectors, conditions)
    return scores, float(model.threshold_), machine.active_baseline_version


def _store(
    session,
    runtime: Runtime,
    machine: Machine,
    prepared: _Prepared,
    scores,
    audio: bytes,
    sha256: str,
    started_at: datetime,
    conditions: dict[str, Any],
    size_bytes: int,
) -> IngestResult:
    enrolling = machine.state == "enrolling"
    recording = recordings_repo.add(
        session,
        recording_row(machine, prepared, sha256, started_at, conditions, size_bytes, enrolling),
    )
    rate = prepared.sample_rate
    rows = window_rows(machine, recording.id, started_at, prepared, scores)
    recordings_repo.add_audio(session, recording.id, rate, AUDIO_FORMAT, audio)
    ids = windows_repo.insert_many(session, rows)  # one INSERT ... RETURNING for all rows
    new_baseline = None
    if enrolling:
        machine.enrolled_seconds = float(machine.enrolled_seconds or 0.0) + prepared.duration
        if machine.enrolled_seconds >= machine.enrollment_seconds and _enough_runs(
            session, machine
        ):
            try:
                with session.begin_nested():
                    new_baseline = _finish_enrollment(session, runtime, machine)
            except InsufficientMaterialError as exc:
                # Keep the audio and keep enrolling: the next upload tries again.
                log.warning("machine %s stays enrolling: %s", machine.id, exc.detail)
    elif scores is not None:
        new_baseline = learning.after_ingest(session, runtime, machine, recording)
    # Events and health, in the transaction that stores the windows (row lock held).
    events_service.on_recordings(session, machine, [(rows, ids, prepared.flags)])
    # The machine row is written only when it changes (enrolled seconds, a new baseline):
    # ``updated_at`` follows by itself (onupdate).
    session.flush()
    windows = stored_windows(rows, ids)
    return IngestResult(
        recording=recording,
        windows=windows,
        created=True,
        machine_state=machine.state,
        baseline_version=machine.active_baseline_version,
        new_baseline=new_baseline,
    )


def _enough_runs(session, machine: Machine) -> bool:
    """True when the enrollment material spans the machine's required number of runs."""
    if machine.enrollment_runs <= 1:
        return True
    return machines_service.material_coverage(session, machine).runs >= machine.enrollment_runs


def _finish_enrollment(session, runtime: Runtime, machine: Machine) -> tuple[int, Any]:
    """Build and activate baseline version 1 from the enrollment audio."""
    baseline, model = baselines_service.build_and_activate(
        session,
        runtime,
        machine,
        enrollment_only=True,
        source="enrollment",
        note="built automatically when enrollment completed",
    )
    learning.start(machine, baseline.source_to)
    log.info(
        "machine %s enrolled: baseline v%d from %d windows (threshold %.4g)",
        machine.id,
        baseline.version,
        baseline.n_vectors,
        baseline.threshold,
    )
    return baseline.version, model

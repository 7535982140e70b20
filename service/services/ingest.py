"""Audio ingest: decode, window, embed, score and store one recording atomically.

The slow part (decode, resample, embed, score, encode window audio) runs before the write
transaction opens, so the transaction only inserts rows. Everything here is synchronous and
is called from a worker thread (never on the event loop).
"""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import soundfile as sf
from sqlalchemy.exc import IntegrityError

from detectors.audio import decode as decode_audio
from detectors.audio import resample, to_mono
from detectors.embedders import embed_windows
from detectors.errors import AudioTooShortError
from detectors.windows import frame
from service import metrics
from service.errors import ConflictError, InsufficientMaterialError, PayloadTooLargeError
from service.models import Machine, Recording, Window, utcnow
from service.repositories import recordings as recordings_repo
from service.repositories import windows as windows_repo
from service.runtime import Runtime
from service.services import baselines as baselines_service
from service.services import learning
from service.services import machines as machines_service
from service.services.machines import get_writable_machine

log = logging.getLogger("humwatch.ingest")

AUDIO_FORMAT = "FLAC"


@dataclass
class IngestResult:
    """What one upload produced; ``created`` is False for an idempotent re-upload."""

    recording: Recording
    windows: list[Window]
    created: bool
    machine_state: str
    baseline_version: int | None
    new_baseline: tuple[int, Any] | None = None  # (version, fitted model) to cache on commit


@dataclass
class _Prepared:
    decoded_rate: int
    decoded_channels: int
    decoded_format: str
    duration: float
    sample_rate: int
    waveform: np.ndarray
    start_samples: np.ndarray
    window_samples: int
    vectors: np.ndarray


def _peek_duration(body: bytes) -> float | None:
    try:
        info = sf.info(io.BytesIO(body))
    except Exception:  # noqa: BLE001 - decode() reports the real problem
        return None
    return float(info.frames) / info.samplerate if info.samplerate else None


def prepare(runtime: Runtime, machine: Machine, body: bytes) -> _Prepared:
    """Decode, check limits, reduce to mono at the model rate, window and embed."""
    limit = runtime.settings.max_recording_seconds
    peeked = _peek_duration(body)
    if peeked is not None and peeked > limit:
        raise PayloadTooLargeError(
            f"recording lasts {peeked:.1f} s, longer than the limit of {limit:g} s "
            "(HUMWATCH_MAX_RECORDING_SECONDS); split it into shorter uploads"
        )
    decoded = decode_audio(body)
    if decoded.duration_seconds > limit:
        raise PayloadTooLargeError(
            f"recording lasts {decoded.duration_seconds:.1f} s, longer than the limit of "
            f"{limit:g} s (HUMWATCH_MAX_RECORDING_SECONDS); split it into shorter uploads"
        )
    if decoded.duration_seconds < machine.window_seconds:
        raise AudioTooShortError(
            f"audio lasts {decoded.duration_seconds:.3f} s, shorter than one window "
            f"({machine.window_seconds:g} s); send longer recordings"
        )
    embedder = runtime.embedders.get(machine.embedder)
    mono = to_mono(decoded.samples, machine.channel_spec)
    waveform = resample(mono, decoded.sample_rate, embedder.sample_rate)
    windows = frame(waveform, embedder.sample_rate, machine.window_seconds, machine.hop_seconds)
    with metrics.time_embedding(embedder.name):
        vectors = embed_windows(embedder, waveform, windows)
    if not np.isfinite(vectors).all():
        raise ValueError("embedder produced non-finite vectors")
    return _Prepared(
        decoded_rate=decoded.sample_rate,
        decoded_channels=decoded.channels,
        decoded_format=decoded.format,
        duration=decoded.duration_seconds,
        sample_rate=embedder.sample_rate,
        waveform=waveform,
        start_samples=windows.start_samples,
        window_samples=windows.window_samples,
        vectors=vectors,
    )


def encode_flac(samples: np.ndarray, sample_rate: int) -> bytes:
    """``(n,)`` float audio -> 16-bit FLAC bytes."""
    buf = io.BytesIO()
    sf.write(buf, np.clip(samples, -1.0, 1.0), sample_rate, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def ingest(
    runtime: Runtime,
    machine_id: str,
    body: bytes,
    *,
    started_at: datetime | None,
    conditions: dict[str, Any],
) -> IngestResult:
    """Store one recording and all its windows (or nothing), scoring them when monitoring."""
    db = runtime.db
    sha256 = hashlib.sha256(body).hexdigest()
    with db.session() as session:
        machine = get_writable_machine(session, machine_id)
        _check_accepts_audio(machine)
        if started_at is not None:
            existing = recordings_repo.find(session, machine.id, sha256, started_at)
            if existing is not None:
                return _existing(session, machine, existing)
        snapshot_state, snapshot_version = machine.state, machine.active_baseline_version
        session.expunge(machine)

    received_at = utcnow()
    prepared = prepare(runtime, machine, body)
    scores = _score(runtime, machine, prepared) if snapshot_state == "monitoring" else None
    audio = encode_flac(prepared.waveform, prepared.sample_rate)
    if started_at is None:
        started_at = received_at - timedelta(seconds=prepared.duration)

    try:
        with db.session() as session:
            machine = get_writable_machine(session, machine_id, for_update=True)
            _check_accepts_audio(machine)
            existing = recordings_repo.find(session, machine.id, sha256, started_at)
            if existing is not None:
                return _existing(session, machine, existing)
            if (machine.state, machine.active_baseline_version) != (
                snapshot_state,
                snapshot_version,
            ):
                # Enrollment finished or the baseline moved while we embedded: rescore.
                scores = _score(runtime, machine, prepared, session=session)
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
    except IntegrityError:
        # A concurrent upload of the same audio won the race: return what it stored.
        with db.session() as session:
            machine = get_writable_machine(session, machine_id)
            existing = recordings_repo.find(session, machine.id, sha256, started_at)
            if existing is None:
                raise
            return _existing(session, machine, existing)
    if result.new_baseline is not None:
        runtime.baselines.put(machine_id, *result.new_baseline)
    if result.created:
        metrics.observe_recording(
            machine_id,
            result.windows,
            audio_seconds=prepared.duration,
            waveform=prepared.waveform,
            start_samples=prepared.start_samples,
            window_samples=prepared.window_samples,
            ended_at=result.recording.ended_at,
        )
    return result


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


def _score(runtime: Runtime, machine: Machine, prepared: _Prepared, session=None):
    """Scores, ratios and the version used, or None while the machine has no baseline."""
    if machine.state != "monitoring" or machine.active_baseline_version is None:
        return None
    if session is None:
        with runtime.db.session() as s:
            model = baselines_service.load_active(s, runtime, machine)
    else:
        model = baselines_service.load_active(session, runtime, machine)
    with metrics.time_scoring():
        scores = model.decision_function(prepared.vectors)
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
        Recording(
            machine_id=machine.id,
            started_at=started_at,
            ended_at=started_at + timedelta(seconds=prepared.duration),
            duration_seconds=prepared.duration,
            sample_rate=prepared.decoded_rate,
            channels=prepared.decoded_channels,
            format=prepared.decoded_format,
            sha256=sha256,
            size_bytes=size_bytes,
            conditions=conditions,
            is_enrollment=enrolling,
        ),
    )
    rate = prepared.sample_rate
    rows = []
    for i, start in enumerate(prepared.start_samples):
        start_at = started_at + timedelta(seconds=float(start) / rate)
        row = {
            "machine_id": machine.id,
            "recording_id": recording.id,
            "start_at": start_at,
            "end_at": start_at + timedelta(seconds=prepared.window_samples / rate),
            "score": None,
            "ratio": None,
            "is_outlier": False,
            "baseline_version": None,
            "embedding": prepared.vectors[i].astype("<f4").tobytes(),
        }
        if scores is not None:
            values, threshold, version = scores
            score = float(values[i])
            row.update(
                score=score,
                ratio=score / threshold,
                is_outlier=score > threshold,
                baseline_version=version,
            )
        rows.append(row)
    recordings_repo.add_audio(session, recording.id, rate, AUDIO_FORMAT, audio)
    ids = windows_repo.insert_many(session, rows)
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
    machine.updated_at = utcnow()
    session.flush()
    windows = [
        Window(id=wid, **{k: v for k, v in row.items() if k != "embedding"})
        for wid, row in zip(ids, rows, strict=True)
    ]
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
    material = baselines_service.collect_material(
        session,
        machine,
        start=None,
        end=None,
        enrollment_only=True,
        max_vectors=runtime.settings.max_baseline_vectors,
    )
    model = baselines_service.fit_baseline(
        runtime, machine, material, machine.k, machine.false_alarm_rate
    )
    baseline = baselines_service.store_baseline(
        session,
        machine,
        model,
        material,
        source_filter={"from": None, "to": None, "source": "enrollment"},
        note="built automatically when enrollment completed",
        activate=True,
    )
    learning.start(machine, material.source_to)
    log.info(
        "machine %s enrolled: baseline v%d from %d windows (threshold %.4g)",
        machine.id,
        baseline.version,
        baseline.n_vectors,
        baseline.threshold,
    )
    return baseline.version, model

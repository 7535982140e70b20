"""The learning period: after baseline v1, normal runs widen the picture of normal.

A machine enrolls on a few runs; the plant then shows it more of its normal variation (other
loads, speeds, backgrounds, seasons) within days. For ``learning_days`` of audio time after
the enrollment material ends (``Machine.learning_until``), each run that ends is looked at
once, when the next run starts (``run_gap_seconds`` later, or another client ``run``):

- it is **admitted** when every one of its windows was scored, none is labelled anomaly, at
  most ``MAX_OUTLIER_FRACTION`` of them are above the threshold of the active version, and
  likewise of the **enrollment version** (v1): a developing fault cannot creep into the
  baseline one small step at a time, since every admitted run must also look normal to the
  baseline that knew nothing of it;
- an admitted run's recordings become baseline material (``Recording.learned``) and a new
  immutable baseline version is fitted on all material and activated, inside the ingest
  transaction that noticed the run had ended.

Runs that arrive out of order are looked at only if they end before a later run starts;
a run rejected once is not looked at again (an admin rebuild can still include it), nor is
the rest of a run whose first part is already baseline material.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import numpy as np
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from detectors.conditions import load_baseline
from detectors.learning import ENROLLMENT_VERSION, MAX_OUTLIER_FRACTION
from service.models import Machine, Recording, Window
from service.repositories import baselines as baselines_repo
from service.runtime import Runtime
from service.services import baselines as baselines_service
from service.services import runs

log = logging.getLogger("humwatch.learning")


def start(machine: Machine, material_end) -> None:
    """Open the learning period after baseline v1 (``material_end``: the material's end)."""
    if machine.learning_days and machine.learning_days > 0 and material_end is not None:
        machine.learning_until = material_end + timedelta(days=machine.learning_days)


def after_ingest(session: Session, runtime: Runtime, machine: Machine, recording: Recording):
    """Admit the run that ``recording`` ended, if any; returns ``(version, model)`` of a new
    active baseline, or None. Called inside the ingest transaction (machine row locked)."""
    if (
        machine.state != "monitoring"
        or machine.learning_until is None
        or machine.active_baseline_version is None
        or recording.started_at >= machine.learning_until
    ):
        return None
    previous = session.execute(
        select(Recording)
        .where(
            Recording.machine_id == machine.id,
            Recording.id != recording.id,
            Recording.started_at < recording.started_at,
        )
        .order_by(Recording.started_at.desc(), Recording.id.desc())
        .limit(1)
    ).scalar_one_or_none()
    if not may_end_a_run(previous, recording, machine.run_gap_seconds):
        return None  # nothing before it, baseline material already, or the run goes on
    members = _run_recordings(session, machine, previous)
    if any(r.is_enrollment or r.learned for r in members):
        return None  # the rest of a run the baseline already holds
    verdict = _admissible(session, runtime, machine, members)
    if verdict is not None:
        log.info(
            "machine %s: learning skips the run ending %s: %s",
            machine.id,
            previous.ended_at,
            verdict,
        )
        return None
    session.execute(
        update(Recording).where(Recording.id.in_([r.id for r in members])).values(learned=True)
    )
    session.flush()
    try:
        with session.begin_nested():
            baseline, model = baselines_service.build_and_activate(
                session,
                runtime,
                machine,
                enrollment_only=True,
                source="learning",
                note=(
                    f"learning: admitted the normal run {members[0].started_at.isoformat()} to "
                    f"{members[-1].ended_at.isoformat()} ({len(members)} recording(s))"
                ),
            )
    except Exception as exc:  # noqa: BLE001 - learning never fails an upload
        log.warning("machine %s: learning could not build a new version: %s", machine.id, exc)
        return None
    log.info("machine %s: learning built baseline v%d", machine.id, baseline.version)
    return baseline.version, model


def may_end_a_run(previous, recording, gap_seconds: float) -> bool:
    """True when ``recording`` (with ``started_at``, ``ended_at``, ``conditions``) starts a run
    other than that of ``previous``, the latest recording that started before it (None: none),
    and that run is not baseline material yet: only then has ``after_ingest`` a run to look at.
    Both need only those attributes (and ``is_enrollment``, ``learned`` of ``previous``)."""
    if previous is None or previous.is_enrollment or previous.learned:
        return False
    spans = [
        runs.Span(i, r.started_at, r.ended_at, r.conditions or {})
        for i, r in enumerate((previous, recording))
    ]
    run_of = runs.assign_runs(spans, gap_seconds)
    return run_of[0] != run_of[1]


def _run_recordings(session: Session, machine: Machine, last: Recording) -> list[Recording]:
    """The recordings of the run that ``last`` ends (walking back while the gap is short)."""
    window_start = last.started_at - timedelta(days=max(machine.learning_days, 1.0))
    candidates = list(
        session.execute(
            select(Recording)
            .where(
                Recording.machine_id == machine.id,
                Recording.started_at <= last.started_at,
                Recording.started_at >= window_start,
            )
            .order_by(Recording.started_at, Recording.id)
        ).scalars()
    )
    spans = [runs.Span(r.id, r.started_at, r.ended_at, r.conditions or {}) for r in candidates]
    run_of = runs.assign_runs(spans, machine.run_gap_seconds)
    key = run_of[last.id]
    return [r for r in candidates if run_of[r.id] == key]


def _admissible(
    session: Session, runtime: Runtime, machine: Machine, members: list[Recording]
) -> str | None:
    """None when the run may join the baseline, else why not."""
    rows = session.execute(
        select(
            Window.score, Window.is_outlier, Window.label, Window.embedding, Window.recording_id
        ).where(Window.recording_id.in_([r.id for r in members]))
    ).all()
    if not rows:
        return "no windows"
    if any(r.score is None for r in rows):
        return "some windows were not scored"
    if any(r.label == "anomaly" for r in rows):
        return "a window is labelled anomaly"
    limit = MAX_OUTLIER_FRACTION
    active = np.mean([bool(r.is_outlier) for r in rows])
    if active > limit:
        return f"{active:.1%} of its windows are above the active threshold"
    if any(r.embedding is None for r in rows):
        return "embeddings were pruned"
    enrollment = baselines_repo.get(session, machine.id, ENROLLMENT_VERSION, with_artifact=True)
    if enrollment is None or enrollment.embedder != machine.embedder:
        return "no enrollment version to check against"
    model = runtime.baselines.get(machine.id, ENROLLMENT_VERSION)
    if model is None:
        model = load_baseline(enrollment.artifact, expected_embedder=machine.embedder)
    # Each recording within its own operating condition when v1 was fitted within conditions.
    conditions = {r.id: r.conditions for r in members}
    flagged = []
    for recording_id in conditions:
        vectors = [
            np.frombuffer(r.embedding, dtype="<f4") for r in rows if r.recording_id == recording_id
        ]
        if vectors:
            flagged.append(
                baselines_service.flags(model, np.stack(vectors), conditions[recording_id])
            )
    first = float(np.mean(np.concatenate(flagged)))
    if first > limit:
        return f"{first:.1%} of its windows are above the enrollment version's threshold"
    return None

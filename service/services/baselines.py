"""Baselines: build a version from normal material, activate (roll back/forward), load.

A machine with ``baseline_condition`` set (an operating-condition attribute of its
recordings, e.g. ``pattern``) gets a ``ConditionalBaseline``: one kNN baseline per value of
that attribute with enough runs, a pooled one for the rest (and for recordings without the
attribute). Its scores are ratios to the threshold of the model that scored them, so the
stored threshold is 1.0 and ``score / threshold`` means what it means for a pooled baseline.
Every build goes through ``fit_baseline``; ``score``, ``model_for`` and ``flags`` are how the
rest of the service uses either kind of baseline.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from detectors.baseline import KNNBaseline
from detectors.conditions import ConditionalBaseline, load_baseline
from service.errors import InsufficientMaterialError, NotFoundError
from service.models import Baseline, Machine
from service.repositories import baselines as baselines_repo
from service.repositories import recordings as recordings_repo
from service.repositories import windows as windows_repo
from service.runtime import Runtime
from service.services import runs
from service.services.machines import get_writable_machine

# When all material comes from one run, calibration needs groups: the run is cut into this
# many consecutive segments instead (near copies of each other, so the threshold comes out
# too low for new runs; enrollment asks for several runs by default for that reason).
SINGLE_RUN_SEGMENTS = 5


@dataclass
class Material:
    """Normal vectors of one machine, ``(n, dim)`` float32, with their provenance."""

    vectors: np.ndarray
    window_ids: np.ndarray
    groups: np.ndarray
    source_from: datetime | None
    source_to: datetime | None
    n_recordings: int
    n_labelled_normal: int
    n_available: int
    n_runs: int = 0
    groups_are: str = "runs"
    # Per window, its recording's value of the machine's ``baseline_condition`` (None: the
    # recording does not give it); None when the machine fits one pooled baseline.
    conditions: list[Hashable] | None = None


AnyBaseline = KNNBaseline | ConditionalBaseline


def collect_material(
    session: Session,
    machine: Machine,
    *,
    start: datetime | None,
    end: datetime | None,
    enrollment_only: bool,
    max_vectors: int,
    seed: int = 0,
) -> Material:
    """Load the machine's normal embeddings in a time range (see ``windows.baseline_material``)."""
    rows = windows_repo.baseline_material(
        session, machine.id, start=start, end=end, enrollment_only=enrollment_only
    )
    n_available = len(rows)
    if n_available > max_vectors:
        # Keep every window labelled normal, then a seeded uniform sample of the rest.
        labelled = [i for i, r in enumerate(rows) if r.label == "normal"][:max_vectors]
        rest = np.array([i for i, r in enumerate(rows) if r.label != "normal"])
        take = max_vectors - len(labelled)
        picked = np.random.default_rng(seed).choice(rest, size=take, replace=False)
        keep = np.sort(np.concatenate([np.array(labelled, dtype=int), picked.astype(int)]))
        rows = [rows[i] for i in keep]
    dim = None
    vectors = []
    for row in rows:
        vec = np.frombuffer(row.embedding, dtype="<f4")
        if dim is None:
            dim = vec.size
        if vec.size == dim:
            vectors.append(vec)
    if len(vectors) != len(rows):
        raise InsufficientMaterialError(
            f"machine {machine.id!r} holds embeddings of different sizes; rebuild is not possible"
        )
    recordings = np.array([r.recording_id for r in rows], dtype=np.int64)
    ids = [int(i) for i in np.unique(recordings)]
    spans = {row[0]: runs.Span(*row) for row in recordings_repo.spans_by_id(session, ids)}
    groups, n_runs, groups_are = _run_groups(machine, recordings, spans)
    name = machine.baseline_condition
    return Material(
        conditions=None
        if name is None
        else [condition_value(spans[int(r)].conditions, name) for r in recordings],
        vectors=np.stack(vectors).astype(np.float32) if vectors else np.zeros((0, 0), np.float32),
        window_ids=np.array([r.id for r in rows], dtype=np.int64),
        groups=groups,
        n_runs=n_runs,
        groups_are=groups_are,
        source_from=min((r.start_at for r in rows), default=None),
        source_to=max((r.end_at for r in rows), default=None),
        n_recordings=int(np.unique(recordings).size),
        n_labelled_normal=sum(1 for r in rows if r.label == "normal"),
        n_available=n_available,
    )


def _run_groups(
    machine: Machine, recordings: np.ndarray, spans: dict[int, runs.Span]
) -> tuple[np.ndarray, int, str]:
    """Calibration groups ``(n,)`` for windows of these recordings: their runs, or consecutive
    segments of the only run; with the number of runs and what the groups are."""
    if recordings.size == 0:
        return recordings, 0, "runs"
    run_of = runs.assign_runs(spans.values(), machine.run_gap_seconds)
    keys = sorted(set(run_of.values()))
    index = {key: i for i, key in enumerate(keys)}
    groups = np.array([index[run_of[int(r)]] for r in recordings], dtype=np.int64)
    if len(keys) >= 2 or recordings.size < 2:
        return groups, len(keys), "runs"
    segments = min(SINGLE_RUN_SEGMENTS, recordings.size)
    return (np.arange(recordings.size) * segments) // recordings.size, 1, "segments of one run"


def condition_value(conditions: dict[str, Any] | None, name: str | None) -> Hashable | None:
    """A recording's value of the operating condition ``name`` (None when it gives none)."""
    if name is None or not conditions:
        return None
    value = conditions.get(name)
    return None if value is None or value == "" else value


def fit_baseline(
    runtime: Runtime, machine: Machine, material: Material, k: int, false_alarm_rate: float
) -> AnyBaseline:
    """Fit a ``KNNBaseline`` on the material (needs more than ``k`` vectors), or a
    ``ConditionalBaseline`` within the machine's ``baseline_condition`` when it has one."""
    if material.vectors.shape[0] < max(k + 1, 2):
        raise InsufficientMaterialError(
            f"machine {machine.id!r} has {material.vectors.shape[0]} normal window(s) with "
            f"embeddings in that range; a baseline with k={k} needs at least {k + 1}"
        )

    def make() -> KNNBaseline:
        return KNNBaseline(
            k=k,
            metric=machine.metric,
            standardize=machine.standardize,
            whiten=machine.whiten,
            false_alarm_rate=false_alarm_rate,
            embedder_spec=machine.embedder,
            block_space=machine.block_space,
        )

    if material.conditions is None:
        model: AnyBaseline = make().fit(material.vectors, material.groups)
        parts = [model]
    else:
        model = ConditionalBaseline(make, condition_name=machine.baseline_condition).fit(
            material.vectors, material.groups, material.conditions
        )
        parts = list(model.models_.values())
    model.threshold_method_.update(runs=material.n_runs, groups_are=material.groups_are)
    for part in parts:
        if not np.isfinite(part.threshold_) or part.threshold_ <= 0:
            raise InsufficientMaterialError(
                f"the normal material of machine {machine.id!r} does not vary (threshold "
                f"{part.threshold_:g}): is the microphone silent or every clip identical? "
                "Send recordings of the machine running"
            )
    return model


def score(model: AnyBaseline, vectors: np.ndarray, conditions: dict[str, Any] | None) -> np.ndarray:
    """Scores ``(m,)`` of one recording's ``(m, dim)`` windows: distances for a pooled
    baseline, ratios within the recording's condition for a conditional one."""
    if isinstance(model, ConditionalBaseline):
        value = condition_value(conditions, model.condition_name)
        return model.decision_function(vectors, value)
    return model.decision_function(vectors)


def flags(model: AnyBaseline, vectors: np.ndarray, conditions: dict[str, Any] | None) -> np.ndarray:
    """True ``(m,)`` where a window of a recording with these conditions is above threshold."""
    return score(model, vectors, conditions) > model.threshold_


def model_for(
    model: AnyBaseline, conditions: dict[str, Any] | None, vector: np.ndarray | None = None
) -> tuple[KNNBaseline, np.ndarray | None]:
    """The ``KNNBaseline`` that scores a recording with these conditions, and the rows of the
    fit material it holds (None: all of them, in order)."""
    if isinstance(model, ConditionalBaseline):
        value = condition_value(conditions, model.condition_name)
        vectors = None if vector is None else np.asarray(vector, np.float32).reshape(1, -1)
        return model.model_for(value, vectors), model.rows_for(value, vectors)
    return model, None


def store_baseline(
    session: Session,
    machine: Machine,
    model: AnyBaseline,
    material: Material,
    *,
    source_filter: dict[str, Any],
    note: str | None,
    activate: bool,
) -> Baseline:
    """Insert the next version (the caller holds the machine row lock) and maybe activate it."""
    baseline = Baseline(
        machine_id=machine.id,
        version=baselines_repo.next_version(session, machine.id),
        embedder=machine.embedder,
        k=model.k,
        metric=model.metric,
        standardize=model.standardize,
        false_alarm_rate=model.false_alarm_rate,
        threshold=float(model.threshold_),
        threshold_method=dict(model.threshold_method_),
        n_vectors=int(model.n_vectors_),
        n_recordings=material.n_recordings,
        source_from=material.source_from,
        source_to=material.source_to,
        source_filter={
            **source_filter,
            "windows_available": material.n_available,
            "windows_used": int(material.vectors.shape[0]),
            "labelled_normal": material.n_labelled_normal,
        },
        note=note,
        artifact=model.to_bytes(),
    )
    baselines_repo.add(session, baseline, material.window_ids.tolist())
    if activate:
        machine.active_baseline_version = baseline.version
        if machine.state == "enrolling":
            machine.state = "monitoring"
    session.flush()
    return baseline


def build_and_activate(
    session: Session,
    runtime: Runtime,
    machine: Machine,
    *,
    enrollment_only: bool,
    source: str,
    note: str,
) -> tuple[Baseline, AnyBaseline]:
    """Fit a version on all the machine's material (its chosen material only with
    ``enrollment_only``), store and activate it, in the caller's transaction (machine row
    locked); returns the row and the fitted model (for the process cache, after commit)."""
    material = collect_material(
        session,
        machine,
        start=None,
        end=None,
        enrollment_only=enrollment_only,
        max_vectors=runtime.settings.max_baseline_vectors,
    )
    model = fit_baseline(runtime, machine, material, machine.k, machine.false_alarm_rate)
    baseline = store_baseline(
        session,
        machine,
        model,
        material,
        source_filter={"from": None, "to": None, "source": source},
        note=note,
        activate=True,
    )
    return baseline, model


def list_baselines(session: Session, machine: Machine) -> Sequence[Baseline]:
    return baselines_repo.list_for_machine(session, machine.id)


def get_baseline(session: Session, machine: Machine, version: int) -> Baseline:
    baseline = baselines_repo.get(session, machine.id, version)
    if baseline is None:
        raise NotFoundError(f"machine {machine.id!r} has no baseline version {version}")
    return baseline


def activate(session: Session, machine: Machine, version: int) -> Baseline:
    """Make ``version`` the active baseline (the caller holds the machine row lock)."""
    baseline = get_baseline(session, machine, version)
    machine.active_baseline_version = version
    if machine.state == "enrolling":
        machine.state = "monitoring"
    session.flush()
    return baseline


def load_active(session: Session, runtime: Runtime, machine: Machine) -> AnyBaseline:
    """The machine's active baseline, from the process cache or the database."""
    version = machine.active_baseline_version
    if version is None:
        raise NotFoundError(f"machine {machine.id!r} has no active baseline")
    model = runtime.baselines.get(machine.id, version)
    if model is None:
        row = baselines_repo.get(session, machine.id, version, with_artifact=True)
        if row is None:
            raise NotFoundError(f"machine {machine.id!r} has no baseline version {version}")
        model = load_baseline(row.artifact, expected_embedder=machine.embedder)
        runtime.baselines.put(machine.id, version, model)
    return model


def rebuild(
    runtime: Runtime,
    machine_id: str,
    *,
    start: datetime | None,
    end: datetime | None,
    k: int | None,
    false_alarm_rate: float | None,
    activate_now: bool,
    note: str | None,
) -> tuple[Baseline, bool]:
    """Build a new version from normal material in ``[start, end)``; maybe activate it.

    Loading and fitting run in a read transaction; only the insert takes the machine's row
    lock, so ingest for the machine carries on while a large baseline is fitted.
    """
    db = runtime.db
    with db.session() as session:
        machine = get_writable_machine(session, machine_id)
        k = k or machine.k
        false_alarm_rate = false_alarm_rate or machine.false_alarm_rate
        material = collect_material(
            session,
            machine,
            start=start,
            end=end,
            enrollment_only=False,
            max_vectors=runtime.settings.max_baseline_vectors,
        )
    model = fit_baseline(runtime, machine, material, k, false_alarm_rate)
    with db.session() as session:
        machine = get_writable_machine(session, machine_id, for_update=True)
        baseline = store_baseline(
            session,
            machine,
            model,
            material,
            source_filter={
                "from": start.isoformat() if start else None,
                "to": end.isoformat() if end else None,
                "source": "rebuild",
            },
            note=note,
            activate=activate_now,
        )
        active = machine.active_baseline_version == baseline.version
    if active:
        runtime.baselines.put(machine_id, baseline.version, model)
    return baseline, active


def activate_version(runtime: Runtime, machine_id: str, version: int) -> Baseline:
    """Roll back or forward to ``version``; the process cache follows at once."""
    with runtime.db.session() as session:
        machine = get_writable_machine(session, machine_id, for_update=True)
        baseline = activate(session, machine, version)
        row = baselines_repo.get(session, machine.id, version, with_artifact=True)
        model = load_baseline(row.artifact, expected_embedder=machine.embedder)
    runtime.baselines.put(machine_id, version, model)
    return baseline

"""Review: a window's spectrogram, its nearest baseline windows, its band explanation, and
the time series the plant and machine pages draw.

The neighbours of a window are found in the baseline version that scored it (the active
one for windows scored before versions were kept apart, or unscored ones), with the index
code scoring uses; vector ``i`` of a baseline is its ``i``-th member window in (start_at,
id) order, which ``collect_material`` fitted them in. Every answer checks that the members
line up with the stored vectors before naming them. A baseline fitted within operating
conditions answers from the kNN baseline that scored the window (the one of its recording's
condition, or the pooled one), whose vectors are the members of that condition in the same
order.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy.orm import Session

from detectors.baseline import KNNBaseline
from detectors.conditions import ConditionalBaseline, load_baseline
from detectors.explain import explain_bands
from detectors.spectrogram import log_mel_image, render_rgb
from service.errors import ConflictError, GoneError, InvalidInputError, NotFoundError
from service.models import Baseline, Machine, Recording, Window, utcnow
from service.repositories import baselines as baselines_repo
from service.repositories import review as review_repo
from service.repositories import windows as windows_repo
from service.runtime import Runtime
from service.schemas_review import (
    BandOut,
    ExplanationOut,
    NeighbourOut,
    NeighboursOut,
    OpenEventOut,
    PlantMachineOut,
    PlantOut,
    RatioSeriesOut,
    RegionOut,
    SeriesPoint,
)
from service.services import baselines as baselines_service
from service.services.machines import get_machine
from service.services.windows import window_samples

MAX_NEIGHBOURS = 50
SPECTROGRAM_WIDTH = (32, 2048)
SPECTROGRAM_HEIGHT = (32, 1024)
SPECTROGRAM_RANGE_DB = 80.0
MAX_BUCKETS = 1000
DEFAULT_SPECTROGRAM = {"n_fft": 1024, "hop_length": 256, "n_mels": 128, "f_min": 0.0}


@dataclass
class _Fitted:
    baseline: Baseline
    model: KNNBaseline | ConditionalBaseline
    member_ids: list[int]

    def for_window(
        self, session: Session, window: Window, vector: np.ndarray
    ) -> tuple[KNNBaseline, list[int]]:
        """The kNN baseline that scores this window (its recording's operating condition, for
        a baseline fitted within conditions) and that baseline's member ids in its order."""
        recording = session.get(Recording, window.recording_id)
        model, rows = baselines_service.model_for(
            self.model, recording.conditions if recording else None, vector
        )
        members = self.member_ids if rows is None else [self.member_ids[i] for i in rows]
        return model, members


class _FittedCache:
    """A few fitted baselines with their member ids (versions are immutable)."""

    def __init__(self, size: int = 4) -> None:
        self._entries: OrderedDict[tuple[str, int], _Fitted] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, key: tuple[str, int]) -> _Fitted | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, key: tuple[str, int], entry: _Fitted) -> None:
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)


def per_runtime(runtime: Runtime, name: str, factory):
    """A cache kept on the app's runtime (one per app and database, never shared)."""
    with _RUNTIME_LOCK:
        cache = getattr(runtime, name, None)
        if cache is None:
            cache = factory()
            setattr(runtime, name, cache)
        return cache


_RUNTIME_LOCK = threading.Lock()


def _window(session: Session, window_id: int) -> Window:
    window = windows_repo.get(session, window_id)
    if window is None:
        raise NotFoundError(f"window {window_id} does not exist")
    return window


def _fitted(session: Session, runtime: Runtime, machine: Machine, version: int) -> _Fitted:
    key = (machine.id, version)
    cache = per_runtime(runtime, "review_baselines", _FittedCache)
    entry = cache.get(key)
    if entry is not None:
        return entry
    row = baselines_repo.get(session, machine.id, version, with_artifact=True)
    if row is None:
        raise NotFoundError(f"machine {machine.id!r} has no baseline version {version}")
    if version == machine.active_baseline_version:
        model = baselines_service.load_active(session, runtime, machine)
    else:
        model = load_baseline(row.artifact, expected_embedder=row.embedder)
    members = review_repo.member_ids_in_fit_order(session, row.id)
    if len(members) != model.n_vectors_:
        raise ConflictError(
            f"baseline v{version} of {machine.id!r} lists {len(members)} member windows for "
            f"{model.n_vectors_} vectors (members were deleted?); rebuild the baseline"
        )
    entry = _Fitted(row, model, members)
    cache.put(key, entry)
    return entry


def _version_for(window: Window, machine: Machine, version: int | None) -> int:
    chosen = version or window.baseline_version or machine.active_baseline_version
    if chosen is None:
        raise ConflictError(
            f"machine {machine.id!r} has no baseline yet (it is {machine.state}); "
            "windows can be compared once enrollment has built one"
        )
    return chosen


def window_vector(session: Session, runtime: Runtime, window: Window, machine: Machine):
    """The window's embedding ``(dim,)``: stored, or recomputed from its audio once pruned."""
    if window.embedding is not None:
        return np.frombuffer(window.embedding, dtype="<f4").astype(np.float32)
    try:
        samples, _rate = window_samples(session, window.id)
    except GoneError as exc:
        raise GoneError(
            f"window {window.id} has neither its embedding nor its audio any more "
            "(both were pruned by retention)"
        ) from exc
    return runtime.embedders.get(machine.embedder).embed(samples[None, :])[0]


def neighbours(
    session: Session, runtime: Runtime, window_id: int, k: int | None, version: int | None
) -> NeighboursOut:
    """The window's nearest baseline windows, nearest first, with their distances."""
    window = _window(session, window_id)
    machine = get_machine(session, window.machine_id)
    version = _version_for(window, machine, version)
    fitted = _fitted(session, runtime, machine, version)
    vector = window_vector(session, runtime, window, machine)
    if vector.size != fitted.model.dim_:
        raise ConflictError(
            f"window {window_id} has {vector.size}-d embedding; baseline v{version} holds "
            f"{fitted.model.dim_}-d vectors (the machine's embedder changed)"
        )
    model, member_ids = fitted.for_window(session, window, vector)
    k = min(k or model.k, MAX_NEIGHBOURS, model.n_vectors_)
    z = model.transform(vector[None, :])
    index = model.index_
    exact = getattr(index, "_exact", None)  # NN-descent: answer exactly for one window
    dist, idx = (exact() if exact else index).query(z, k)
    ids = [member_ids[i] for i in idx[0]]
    _check_members(session, model, idx[0], ids, machine.id, version)
    rows = review_repo.details(session, ids)
    items = [
        NeighbourOut(
            rank=r + 1,
            window_id=wid,
            machine_id=rows[wid].machine_id,
            machine_name=rows[wid].machine_name,
            distance=float(d),
            start_at=rows[wid].start_at,
            end_at=rows[wid].end_at,
            label=rows[wid].label,
            has_audio=bool(rows[wid].has_audio),
        )
        for r, (wid, d) in enumerate(zip(ids, dist[0], strict=True))
    ]
    score_k = dist[0][: model.k].mean() if len(dist[0]) else float("nan")
    return NeighboursOut(
        window_id=window_id,
        machine_id=machine.id,
        baseline_version=version,
        k=k,
        metric=model.metric,
        score=window.score,
        mean_distance=float(score_k),
        # mean_distance is a distance in the per-dimension space: its threshold is that space's
        # own (threshold_ itself for a baseline of one space; with two, threshold_ is that of
        # the combined ratio, in other units).
        threshold=float(getattr(model, "primary_threshold_", model.threshold_)),
        neighbours=items,
    )


def _check_members(session, model, idx, ids, machine_id: str, version: int) -> None:
    stored = review_repo.embeddings(session, ids)
    for i, wid in zip(idx, ids, strict=True):
        raw = stored.get(wid)
        if raw is None:
            continue  # a member's embedding is never pruned; nothing to compare against
        vec = model.transform(np.frombuffer(raw, dtype="<f4")[None, :])[0]
        if vec.shape != model.vectors_[i].shape or not np.allclose(
            vec, model.vectors_[i], rtol=1e-4, atol=1e-3
        ):
            raise ConflictError(
                f"baseline v{version} of {machine_id!r}: member windows do not line up with "
                "its vectors; rebuild the baseline to review its neighbours"
            )


def explanation(
    session: Session, runtime: Runtime, window_id: int, bands: int | None, version: int | None
) -> ExplanationOut:
    """Per band, how far the window's log-mel statistics lie from the baseline's."""
    window = _window(session, window_id)
    machine = get_machine(session, window.machine_id)
    spec = machine.embedder
    if spec.get("name") != "logmel":
        raise ConflictError(
            f"band explanations need a log-mel embedder (its vectors are statistics per mel "
            f"band); machine {machine.id!r} uses {spec.get('name')!r}, whose dimensions are "
            "not frequency bands"
        )
    version = _version_for(window, machine, version)
    fitted = _fitted(session, runtime, machine, version)
    embedder = runtime.embedders.get(spec)
    vector = window_vector(session, runtime, window, machine)
    if vector.size != fitted.model.dim_:
        raise ConflictError(
            f"window {window_id} has {vector.size}-d embedding; baseline v{version} holds "
            f"{fitted.model.dim_}-d vectors (the machine's embedder changed)"
        )
    model, _ = fitted.for_window(session, window, vector)
    # z-scores per band from the baseline's own z-scoring (before any whitening: whitened
    # components are mixtures of bands). Without standardisation the raw baseline vectors
    # give the statistics, when they are stored untransformed.
    projection = getattr(getattr(model, "transform_", None), "projection", None)
    if model.standardize:
        mean, scale = model.mean_, model.scale_
    elif projection is None:
        mean = model.vectors_.mean(axis=0)
        std = model.vectors_.std(axis=0)
        scale = np.maximum(std, 1e-3 * max(float(std.mean()), 1e-12))
    else:
        raise ConflictError(
            f"baseline v{version} of {machine.id!r} is whitened without standardisation: its "
            "per-band statistics are not kept, so bands cannot be compared"
        )
    result = explain_bands(
        vector,
        mean,
        scale,
        pooling=list(embedder.pooling),
        n_mels=embedder.n_mels,
        sample_rate=embedder.sample_rate,
        f_min=embedder.f_min,
        f_max=embedder.f_max,
        n_groups=min(bands, embedder.n_mels) if bands else None,
    )
    return ExplanationOut(
        window_id=window_id,
        machine_id=machine.id,
        baseline_version=version,
        stats=result.stats,
        bands=[BandOut(**b.__dict__) for b in result.bands],
        top=[RegionOut(**r.__dict__) for r in result.top],
        summary=result.summary,
    )


@dataclass
class Spectrogram:
    png: bytes
    db_min: float
    db_max: float
    low_hz: float
    high_hz: float


def spectrogram(
    session: Session,
    runtime: Runtime,
    window_id: int,
    *,
    width: int,
    height: int,
    db_min: float | None,
    db_max: float | None,
) -> Spectrogram:
    """The window's log-mel spectrogram as a colour-mapped PNG (mel scale, low at the bottom).

    Without ``db_max`` the range ends at the picture's loudest point; without ``db_min`` it
    starts at the picture's 2nd percentile (at most 80 dB, at least 10 dB below ``db_max``).
    Pass the same range to compare two windows.
    """
    lo_w, hi_w = SPECTROGRAM_WIDTH
    lo_h, hi_h = SPECTROGRAM_HEIGHT
    if not (lo_w <= width <= hi_w and lo_h <= height <= hi_h):
        raise InvalidInputError(
            f"width must be {lo_w}-{hi_w} and height {lo_h}-{hi_h} pixels, got {width}x{height}"
        )
    window = _window(session, window_id)
    machine = get_machine(session, window.machine_id)
    samples, rate = window_samples(session, window_id)
    params = dict(DEFAULT_SPECTROGRAM)
    spec = machine.embedder
    if spec.get("name") == "logmel" and int(spec.get("sample_rate", rate)) == rate:
        for key in ("n_fft", "hop_length", "n_mels", "f_min", "f_max"):
            if spec.get(key) is not None:
                params[key] = spec[key]
    if samples.size < params["n_fft"]:
        raise InvalidInputError(f"window {window_id} is too short to draw ({samples.size} samples)")
    image = log_mel_image(samples, rate, **params)
    top = float(image.max()) if db_max is None else float(db_max)
    if db_min is None:
        # The quietest 2 % go dark; at most SPECTROGRAM_RANGE_DB below the top.
        bottom = max(top - SPECTROGRAM_RANGE_DB, float(np.percentile(image, 2.0)))
        bottom = min(bottom, top - 10.0)
    else:
        bottom = float(db_min)
    if not top > bottom:
        raise InvalidInputError(f"db_max ({top:g}) must be above db_min ({bottom:g})")
    rgb = render_rgb(image, width, height, bottom, top)
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buf, format="PNG", compress_level=3)
    f_max = params.get("f_max") or rate / 2.0
    return Spectrogram(buf.getvalue(), bottom, top, float(params["f_min"]), float(f_max))


# -- time series ---------------------------------------------------------------------------


def _check_range(start: datetime, end: datetime, buckets: int) -> float:
    if start >= end:
        raise InvalidInputError("'from' must be before 'to'")
    if not 1 <= buckets <= MAX_BUCKETS:
        raise InvalidInputError(f"buckets must be 1-{MAX_BUCKETS}, got {buckets}")
    if end - start > timedelta(days=400):
        raise InvalidInputError("a series spans at most 400 days")
    return (end - start).total_seconds() / buckets


def ratio_series(
    session: Session, machine_id: str, start: datetime, end: datetime, buckets: int
) -> RatioSeriesOut:
    """A machine's ratio in ``buckets`` equal time buckets (mean, max, outliers)."""
    get_machine(session, machine_id)
    width = _check_range(start, end, buckets)
    rows = review_repo.ratio_buckets(session, [machine_id], start, end, width)
    points = [
        SeriesPoint(
            start=start + timedelta(seconds=width * int(r.bucket)),
            n=int(r.n),
            mean_ratio=None if r.mean_ratio is None else float(r.mean_ratio),
            max_ratio=None if r.max_ratio is None else float(r.max_ratio),
            outliers=int(r.outliers or 0),
        )
        for r in rows
        if 0 <= int(r.bucket) < buckets
    ]
    return RatioSeriesOut(
        machine_id=machine_id, from_=start, to=end, bucket_seconds=width, points=points
    )


def _health(session: Session, machines: list[Machine]) -> dict:
    """Per machine (health, open events by kind) where the service keeps events, else {}."""
    try:
        from service.services import events as events_service
    except ImportError:  # a service without events: the page derives what it can
        return {}
    return events_service.machine_health(session, machines)


def plant(session: Session, runtime: Runtime, hours: float, buckets: int) -> PlantOut:
    """Every machine with its state, newest window and a trend of its max ratio."""
    now = utcnow()
    start = now - timedelta(hours=hours)
    width = _check_range(start, now, buckets)
    machines = [
        m
        for m in session.query(Machine).order_by(Machine.site, Machine.area, Machine.id)
        if m.archived_at is None
    ]
    last = review_repo.last_windows(session)
    trends: dict[str, list[float | None]] = {m.id: [None] * buckets for m in machines}
    counts: dict[str, list[int]] = {m.id: [0, 0] for m in machines}
    for r in review_repo.ratio_buckets(session, None, start, now, width):
        b = int(r.bucket)
        if r.machine_id in trends and 0 <= b < buckets:
            trends[r.machine_id][b] = None if r.max_ratio is None else float(r.max_ratio)
            counts[r.machine_id][0] += int(r.n)
            counts[r.machine_id][1] += int(r.outliers or 0)
    health = _health(session, machines)
    out = []
    for m in machines:
        newest = last.get(m.id)
        state, opened = health.get(m.id, (None, {}))
        out.append(
            PlantMachineOut(
                id=m.id,
                name=m.name,
                site=m.site,
                area=m.area,
                machine_type=m.machine_type,
                state=m.state,
                enrolled_seconds=m.enrolled_seconds or 0.0,
                active_baseline_version=m.active_baseline_version,
                embedder=str(m.embedder.get("name")),
                last_window_at=newest.end_at if newest else None,
                last_ratio=newest.ratio if newest else None,
                last_is_outlier=newest.is_outlier if newest else None,
                windows=counts[m.id][0],
                outliers=counts[m.id][1],
                trend=trends[m.id],
                health=state,
                open_events=[
                    OpenEventOut(
                        id=e.id,
                        kind=e.kind,
                        severity=e.severity,
                        state=e.state,
                        opened_at=e.opened_at,
                        cause=getattr(e, "cause", None),
                    )
                    for e in opened.values()
                ],
            )
        )
    return PlantOut(
        generated_at=now,
        from_=start,
        to=now,
        bucket_seconds=width,
        min_enrollment_seconds=runtime.settings.min_enrollment_seconds,
        machines=out,
    )

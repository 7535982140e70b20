"""Search: "find sounds like this" over every stored window embedding of the fleet.

Windows are only comparable when one embedder made them, so the fleet is searched per
embedder spec: a query window searches the machines that share its machine's embedder; an
uploaded clip is embedded with the embedder of the machines its filters select (they must
share one). Vectors live in memory per spec (``EmbeddingStore``), loaded from the database
on the first search and then extended with the windows stored since (by id); labels changed
since the last search are refreshed on every search. Filters are a boolean mask over the
loaded rows, and the search itself is ``detectors.index.ExactIndex`` (the code scoring uses)
told to ignore the masked-out rows, over sealed segments of ``SEGMENT_ROWS`` vectors plus a
small tail rebuilt as windows arrive. Euclidean vectors (log-mel) are z-scored with the
store's own mean and scale (fixed when the store is built; rebuilt when it has doubled);
cosine vectors (transformers embedders) are compared as they are.

Cost grows linearly with the stored windows (benchmarks/search.py): the memory is
``4 * dim`` bytes per window (512-d log-mel: 2 GB per million windows), a query is one pass
over the vectors of that embedder.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from detectors.audio import decode as decode_audio
from detectors.audio import resample, to_mono
from detectors.errors import AudioTooShortError
from detectors.index import ExactIndex
from detectors.windows import frame
from service.errors import InvalidInputError, NotFoundError, PayloadTooLargeError
from service.models import Machine, Window, utcnow
from service.repositories import review as review_repo
from service.runtime import Runtime, spec_key
from service.schemas_review import SearchCapabilities, SearchFilters, SearchHit, SearchOut
from service.services.machines import get_machine
from service.services.review import per_runtime, window_vector

SEGMENT_ROWS = 65_536
LOAD_BATCH = 5_000
MAX_RESULTS = 1_000
LATE_COMMIT_IDS = 2_000
# Below this fraction of a segment's rows allowed by the filters, the allowed rows are copied
# and searched alone (benchmarks/search.py: masking cost more than the whole search).
SUBSET_FRACTION = 0.25
MAX_QUERY_SECONDS = 60.0
MAX_QUERY_WINDOWS = 64
LABEL_CODES = {None: 0, "normal": 1, "anomaly": 2}
TEXT_UNAVAILABLE = (
    "text search needs machines whose embedder is a full CLAP model (hf embedder, projection "
    "pooling): its text tower puts words in the same space as their sound"
)


def _epoch(at: datetime) -> float:
    return at.timestamp()


@dataclass
class _Columns:
    """Per-row metadata of an ``EmbeddingStore``, each ``(n,)``."""

    window_id: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    recording_id: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    machine: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    start: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    label: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))
    outlier: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))

    def extend(self, other: _Columns) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, np.concatenate([getattr(self, name), getattr(other, name)]))

    def __len__(self) -> int:
        return self.window_id.size


class EmbeddingStore:
    """Every stored embedding of one embedder spec, searchable with filters.

    Parameters
    ----------
    metric : "euclidean" (z-scored with the store's mean and scale) or "cosine" (as is)
    """

    def __init__(self, metric: str) -> None:
        self.metric = metric
        self.columns = _Columns()
        self.machines: list[str] = []
        self._machine_pos: dict[str, int] = {}
        self.segments: list[ExactIndex] = []
        self._tail: list[np.ndarray] = []
        self._tail_index: ExactIndex | None = None
        self.mean: np.ndarray | None = None
        self.scale: np.ndarray | None = None
        self.fitted_rows = 0
        self.dim: int | None = None
        self.last_id = 0
        self.labels_checked: datetime | None = None
        self.lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.columns)

    def machine_index(self, machine_id: str) -> int:
        pos = self._machine_pos.get(machine_id)
        if pos is None:
            pos = self._machine_pos[machine_id] = len(self.machines)
            self.machines.append(machine_id)
        return pos

    def _prepared(self, vectors: np.ndarray) -> np.ndarray:
        if self.metric != "euclidean" or self.mean is None:
            return vectors
        return ((vectors - self.mean) / self.scale).astype(np.float32)

    def add(self, vectors: np.ndarray, columns: _Columns) -> None:
        """Append ``(n, dim)`` vectors and their metadata."""
        if vectors.shape[0] == 0:
            return
        if self.dim is None:
            self.dim = vectors.shape[1]
        if self.metric == "euclidean" and self.mean is None:
            self.mean = vectors.mean(axis=0)
            std = vectors.std(axis=0)
            self.scale = np.maximum(std, 1e-3 * max(float(std.mean()), 1e-12)).astype(np.float32)
            self.fitted_rows = vectors.shape[0]
        self.columns.extend(columns)
        self._tail.append(self._prepared(vectors.astype(np.float32)))
        while sum(len(t) for t in self._tail) >= SEGMENT_ROWS:
            tail = np.concatenate(self._tail)
            self.segments.append(ExactIndex(tail[:SEGMENT_ROWS], self.metric))
            self._tail = [tail[SEGMENT_ROWS:]] if len(tail) > SEGMENT_ROWS else []
        self._tail_index = None

    def _indexes(self) -> list[ExactIndex]:
        if self._tail and self._tail_index is None:
            self._tail_index = ExactIndex(np.concatenate(self._tail), self.metric)
        return self.segments + ([self._tail_index] if self._tail else [])

    def search(
        self, queries: np.ndarray, allowed: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rows (into ``columns``) nearest to any of the ``(m, dim)`` queries, among the rows
        where ``allowed`` ``(n,)`` is True; ``(distances, rows)`` each ``(<= k,)``, nearest
        first (a row's distance is its smallest to any query)."""
        q = self._prepared(np.asarray(queries, dtype=np.float32))
        best_d, best_r = [], []
        offset = 0
        for index in self._indexes():
            n = len(index)
            mask = allowed[offset : offset + n]
            n_allowed = int(mask.sum())
            k_eff = min(k, n_allowed)
            if 0 < n_allowed <= SUBSET_FRACTION * n:
                # Selective filters: search a copy of the allowed rows only (masking the
                # others would still compute, and then sort, every distance).
                rows = np.flatnonzero(mask)
                sub = ExactIndex(index._data_t[:, rows].T, self.metric)
                dist, idx = sub.query(q, k_eff)
                ok = np.isfinite(dist)
                best_d.append(dist[ok])
                best_r.append(rows[idx[ok]] + offset)
            elif k_eff > 0:
                blocked = ~mask[None, :]
                dist, idx = index.query(
                    q,
                    k_eff,
                    exclude_fn=lambda rows, b=blocked: np.broadcast_to(
                        b, (rows.stop - rows.start, b.shape[1])
                    ),
                )
                ok = np.isfinite(dist)
                best_d.append(dist[ok])
                best_r.append(idx[ok] + offset)
            offset += n
        if not best_d:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        dist, rows = np.concatenate(best_d), np.concatenate(best_r)
        order = np.lexsort((rows, dist))
        dist, rows = dist[order], rows[order]
        _, first = np.unique(rows, return_index=True)  # each row once, at its nearest
        first = np.sort(first)
        return dist[first][:k], rows[first][:k]

    def needs_rebuild(self) -> bool:
        return self.metric == "euclidean" and len(self) > 2 * max(self.fitted_rows, 1000)


class SearchIndexes:
    """The embedding stores of a process, one per embedder spec."""

    def __init__(self) -> None:
        self._stores: dict[str, EmbeddingStore] = {}
        self._lock = threading.Lock()

    def store(self, key: str, metric: str) -> EmbeddingStore:
        with self._lock:
            store = self._stores.get(key)
            if store is None or store.needs_rebuild():
                store = self._stores[key] = EmbeddingStore(metric)
            return store

    def clear(self) -> None:
        with self._lock:
            self._stores.clear()


def _metric(spec: dict) -> str:
    return "euclidean" if spec.get("name") == "logmel" else "cosine"


def _columns_of(store: EmbeddingStore, rows) -> tuple[np.ndarray, _Columns] | None:
    dim = store.dim or len(rows[0].embedding) // 4
    keep = [r for r in rows if len(r.embedding) == 4 * dim]
    if not keep:
        return None
    vectors = np.frombuffer(b"".join(r.embedding for r in keep), dtype="<f4").reshape(
        len(keep), dim
    )
    return vectors, _Columns(
        window_id=np.array([r.id for r in keep], np.int64),
        recording_id=np.array([r.recording_id for r in keep], np.int64),
        machine=np.array([store.machine_index(r.machine_id) for r in keep], np.int32),
        start=np.array([_epoch(r.start_at) for r in keep], np.float64),
        label=np.array([LABEL_CODES.get(r.label, 0) for r in keep], np.int8),
        outlier=np.array([bool(r.is_outlier) for r in keep], bool),
    )


_ROW_COLUMNS = (
    Window.id,
    Window.recording_id,
    Window.machine_id,
    Window.start_at,
    Window.label,
    Window.is_outlier,
    Window.embedding,
)


def _load_late_commits(session: Session, store: EmbeddingStore, machine_ids: list[str]) -> None:
    """Windows whose ids were taken before ``last_id`` but committed after it was read
    (concurrent uploads on Postgres): the last ``LATE_COMMIT_IDS`` ids are checked again."""
    low = store.last_id - LATE_COMMIT_IDS
    ids = session.execute(
        select(Window.id).where(
            Window.id > low,
            Window.id <= store.last_id,
            Window.machine_id.in_(machine_ids),
            Window.embedding.is_not(None),
        )
    ).scalars()
    known = store.columns.window_id[store.columns.window_id > low]
    missing = np.setdiff1d(np.fromiter(ids, np.int64), known)
    if missing.size == 0:
        return
    rows = session.execute(
        select(*_ROW_COLUMNS).where(Window.id.in_(missing.tolist())).order_by(Window.id)
    ).all()
    loaded = _columns_of(store, rows) if rows else None
    if loaded is not None:
        store.add(*loaded)


def refresh(session: Session, store: EmbeddingStore, machine_ids: list[str]) -> None:
    """Load the group's windows stored since the last refresh; refresh changed labels.

    Rows are read in id order by the primary key alone and other machines' windows dropped
    here: a machine filter in SQL made SQLite read each batch through the machine index and
    sort it (100k windows took 41 s to load)."""
    wanted = set(machine_ids)
    # The first load is added in one piece, so the z-scoring statistics come from all of it.
    initial = len(store) == 0
    pending: list[tuple[np.ndarray, _Columns]] = []
    while True:
        rows = session.execute(
            select(*_ROW_COLUMNS)
            .where(Window.id > store.last_id)
            .order_by(Window.id)
            .limit(LOAD_BATCH)
        ).all()
        if not rows:
            break
        last = rows[-1].id
        rows = [r for r in rows if r.embedding is not None and r.machine_id in wanted]
        loaded = _columns_of(store, rows) if rows else None
        if loaded is not None:
            if initial:
                pending.append(loaded)
                store.dim = loaded[0].shape[1]
            else:
                store.add(*loaded)
        store.last_id = last
    if pending:
        columns = _Columns(
            **{
                name: np.concatenate([getattr(part, name) for _, part in pending])
                for name in _Columns.__dataclass_fields__
            }
        )
        store.add(np.concatenate([v for v, _ in pending]), columns)
        del pending
    _load_late_commits(session, store, machine_ids)
    checked = store.labels_checked
    now = utcnow()
    if checked is not None and len(store):
        # By the labelled_at index alone; windows of other machines are not in the store.
        changed = session.execute(
            select(Window.id, Window.label).where(Window.labelled_at >= checked)
        ).all()
        if changed:
            ids = np.array([r.id for r in changed], np.int64)
            codes = np.array([LABEL_CODES.get(r.label, 0) for r in changed], np.int8)
            order = np.argsort(ids)
            ids, codes = ids[order], codes[order]
            rows = np.flatnonzero(np.isin(store.columns.window_id, ids))
            store.columns.label[rows] = codes[np.searchsorted(ids, store.columns.window_id[rows])]
    store.labels_checked = now


def _machines_matching(session: Session, filters: SearchFilters) -> list[Machine]:
    stmt = select(Machine).where(Machine.archived_at.is_(None))
    if filters.site:
        stmt = stmt.where(Machine.site == filters.site)
    if filters.area:
        stmt = stmt.where(Machine.area == filters.area)
    if filters.machine_type:
        stmt = stmt.where(Machine.machine_type == filters.machine_type)
    if filters.machine:
        stmt = stmt.where(Machine.id.in_(filters.machine))
    return list(session.execute(stmt.order_by(Machine.id)).scalars())


def _group(session: Session, spec: dict) -> list[Machine]:
    key = spec_key(spec)
    machines = session.execute(select(Machine)).scalars()
    return [m for m in machines if spec_key(m.embedder) == key]


def _mask(store: EmbeddingStore, filters: SearchFilters, allowed_machines: list[str]):
    cols = store.columns
    wanted = [store._machine_pos[m] for m in allowed_machines if m in store._machine_pos]
    mask = np.isin(cols.machine, np.array(wanted, np.int32))
    if filters.start is not None:
        mask &= cols.start >= _epoch(filters.start)
    if filters.end is not None:
        mask &= cols.start < _epoch(filters.end)
    if filters.time_from is not None and filters.time_to is not None:
        tod = np.mod(cols.start, 86400.0)
        lo = (
            filters.time_from.hour * 3600 + filters.time_from.minute * 60 + filters.time_from.second
        )
        hi = filters.time_to.hour * 3600 + filters.time_to.minute * 60 + filters.time_to.second
        mask &= (tod >= lo) & (tod < hi) if lo <= hi else (tod >= lo) | (tod < hi)
    if filters.label == "normal":
        mask &= cols.label == 1
    elif filters.label == "anomaly":
        mask &= cols.label == 2
    elif filters.label == "unlabelled":
        mask &= cols.label == 0
    elif filters.label == "outlier":
        mask &= cols.outlier
    return mask


def _run(
    session: Session,
    runtime: Runtime,
    spec: dict,
    group: list[Machine],
    filters: SearchFilters,
    queries: np.ndarray,
    *,
    limit: int,
    offset: int,
    exclude_window: int | None,
    exclude_recording: int | None,
    query: dict,
) -> SearchOut:
    if offset + limit > MAX_RESULTS:
        raise InvalidInputError(
            f"offset + limit may reach {MAX_RESULTS} at most; narrow the filters"
        )
    store = per_runtime(runtime, "search_indexes", SearchIndexes).store(
        spec_key(spec), _metric(spec)
    )
    ids = [m.id for m in group]
    with store.lock:
        refresh(session, store, ids)
        matching = {m.id for m in _machines_matching(session, filters)}
        allowed_ids = [m for m in ids if m in matching]
        mask = _mask(store, filters, allowed_ids)
        if exclude_window is not None:
            mask &= store.columns.window_id != exclude_window
        if exclude_recording is not None:
            mask &= store.columns.recording_id != exclude_recording
        searched = int(mask.sum())
        if queries.shape[1] != (store.dim or queries.shape[1]):
            raise InvalidInputError(
                f"the query is a {queries.shape[1]}-d vector; these machines' windows are "
                f"{store.dim}-d"
            )
        dist, rows = store.search(queries, mask, offset + limit + 1)
        window_ids = store.columns.window_id[rows].tolist()
    more = len(window_ids) > offset + limit
    page = list(zip(window_ids, dist.tolist(), strict=True))[offset : offset + limit]
    details = review_repo.details(session, [w for w, _ in page])
    items = []
    for rank, (wid, d) in enumerate(page, start=offset + 1):
        row = details.get(wid)
        if row is None:
            continue
        items.append(
            SearchHit(
                rank=rank,
                window_id=wid,
                machine_id=row.machine_id,
                machine_name=row.machine_name,
                distance=float(d),
                start_at=row.start_at,
                end_at=row.end_at,
                score=row.score,
                ratio=row.ratio,
                is_outlier=row.is_outlier,
                label=row.label,
                has_audio=bool(row.has_audio),
            )
        )
    return SearchOut(
        query=query,
        embedder=spec,
        metric=store.metric,
        searched_windows=searched,
        machines=allowed_ids,
        items=items,
        next_offset=offset + limit if more else None,
    )


def search_by_window(
    session: Session,
    runtime: Runtime,
    window_id: int,
    filters: SearchFilters,
    *,
    limit: int,
    offset: int,
    exclude_same_recording: bool,
) -> SearchOut:
    """Windows of machines sharing the query window's embedder, nearest first."""
    window = session.get(Window, window_id)
    if window is None:
        raise NotFoundError(f"window {window_id} does not exist")
    machine = get_machine(session, window.machine_id)
    vector = window_vector(session, runtime, window, machine)
    return _run(
        session,
        runtime,
        machine.embedder,
        _group(session, machine.embedder),
        filters,
        vector[None, :],
        limit=limit,
        offset=offset,
        exclude_window=window_id,
        exclude_recording=window.recording_id if exclude_same_recording else None,
        query={
            "window_id": window_id,
            "machine_id": machine.id,
            "excluded_recording": window.recording_id if exclude_same_recording else None,
        },
    )


def search_by_audio(
    session: Session,
    runtime: Runtime,
    body: bytes,
    filters: SearchFilters,
    *,
    limit: int,
    offset: int,
) -> SearchOut:
    """Windows nearest to any window of an uploaded clip, among the filtered machines.

    The clip is embedded as the filtered machines' audio is (their embedder, channel mix,
    window length); they must share one embedder.
    """
    machines = _machines_matching(session, filters)
    if not machines:
        raise InvalidInputError("no machine matches the filters; loosen them")
    specs = {spec_key(m.embedder): m for m in machines}
    if len(specs) > 1:
        names = ", ".join(sorted({f"{m.id} ({m.embedder.get('name')})" for m in machines})[:10])
        raise InvalidInputError(
            "the filtered machines use different embedders, so one clip cannot be compared "
            f"with all of them ({names}); filter by machine or machine_type"
        )
    reference = next(iter(specs.values()))
    started = time.perf_counter()
    decoded = decode_audio(body)
    if decoded.duration_seconds > MAX_QUERY_SECONDS:
        raise PayloadTooLargeError(
            f"a search clip lasts at most {MAX_QUERY_SECONDS:g} s; this one lasts "
            f"{decoded.duration_seconds:.1f} s (cut the part that matters)"
        )
    if decoded.duration_seconds < reference.window_seconds:
        raise AudioTooShortError(
            f"the clip lasts {decoded.duration_seconds:.3f} s, shorter than one window of "
            f"{reference.id!r} ({reference.window_seconds:g} s)"
        )
    embedder = runtime.embedders.get(reference.embedder)
    mono = to_mono(decoded.samples, "mix")
    waveform = resample(mono, decoded.sample_rate, embedder.sample_rate)
    hop = max(reference.hop_seconds, decoded.duration_seconds / MAX_QUERY_WINDOWS)
    windows = frame(waveform, embedder.sample_rate, reference.window_seconds, hop)
    queries = embedder.embed(windows.samples[:MAX_QUERY_WINDOWS])
    return _run(
        session,
        runtime,
        reference.embedder,
        _group(session, reference.embedder),
        filters,
        queries,
        limit=limit,
        offset=offset,
        exclude_window=None,
        exclude_recording=None,
        query={
            "audio_seconds": round(decoded.duration_seconds, 3),
            "query_windows": int(queries.shape[0]),
            "embedded_in_s": round(time.perf_counter() - started, 3),
        },
    )


def text_reason(runtime: Runtime, spec: dict) -> str | None:
    """Why texts cannot be compared with this embedder's windows (None: they can)."""
    if spec.get("name") != "hf":
        return f"{spec.get('name')} vectors are sound statistics with no text counterpart"
    embedder = runtime.embedders.get(spec)
    reason = getattr(embedder, "text_unavailable_reason", None)
    return reason() if reason else "this embedder cannot embed text"


def search_by_text(
    session: Session,
    runtime: Runtime,
    text: str,
    filters: SearchFilters,
    *,
    limit: int,
    offset: int,
) -> SearchOut:
    """Windows nearest to a description, through CLAP's text tower (CLAP machines only)."""
    machines = _machines_matching(session, filters)
    groups: dict[str, Machine] = {}
    for m in machines:
        groups.setdefault(spec_key(m.embedder), m)
    capable, reasons = [], []
    for m in groups.values():
        reason = text_reason(runtime, m.embedder)
        if reason is None:
            capable.append(m)
        else:
            reasons.append(f"{m.embedder.get('name')} ({m.id}...): {reason}")
    if not capable:
        found = "; ".join(reasons[:5]) if reasons else "no machine matches the filters"
        raise InvalidInputError(f"{TEXT_UNAVAILABLE}. Here: {found}")
    if len(capable) > 1:
        raise InvalidInputError(
            "the filtered machines use different CLAP models, whose spaces differ; filter by "
            f"machine or machine_type ({', '.join(m.id for m in capable[:10])})"
        )
    reference = capable[0]
    query = runtime.embedders.get(reference.embedder).embed_text([text])
    return _run(
        session,
        runtime,
        reference.embedder,
        _group(session, reference.embedder),
        filters,
        query,
        limit=limit,
        offset=offset,
        exclude_window=None,
        exclude_recording=None,
        query={"text": text},
    )


def capabilities(session: Session, runtime: Runtime) -> SearchCapabilities:
    machines = session.execute(select(Machine).where(Machine.archived_at.is_(None))).scalars()
    specs: dict[str, dict] = {}
    for m in machines:
        entry = specs.setdefault(spec_key(m.embedder), {"embedder": m.embedder, "machines": 0})
        entry["machines"] += 1
    reasons = []
    for entry in specs.values():
        try:
            reason = text_reason(runtime, entry["embedder"])
        except Exception as exc:  # noqa: BLE001 - a model that does not load cannot embed text
            reason = f"the model does not load ({exc})"
        entry["text_search"] = reason is None
        if reason is not None:
            reasons.append(f"{entry['embedder'].get('name')}: {reason}")
    available = any(e["text_search"] for e in specs.values())
    return SearchCapabilities(
        text_search=available,
        text_reason=""
        if available
        else f"{TEXT_UNAVAILABLE}; here "
        + ("; ".join(reasons) if reasons else "there are no machines yet"),
        embedders=list(specs.values()),
        max_results=MAX_RESULTS,
    )

"""Fleet search (POST /v1/search): queries per second as the stored windows grow. Prints JSON.

For each size (default 100k and 1M stored windows of 512-d, the default preset's log-mel
embedding) this fills the service's ``EmbeddingStore`` (service/services/search.py: the
same object a search uses, over ``detectors.index.ExactIndex`` segments) with vectors shaped
like log-mel embeddings of a 200-machine fleet (``benchmarks/knn.py``'s generator), then
times, one query at a time as the endpoint runs them (one BLAS thread, as the service sets):

- ``window``: one query window, no filter;
- ``one_machine``: filtered to one machine of 200 (0.5 % of the windows);
- ``filters``: a time-of-day window and "flagged only" (about 1 % of the windows);
- ``clip``: a 10-window uploaded clip (each stored window's distance is its nearest);

and, side by side on the same vectors and queries, the reference a plain implementation
would use: numpy brute force (``np.linalg.norm(data - q)`` over every row, mask, then
``argpartition``). Also: the store's build time and memory, and with ``--db`` (sizes up to
``--db-max``) the first search's load of that many windows from a SQLite database (what
the first search after a restart pays; later searches load only new windows).

    .venv/bin/python benchmarks/search.py                        # 100k and 1M (about 4 GB)
    .venv/bin/python benchmarks/search.py --quick                # 20k, with the SQLite load

Timings are never pass/fail: the machine may be shared, compare the ratios.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from knn import clustered_embeddings, machine_info  # noqa: E402

from service.schemas_review import SearchFilters  # noqa: E402
from service.services import search as search_service  # noqa: E402

K = 20
MACHINES = 200
T0 = datetime(2026, 1, 1, tzinfo=UTC)
SPAN_S = 30 * 86400.0


def fleet_columns(n: int, seed: int) -> search_service._Columns:
    rng = np.random.default_rng(seed)
    labels = rng.choice(3, size=n, p=[0.98, 0.01, 0.01]).astype(np.int8)
    return search_service._Columns(
        window_id=np.arange(1, n + 1, dtype=np.int64),
        recording_id=np.arange(n, dtype=np.int64) // 20,
        machine=(np.arange(n) // 20 % MACHINES).astype(np.int32),
        start=T0.timestamp() + np.sort(rng.uniform(0, SPAN_S, n)),
        label=labels,
        outlier=rng.uniform(size=n) < 0.02,
    )


def build_store(vectors: np.ndarray, columns) -> search_service.EmbeddingStore:
    store = search_service.EmbeddingStore("euclidean")
    for m in range(MACHINES):
        store.machine_index(f"m{m:03d}")
    step = search_service.LOAD_BATCH * 20
    for start in range(0, len(vectors), step):
        part = slice(start, start + step)
        store.add(
            vectors[part],
            search_service._Columns(
                **{f: getattr(columns, f)[part] for f in columns.__dataclass_fields__}
            ),
        )
    return store


def masks(store, columns) -> dict[str, np.ndarray]:
    everyone = [f"m{m:03d}" for m in range(MACHINES)]
    plain = search_service._mask(store, SearchFilters(), everyone)
    one = search_service._mask(store, SearchFilters(machine=["m007"]), ["m007"])
    filtered = search_service._mask(
        store,
        SearchFilters(time_from="22:00", time_to="04:00", label="outlier"),
        everyone,
    )
    return {"window": plain, "one_machine": one, "filters": filtered, "clip": plain}


def reference_search(data: np.ndarray, queries: np.ndarray, allowed: np.ndarray, k: int):
    """The plain way: every distance, masked, then argpartition (nearest per row over queries)."""
    best = np.full(data.shape[0], np.inf, dtype=np.float32)
    for q in queries:
        best = np.minimum(best, np.linalg.norm(data - q, axis=1))
    best[~allowed] = np.inf
    k = min(k, int(allowed.sum()))
    part = np.argpartition(best, k - 1)[:k]
    return best[part[np.argsort(best[part])]], part[np.argsort(best[part])]


def timed(fn, repeats: int) -> tuple[float, object]:
    out = fn()
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    return repeats / (time.perf_counter() - start), out


def bench_size(n: int, args) -> dict:
    vectors = clustered_embeddings(n, args.dim, seed=3)
    columns = fleet_columns(n, seed=4)
    queries = clustered_embeddings(10 * args.queries, args.dim, seed=5)
    t = time.perf_counter()
    store = build_store(vectors, columns)
    build_s = time.perf_counter() - t
    data = store._prepared(vectors)  # the reference searches the same standardised space
    del vectors
    result = {
        "stored_windows": n,
        "dim": args.dim,
        "store_build_s": round(build_s, 2),
        "store_bytes_per_window": round(sum(seg._data_t.nbytes for seg in store._indexes()) / n, 1),
        "modes": {},
    }
    for mode, mask in masks(store, columns).items():
        batch = 10 if mode == "clip" else 1
        qs = [queries[i * batch : (i + 1) * batch] for i in range(args.queries)]
        it = iter(range(10**9))

        def ours(qs=qs, mask=mask, it=it):
            return store.search(qs[next(it) % len(qs)], mask, K)

        it2 = iter(range(10**9))

        def ref(qs=qs, mask=mask, it2=it2):
            return reference_search(data, store._prepared(qs[next(it2) % len(qs)]), mask, K)

        qps, _ = timed(ours, args.queries)
        ref_repeats = max(2, args.queries // (5 if n >= 500_000 else 1))
        ref_qps, _ = timed(ref, ref_repeats)
        # Same answers: the store's neighbours are the reference's (ties aside).
        d1, r1 = store.search(qs[0], mask, K)
        d2, r2 = reference_search(data, store._prepared(qs[0]), mask, K)
        agree = float(np.mean(np.isin(r1, r2))) if len(r2) else 1.0
        result["modes"][mode] = {
            "allowed_fraction": round(float(mask.mean()), 4),
            "query_windows": batch,
            "queries_per_s": round(qps, 2),
            "reference_queries_per_s": round(ref_qps, 2),
            "speedup_vs_reference": round(qps / ref_qps, 2),
            "same_neighbours_as_reference": round(agree, 3),
            "max_distance_difference": float(np.max(np.abs(d1 - d2))) if len(d2) else 0.0,
        }
    if args.db and n <= args.db_max:
        result["sqlite_first_load"] = bench_db_load(n, args.dim, args.queries)
    return result


def bench_db_load(n: int, dim: int, seed: int) -> dict:
    """Seconds for the first search's ``refresh`` of ``n`` windows from a SQLite file."""
    from sqlalchemy import create_engine, insert

    from service.db import Database
    from service.models import Base, Machine, Recording, Window

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        engine = create_engine(url)
        Base.metadata.create_all(engine)
        vectors = clustered_embeddings(n, dim, seed=7)
        spec = {"name": "logmel"}
        with engine.begin() as conn:
            conn.execute(
                insert(Machine),
                [
                    {
                        "id": f"m{m:03d}",
                        "name": f"m{m:03d}",
                        "labels": {},
                        "window_seconds": 5.0,
                        "hop_seconds": 1.0,
                        "channel": "mix",
                        "embedder": spec,
                        "k": 5,
                        "metric": "euclidean",
                        "standardize": True,
                        "false_alarm_rate": 0.01,
                        "state": "monitoring",
                        "enrolled_seconds": 0.0,
                        "created_at": T0,
                        "updated_at": T0,
                    }
                    for m in range(MACHINES)
                ],
            )
            n_rec = -(-n // 20)
            conn.execute(
                insert(Recording),
                [
                    {
                        "id": r + 1,
                        "machine_id": f"m{r % MACHINES:03d}",
                        "started_at": T0,
                        "ended_at": T0,
                        "duration_seconds": 24.0,
                        "sample_rate": 16000,
                        "channels": 1,
                        "format": "WAV",
                        "sha256": f"{r:064d}",
                        "size_bytes": 0,
                        "conditions": {},
                        "is_enrollment": False,
                        "created_at": T0,
                    }
                    for r in range(n_rec)
                ],
            )
            for start in range(0, n, 20_000):
                conn.execute(
                    insert(Window),
                    [
                        {
                            "machine_id": f"m{(i // 20) % MACHINES:03d}",
                            "recording_id": i // 20 + 1,
                            "start_at": T0 + timedelta(seconds=i),
                            "end_at": T0 + timedelta(seconds=i + 5),
                            "is_outlier": False,
                            "embedding": vectors[i].astype("<f4").tobytes(),
                        }
                        for i in range(start, min(n, start + 20_000))
                    ],
                )
        engine.dispose()
        db = Database(url)
        store = search_service.EmbeddingStore("euclidean")
        ids = [f"m{m:03d}" for m in range(MACHINES)]
        with db.session() as session:
            t = time.perf_counter()
            search_service.refresh(session, store, ids)
            first = time.perf_counter() - t
            t = time.perf_counter()
            search_service.refresh(session, store, ids)
            again = time.perf_counter() - t
        db.dispose()
    return {
        "windows": len(store),
        "first_search_load_s": round(first, 2),
        "windows_loaded_per_s": round(n / first),
        "next_search_refresh_s": round(again, 4),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=20, help="timed queries per mode")
    parser.add_argument("--db", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "--db-max", type=int, default=100_000, help="largest size loaded from SQLite"
    )
    parser.add_argument("--quick", action="store_true", help="one 20k store, 10 queries")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.queries = [20_000], 10
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="blas"):  # as the service runs (HUMWATCH_TORCH_THREADS=1)
        results = [bench_size(n, args) for n in args.sizes]
    print(
        json.dumps(
            {
                "benchmark": "search",
                "k": K,
                "machines": MACHINES,
                "blas_threads": 1,
                "sizes": results,
                "machine": machine_info(),
                "python": platform.python_version(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

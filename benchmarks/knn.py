"""kNN search: humwatch's index next to scikit-learn's brute force. Prints JSON.

For each baseline size this builds the index three ways (``build_index`` with ``method="auto"``,
forced ``"exact"``, forced ``"nndescent"``) and the reference,
``sklearn.neighbors.NearestNeighbors(algorithm="brute")``, on the same vectors, and measures:

- build time (for NN-descent in a process whose numba code is already compiled);
- queries per second, two ways: one call with every query (``batch``) and calls of
  ``--request-windows`` queries (``request``: the windows of one 10 s upload at 1 s windows
  and 0.5 s hop, which is how the service queries);
- recall@k against the reference on the same ``--queries`` fresh queries, the fraction of queries
  that found none of their true neighbours, and how far the approximate scores (mean distance
  to the k neighbours, the anomaly score) are above the exact ones;
- ratios against scikit-learn, and the number of queries after which NN-descent's longer
  build is paid back by its faster queries (``break_even_queries``).

``--startup`` also times the NN-descent path in fresh processes: ``cold`` with an empty
``NUMBA_CACHE_DIR`` (first start after an install) and ``warm`` with the cache it populated
(every later start); the exact path in a fresh process is the yardstick.

The vectors imitate standardised log-mel embeddings (see ``clustered_embeddings``), not
uniform noise: approximate search is much easier on noise-free clusters and much harder on
uniform noise than on real embeddings.

    NUMBA_CACHE_DIR=.numba-cache .venv/bin/python benchmarks/knn.py                # 10k..1M
    NUMBA_CACHE_DIR=.numba-cache .venv/bin/python benchmarks/knn.py --sizes 10000 \\
        --queries 500 --no-startup                                                 # quick

Timings are never pass/fail: the machine may be shared, compare the ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from detectors import index as hw_index  # noqa: E402

# The service's query shape: a 10 s upload cut into 1 s windows every 0.5 s.
REQUEST_WINDOWS = 19


# -- data -------------------------------------------------------------------------------------


def clustered_embeddings(
    n: int,
    dim: int,
    seed: int,
    world_seed: int = 0,
    n_modes: int = 16,
    latent_dim: int = 128,
    recording_windows: int = 20,
) -> np.ndarray:
    """``(n, dim)`` float32 vectors shaped like log-mel embeddings of one site's machines.

    A few operating modes (clusters of unequal weight and spread) in a latent space whose
    variance decays like ``1/j``; recordings are drawn around a mode, and a recording's
    windows follow an AR(1) walk around the recording (neighbouring windows overlap, so they
    are close); a linear map to ``dim`` dimensions plus a little isotropic noise. Checked
    against the log-mel (mean+std, 256-d, 1 s windows, 0.5 s hop) embeddings of the 4,496
    windows of the shared normal clips, split by recording into 3,576 baseline and 920 query
    windows, with 3,600 + 900 of these vectors (real vs here): 53 vs 48 principal components
    for 90 % of the variance, participation ratio 6.4 vs 6.8, nearest / mean distance 0.41
    vs 0.41, 2 vs 2 connected components of the 30-NN graph. NN-descent finds them harder
    (recall@5 0.99 vs 0.96, queries with no true neighbour found 0.1 % vs 1.9 %), so the
    approximate figures err on the pessimistic side. ``world_seed`` fixes the modes and the
    map (baseline and queries must share it); ``seed`` draws the points.
    """
    world = np.random.default_rng(world_seed)
    spectrum = np.maximum((1.0 + np.arange(latent_dim)) ** -1.0, 0.05)
    basis = np.linalg.qr(world.standard_normal((dim, latent_dim)))[0].T
    basis = (basis * np.sqrt(dim / latent_dim)).astype(np.float32)
    centres = world.standard_normal((n_modes, latent_dim)) * spectrum * 1.5
    spreads = world.uniform(0.3, 1.5, n_modes)
    weights = world.dirichlet(np.full(n_modes, 2.0))

    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32)
    rho = 0.8
    chunk = 50_000
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        n_rec = -(-m // recording_windows)
        mode = rng.choice(n_modes, n_rec, p=weights)
        scale = spreads[mode][:, None] * spectrum
        rec = centres[mode] + rng.standard_normal((n_rec, latent_dim)) * scale * 0.4
        walk = rng.standard_normal((n_rec, recording_windows, latent_dim))
        walk[:, 1:] *= np.sqrt(1.0 - rho**2)
        for t in range(1, recording_windows):
            walk[:, t] += rho * walk[:, t - 1]
        latent = (rec[:, None, :] + walk * (scale * 0.8)[:, None, :]).reshape(-1, latent_dim)[:m]
        out[start : start + m] = latent.astype(np.float32) @ basis
        out[start : start + m] += 0.05 * rng.standard_normal((m, dim), dtype=np.float32)
    return out


def make_dataset(n: int, n_queries: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Baseline and fresh queries, both standardised with the baseline's statistics."""
    base = clustered_embeddings(n, dim, seed=seed + 1)
    queries = clustered_embeddings(n_queries, dim, seed=seed + 2)
    mean = base.mean(axis=0)
    scale = base.std(axis=0)
    base -= mean
    base /= scale
    queries = (queries - mean) / scale
    return base, queries.astype(np.float32)


# -- measurement ------------------------------------------------------------------------------


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _qps(query_fn, queries: np.ndarray, batch: int, repeats: int) -> tuple[float, tuple]:
    """Queries per second calling ``query_fn`` on chunks of ``batch`` rows; also the result.

    The pass is repeated up to ``repeats`` times (fewer once 10 s are spent) and the fastest
    counts: on a shared machine the fastest pass is the one least disturbed by others.
    """
    best, spent, result = 0.0, 0.0, None
    for _ in range(max(1, repeats)):
        dists, idx = [], []
        t0 = time.perf_counter()
        for start in range(0, len(queries), batch):
            d, i = query_fn(queries[start : start + batch])
            dists.append(d)
            idx.append(i)
        elapsed = time.perf_counter() - t0
        best = max(best, len(queries) / elapsed)
        result = result or (np.concatenate(dists), np.concatenate(idx))
        spent += elapsed
        if spent > 10.0:
            break
    return best, result


def _accuracy(dist, idx, ref_dist, ref_idx, k: int) -> dict:
    hits = np.array([len(np.intersect1d(a, b)) for a, b in zip(idx, ref_idx, strict=True)])
    ratio = dist.mean(axis=1) / np.maximum(ref_dist.mean(axis=1), 1e-12)
    return {
        f"recall_at_{k}": round(float(hits.mean() / k), 4),
        "queries_with_zero_recall": round(float(np.mean(hits == 0)), 4),
        "score_ratio_mean": round(float(ratio.mean()), 4),
        "score_ratio_p99": round(float(np.quantile(ratio, 0.99)), 4),
    }


def _epsilon_run(index, epsilon, queries, ref_dist, ref_idx, args) -> dict:
    """The same NN-descent index queried with another search ``epsilon``."""
    default, index.epsilon = index.epsilon, epsilon
    try:

        def query(q):
            return index.query(q, args.k)

        qps_batch, (dist, idx) = _qps(query, queries, len(queries), args.repeats)
        qps_req, _ = _qps(query, queries, args.request_windows, args.repeats)
    finally:
        index.epsilon = default
    res = {"epsilon": epsilon, "qps_batch": qps_batch, "qps_request": qps_req}
    res.update(_accuracy(dist, idx, ref_dist, ref_idx, args.k))
    return res


def bench_size(n: int, args: argparse.Namespace) -> dict:
    from sklearn.neighbors import NearestNeighbors

    k = args.k
    t_data, (base, queries) = _timed(lambda: make_dataset(n, args.queries, args.dim, args.seed))
    out: dict = {"size": n, "dim": args.dim, "metric": args.metric, "k": k, "data_s": t_data}

    # Reference: scikit-learn brute force.
    t_build, nn = _timed(
        lambda: NearestNeighbors(n_neighbors=k, algorithm="brute", metric=args.metric).fit(base)
    )

    def sk_query(q):
        return nn.kneighbors(q, n_neighbors=k)

    qps_batch, (ref_dist, ref_idx) = _qps(sk_query, queries, len(queries), args.repeats)
    qps_req, _ = _qps(sk_query, queries, args.request_windows, args.repeats)
    out["sklearn_brute"] = {"build_s": t_build, "qps_batch": qps_batch, "qps_request": qps_req}

    built: dict = {}
    methods = [m for m in ("auto", "exact", "nndescent") if m in args.methods]
    for method in methods:
        if method != "auto" and method in built:  # auto already built this one
            out[method] = dict(out["auto"], same_as="auto")
            continue
        t_build, index = _timed(
            lambda method=method: hw_index.build_index(base, args.metric, method=method)
        )
        if method == "auto":
            built[index.kind] = True

        def query(q, index=index):
            return index.query(q, k)

        qps_batch, (dist, idx) = _qps(query, queries, len(queries), args.repeats)
        qps_req, _ = _qps(query, queries, args.request_windows, args.repeats)
        res = {
            "kind": index.kind,
            "build_s": t_build,
            "qps_batch": qps_batch,
            "qps_request": qps_req,
        }
        res.update(_accuracy(dist, idx, ref_dist, ref_idx, k))
        sk = out["sklearn_brute"]
        res["vs_sklearn"] = {
            "qps_batch_ratio": res["qps_batch"] / sk["qps_batch"],
            "qps_request_ratio": res["qps_request"] / sk["qps_request"],
        }
        if index.kind == "nndescent" and args.epsilons:
            res["epsilon"] = index.epsilon
            res["epsilon_sweep"] = [
                _epsilon_run(index, eps, queries, ref_dist, ref_idx, args) for eps in args.epsilons
            ]
        out[method] = res
        del index

    if "exact" in out and "nndescent" in out:
        ex, nd = out["exact"], out["nndescent"]
        per_query_gain = 1.0 / ex["qps_request"] - 1.0 / nd["qps_request"]
        extra_build = nd["build_s"] - ex["build_s"]
        out["nndescent_vs_exact"] = {
            "qps_request_ratio": nd["qps_request"] / ex["qps_request"],
            "qps_batch_ratio": nd["qps_batch"] / ex["qps_batch"],
            "extra_build_s": extra_build,
            # Queries (windows) after which NN-descent's build is paid back; with 2 windows
            # per second of audio, break_even_queries / 7200 is hours of one machine's audio.
            "break_even_queries": (
                extra_build / per_query_gain if per_query_gain > 0 else float("inf")
            ),
        }
    return out


STARTUP_SCRIPT = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
sys.path.insert(0, {root!r})
from detectors import index as hw_index
phases = {{"import_s": time.perf_counter() - t0}}


def step(name, fn):
    t = time.perf_counter()
    out = fn()
    phases[name] = time.perf_counter() - t
    return out


rng = np.random.default_rng(0)
base = rng.standard_normal(({n}, {dim})).astype(np.float32)
queries = rng.standard_normal(({request}, {dim})).astype(np.float32)
if {method!r} == "nndescent":
    step("warm_up_s", hw_index.warm_up_nndescent)
index = step("build_s", lambda: hw_index.build_index(base, "euclidean", method={method!r}))
step("first_request_s", lambda: index.query(queries, 5))
step("second_request_s", lambda: index.query(queries, 5))
phases["ready_s"] = time.perf_counter() - t0
print(json.dumps(phases))
"""


def _startup_run(method: str, cache_dir: str, n: int, dim: int) -> dict:
    script = STARTUP_SCRIPT.format(
        root=str(ROOT), n=n, dim=dim, request=REQUEST_WINDOWS, method=method
    )
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    phases = json.loads(proc.stdout.strip().splitlines()[-1])
    phases["process_wall_s"] = time.perf_counter() - t0
    return phases


def bench_startup(args: argparse.Namespace) -> dict:
    """Fresh-process start of the exact and NN-descent paths (cold and warm numba cache)."""
    n = args.startup_size
    with tempfile.TemporaryDirectory(prefix="humwatch-numba-") as cache:
        exact = _startup_run("exact", cache, n, args.dim)
        cold = _startup_run("nndescent", cache, n, args.dim)
        cache_mb = sum(f.stat().st_size for f in Path(cache).rglob("*") if f.is_file()) / 2**20
        warm = _startup_run("nndescent", cache, n, args.dim)
    return {
        "index_size": n,
        "dim": args.dim,
        "exact": exact,
        "nndescent_cold_cache": cold,
        "nndescent_warm_cache": warm,
        "numba_cache_mb": round(cache_mb, 1),
        "note": "cold: empty NUMBA_CACHE_DIR; warm: the cache the cold run wrote. "
        "warm_up_s is warm_up_nndescent(); some pynndescent kernels are never cached "
        "(cache=False) and compile in every process.",
    }


def machine_info() -> dict:
    import numba
    import pynndescent
    import sklearn
    from threadpoolctl import threadpool_info

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpus_available": len(os.sched_getaffinity(0)),
        "load_average_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scikit_learn": sklearn.__version__,
        "pynndescent": pynndescent.__version__,
        "numba": numba.__version__,
        "numba_threads": numba.get_num_threads(),
        "threadpools": [
            {k: p.get(k) for k in ("user_api", "internal_api", "num_threads")}
            for p in threadpool_info()
        ],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000", help="baseline sizes")
    parser.add_argument("--dim", type=int, default=256, help="vector dimension (logmel: 256)")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--metric", default="euclidean", choices=hw_index.METRICS)
    parser.add_argument(
        "--queries", type=int, default=500, help="fresh queries, timed and used for recall"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed passes (best counts)")
    parser.add_argument(
        "--blas-threads",
        type=int,
        default=0,
        help="limit BLAS/OpenMP threads of numpy and scikit-learn alike (0: leave as is)",
    )
    parser.add_argument("--request-windows", type=int, default=REQUEST_WINDOWS)
    parser.add_argument(
        "--methods", default="auto,exact,nndescent", help="subset of auto,exact,nndescent"
    )
    parser.add_argument(
        "--epsilons",
        default="",
        help="also query the forced NN-descent index with these search epsilons (e.g. 0.1,0.2)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--startup", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--startup-size", type=int, default=5000)
    args = parser.parse_args(argv)
    args.methods = set(args.methods.split(","))
    args.epsilons = [float(e) for e in args.epsilons.split(",") if e]

    report = {
        "benchmark": "knn",
        "machine": machine_info(),
        "config": {k: (sorted(v) if isinstance(v, set) else v) for k, v in vars(args).items()},
        "approximate_min_size": hw_index.APPROXIMATE_MIN_SIZE,
        "numba_cache_dir": os.environ.get("NUMBA_CACHE_DIR"),
    }
    if "nndescent" in args.methods or "auto" in args.methods:
        # Compile outside the timed builds (the service warms up at start, too).
        report["warm_up_nndescent_s"] = _timed(hw_index.warm_up_nndescent)[0]
    report["sizes"] = []
    with contextlib.ExitStack() as stack:
        if args.blas_threads:
            from threadpoolctl import threadpool_limits

            stack.enter_context(threadpool_limits(args.blas_threads))
        for n in (int(s) for s in args.sizes.split(",") if s):
            report["sizes"].append(bench_size(n, args))
            print(json.dumps(report["sizes"][-1], default=float), file=sys.stderr, flush=True)
    warm_up = report.get("warm_up_nndescent_s")
    for size in report["sizes"]:
        versus = size.get("nndescent_vs_exact")
        if versus and warm_up is not None:
            # The numba compile every process pays (warm cache) counted like build time.
            gain = versus["extra_build_s"] / versus["break_even_queries"]
            versus["break_even_queries_with_warm_up"] = (
                (versus["extra_build_s"] + warm_up) / gain if gain > 0 else float("inf")
            )
    if args.startup:
        report["startup"] = bench_startup(args)
    print(json.dumps(report, indent=2, default=float))


if __name__ == "__main__":
    main()

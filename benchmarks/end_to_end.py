"""End to end on CPU: WAV bytes -> decode -> windows -> log-mel -> kNN score. Prints JSON.

Two passes over the same uploads, side by side in one process:

- ``front_end``: ``detectors.pipeline.embed_audio`` (decode the WAV bytes with
  ``detectors.audio``, mono, resample, cut windows, log-mel embedding), nothing else;
- ``end_to_end``: the same plus ``KNNBaseline.decision_function`` against a baseline of
  ``--baseline-vectors`` vectors (10,000 by default; the index ``build_index`` picks for that
  size unless ``--index`` forces one).

Both report windows per second, the multiple of real time (seconds of audio per second of
wall time) and seconds of audio per process CPU second (the figure that does not depend on
the machine's load); ``end_to_end_vs_front_end`` (``_per_cpu``) is their ratio, the share
of the front end's speed that is left once windows are also scored. The passes alternate
``--repeats`` times and the fastest of each counts (the machine may be shared with other
work). ``stages`` splits one extra pass into decode, windows, embed and score.

Uploads are synthetic machine sound (``detectors.simulate``) encoded to 16-bit WAV bytes in
memory (``detectors.audio.encode_wav``), or with ``--source shared`` real clips of
``--shared-root`` read by path (never copied). The baseline is always the same embedder's
vectors of simulated normal sound: windows every ``--baseline-hop`` seconds of a few minutes
of audio, so that 10,000 vectors do not need 80 minutes of simulation. Such a baseline is
denser than a service's (neighbouring windows nearly identical), which costs exact search
nothing but makes NN-descent's search slower than on ``benchmarks/knn.py``'s vectors.

    NUMBA_CACHE_DIR=.numba-cache .venv/bin/python benchmarks/end_to_end.py
    NUMBA_CACHE_DIR=.numba-cache .venv/bin/python benchmarks/end_to_end.py --uploads 10 \\
        --repeats 1                                                          # quick

On a 2-core machine torch's OpenMP threads (the front end) and numpy's OpenBLAS threads (the
exact kNN products) spin-wait after each call and slow each other down when they alternate
window by window; ``--blas-threads 1`` (or ``OPENBLAS_NUM_THREADS=1``) shows the difference.

Timings are never pass/fail: compare the ratio, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from detectors.audio import encode_wav, load_mono  # noqa: E402
from detectors.baseline import KNNBaseline  # noqa: E402
from detectors.embedders import build_embedder, embed_windows  # noqa: E402
from detectors.index import warm_up_nndescent  # noqa: E402
from detectors.pipeline import embed_audio  # noqa: E402
from detectors.presets import PRESETS  # noqa: E402
from detectors.simulate import MACHINE_KINDS, simulate  # noqa: E402
from detectors.windows import frame  # noqa: E402

DEFAULT_SHARED_ROOT = ROOT.parent / "shared" / "data" / "machine-audio"


def synthetic_uploads(n: int, seconds: float, sample_rate: int, seed: int) -> list[bytes]:
    """``n`` WAV uploads of ``seconds`` each, machine kinds in turn, one seed per upload."""
    return [
        encode_wav(
            simulate(MACHINE_KINDS[i % len(MACHINE_KINDS)], seconds, sample_rate, seed=seed + i),
            sample_rate,
        )
        for i in range(n)
    ]


def shared_uploads(root: Path, n: int) -> list[bytes]:
    """The first ``n`` normal clips of the shared manifest, read by path into memory."""
    with open(root / "manifest.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["label"] == "normal"]
    return [(root / r["path"]).read_bytes() for r in rows[:n]]


def baseline_vectors(
    embedder, n_vectors: int, hop: float, window: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``n_vectors`` embeddings of simulated normal sound and their recording (group) ids."""
    rate = embedder.sample_rate
    per_recording = 60.0
    windows_per_recording = int((per_recording - window) / hop) + 1
    n_recordings = -(-n_vectors // windows_per_recording)
    vectors, groups = [], []
    for r in range(n_recordings):
        kind = MACHINE_KINDS[r % len(MACHINE_KINDS)]
        wave = simulate(kind, per_recording, rate, seed=10_000 + seed + r)
        vectors.append(embedder.embed(frame(wave, rate, window, hop).samples))
        groups.append(np.full(len(vectors[-1]), r))
    return np.concatenate(vectors)[:n_vectors], np.concatenate(groups)[:n_vectors]


def run_pass(uploads, embedder, window, hop, model=None) -> tuple[float, int, float]:
    """Seconds for one pass over every upload, the number of windows, and the pass's process
    CPU seconds (all threads)."""
    n_windows = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for blob in uploads:
        emb = embed_audio(blob, embedder, window, hop)
        if model is not None:
            model.decision_function(emb.vectors)
        n_windows += len(emb.vectors)
    return time.perf_counter() - t0, n_windows, time.process_time() - c0


def stage_pass(uploads, embedder, window, hop, model) -> dict:
    """Seconds per stage over every upload (the steps of ``embed_audio``, then scoring)."""
    totals = dict.fromkeys(("decode_s", "windows_s", "embed_s", "score_s"), 0.0)
    for blob in uploads:
        t0 = time.perf_counter()
        wave, _ = load_mono(blob, embedder.sample_rate, min_seconds=window)
        t1 = time.perf_counter()
        windows = frame(wave, embedder.sample_rate, window, hop)
        t2 = time.perf_counter()
        vectors = embed_windows(embedder, wave, windows)  # as embed_audio does
        t3 = time.perf_counter()
        model.decision_function(vectors)
        t4 = time.perf_counter()
        for key, dt in zip(totals, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            totals[key] += dt
    return totals


def rates(seconds: float, n_windows: int, audio_seconds: float, cpu_seconds: float) -> dict:
    return {
        "seconds": seconds,
        "windows_per_s": n_windows / seconds,
        "realtime_multiple": audio_seconds / seconds,
        "cpu_seconds": cpu_seconds,
        "audio_s_per_cpu_s": audio_seconds / cpu_seconds if cpu_seconds > 0 else None,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", choices=("synthetic", "shared"), default="synthetic")
    parser.add_argument("--shared-root", type=Path, default=DEFAULT_SHARED_ROOT)
    parser.add_argument("--uploads", type=int, default=40, help="uploads timed per pass")
    parser.add_argument("--upload-seconds", type=float, default=10.0, help="synthetic uploads")
    parser.add_argument("--window", type=float, default=1.0)
    parser.add_argument("--hop", type=float, default=0.5)
    parser.add_argument("--embedder", default='{"name": "logmel"}', help="embedder spec (JSON)")
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="take window, hop, embedder and k from a preset (detectors.presets) instead",
    )
    parser.add_argument("--baseline-vectors", type=int, default=10_000)
    parser.add_argument("--baseline-hop", type=float, default=0.05)
    parser.add_argument("--index", default="auto", choices=("auto", "exact", "nndescent"))
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--torch-threads", type=int, default=0, help="0: torch's default")
    parser.add_argument(
        "--blas-threads",
        type=int,
        default=0,
        help="limit numpy's BLAS threads (threadpoolctl) for the whole run (0: leave as is)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.preset:
        preset = PRESETS[args.preset]
        args.window, args.hop, args.k = preset.window_seconds, preset.hop_seconds, preset.k
        args.embedder = json.dumps(preset.embedder)

    import torch

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    if args.blas_threads:
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.blas_threads, user_api="blas")
    embedder = build_embedder(json.loads(args.embedder))

    t0 = time.perf_counter()
    base, groups = baseline_vectors(
        embedder, args.baseline_vectors, args.baseline_hop, args.window, args.seed
    )
    t_base = time.perf_counter() - t0
    if args.index != "exact":
        warm_up_nndescent()  # as the service does at start; no-op cost for the exact path
    t0 = time.perf_counter()
    model = KNNBaseline(k=args.k, index=args.index, embedder_spec=embedder.spec).fit(base, groups)
    t_fit = time.perf_counter() - t0

    if args.source == "synthetic":
        uploads = synthetic_uploads(
            args.uploads, args.upload_seconds, embedder.sample_rate, args.seed
        )
    else:
        uploads = shared_uploads(args.shared_root, args.uploads)
    audio_seconds = sum(load_mono(b, embedder.sample_rate)[1].duration_seconds for b in uploads)

    run_pass(uploads[:2], embedder, args.window, args.hop, model)  # first-call costs
    front, e2e, front_cpu, e2e_cpu = [], [], [], []
    n_windows = 0
    for _ in range(max(1, args.repeats)):
        seconds, n_windows, cpu = run_pass(uploads, embedder, args.window, args.hop)
        front.append(seconds)
        front_cpu.append(cpu)
        seconds, _, cpu = run_pass(uploads, embedder, args.window, args.hop, model)
        e2e.append(seconds)
        e2e_cpu.append(cpu)
    stages = stage_pass(uploads, embedder, args.window, args.hop, model)

    # The fastest pass of each, wall and CPU apart (the machine may be shared).
    front_rates = rates(min(front), n_windows, audio_seconds, min(front_cpu))
    e2e_rates = rates(min(e2e), n_windows, audio_seconds, min(e2e_cpu))
    report = {
        "benchmark": "end_to_end",
        "machine": {
            "cpu": _cpu_model(),
            "cpus_available": len(os.sched_getaffinity(0)),
            "load_average_at_start": os.getloadavg(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "threadpools": _threadpools(),
        },
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "embedder": embedder.spec,
        "embedding_dim": embedder.dim,
        "baseline": {
            "vectors": int(model.n_vectors_),
            "index": model.index_.kind,
            "make_vectors_s": t_base,
            "fit_s": t_fit,
            "threshold": model.threshold_,
        },
        "uploads": len(uploads),
        "audio_seconds": audio_seconds,
        "windows_per_pass": n_windows,
        "front_end": dict(front_rates, all_passes_s=front),
        "end_to_end": dict(e2e_rates, all_passes_s=e2e),
        "end_to_end_vs_front_end": e2e_rates["windows_per_s"] / front_rates["windows_per_s"],
        "end_to_end_vs_front_end_per_cpu": e2e_rates["audio_s_per_cpu_s"]
        / front_rates["audio_s_per_cpu_s"],
        "stages": dict(
            stages, score_share_of_total=stages["score_s"] / max(sum(stages.values()), 1e-12)
        ),
    }
    print(json.dumps(report, indent=2))


def _threadpools() -> list[dict]:
    from threadpoolctl import threadpool_info

    return [
        {k: p.get(k) for k in ("user_api", "internal_api", "num_threads")}
        for p in threadpool_info()
    ]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    main()

"""Where one upload's CPU goes in the service layer: thread CPU time around each stage.

Enrolls one machine on three 10 s clips (real MIMII fan id_00 recordings when
../shared/data/machine-audio is present, else synthetic 8-channel audio), then ingests the
others through ``service.services.ingest.ingest`` in this process, as 8-channel WAV or as
the agent's 16 kHz mono FLAC (``--input flac``), and reports milliseconds of thread CPU per
upload for each stage (inclusive: a stage's line contains the stages called inside it),
beside the bare pipeline (``embed_audio`` + ``decision_function``) on the same clips in the
same run. Torch and BLAS one thread, as the service runs. The timers cost a little
themselves: read the stages against each other and against the bare pipeline.

    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ingest_stages.py
    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ingest_stages.py \\
        --input flac --clips 60 [--batch 4]

``--batch N`` ingests N uploads per ``service.services.ingest_batch.ingest_many`` call (the
worker's path; the per-upload figures divide the batch's statements among its uploads).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import json
import os
import sys
import time
from collections import defaultdict
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.service_ingest import DEFAULT_DB, load_clips, postgres_schema  # noqa: E402
from benchmarks.stream_ingest import ENROLL, T0, bare_model, enroll, mono_flac_chunks  # noqa: E402

# (module, function, label), outermost first; the ingest module's names are its imports.
STAGES = [
    ("service.services.ingest", "ingest", "ingest, in all"),
    ("hashlib", "sha256", "sha256 of the body"),
    ("service.services.ingest", "prepare", "prepare (everything before the transaction)"),
    ("service.services.ingest", "decode_audio", "  decode"),
    ("detectors.audio", "to_mono", "  mixdown to mono"),
    ("service.services.ingest", "frame", "  windows"),
    ("service.services.ingest", "embed_windows", "  log-mel embedding"),
    ("service.services.ingest", "window_flags", "  sensor flags"),
    ("service.services.ingest", "_score", "kNN scoring"),
    ("service.services.ingest", "stored_audio", "FLAC encoding of the stored audio"),
    ("service.repositories.machines", "lock_for_ingest", "  machine lock + duplicate check"),
    ("service.repositories.recordings", "add", "  recording row"),
    ("service.repositories.recordings", "add_audio", "  audio row"),
    ("service.repositories.windows", "insert_many", "  window rows"),
    ("service.services.events", "on_recordings", "  event logic (health row, tracker, update)"),
    ("service.metrics", "observe_recordings", "metrics"),
]
# The batched path (``--batch N``): its own statements, in place of the single upload's.
BATCH_STAGES = [
    ("service.repositories.machines", "lock_many", "  machine locks (once per batch)"),
    ("service.repositories.recordings", "find_many", "  duplicate check (once per batch)"),
    ("service.repositories.recordings", "add_many", "  recording rows (one INSERT)"),
    ("service.repositories.recordings", "add_audio_many", "  audio rows (one INSERT)"),
    ("service.services.events", "on_recordings", "  event logic (health row, tracker, update)"),
]


def timed(acc: dict, label: str, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        t0 = time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            acc[label] += time.thread_time() - t0

    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", default=os.environ.get("HUMWATCH_BENCH_DATABASE_URL"))
    parser.add_argument("--input", choices=("wav", "flac"), default="wav")
    parser.add_argument("--clips", type=int, default=60, help="monitoring uploads per pass")
    parser.add_argument(
        "--batch",
        type=int,
        default=0,
        help="ingest N uploads per call of service.services.ingest_batch (the worker's path)",
    )
    args = parser.parse_args()
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1, user_api="blas")
    from detectors.pipeline import embed_audio
    from service import migrate
    from service.config import Settings
    from service.db import Database
    from service.runtime import Runtime
    from service.services import ingest, ingest_batch

    clips, source = load_clips(args.clips + ENROLL)
    if args.input == "flac":
        clips = mono_flac_chunks(clips)
    embedder, win, hop, model = bare_model(clips)
    base_url = args.database_url or DEFAULT_DB
    n = args.clips
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(postgres_schema(base_url)) if "postgres" in base_url else base_url
        migrate.upgrade(url)
        settings = Settings(database_url=url, warm_up_index=False, prune_interval_seconds=0)
        runtime = Runtime(settings=settings, db=Database(url))
        enroll(runtime, "stages", clips, T0)

        def service_pass(day: int) -> None:
            if args.batch:
                items = [
                    ingest_batch.Item("stages", clip, T0 + timedelta(days=day, seconds=10 * i), {})
                    for i, clip in enumerate(clips[ENROLL:])
                ]
                for at in range(0, len(items), args.batch):
                    for out in ingest_batch.ingest_many(runtime, items[at : at + args.batch]):
                        assert not isinstance(out, Exception), out
                return
            for i, clip in enumerate(clips[ENROLL:]):
                at = T0 + timedelta(days=day, seconds=10 * i)
                ingest.ingest(runtime, "stages", clip, started_at=at, conditions={})

        def bare_pass() -> None:
            for clip in clips[ENROLL:]:
                model.decision_function(embed_audio(clip, embedder, win, hop, "mix").vectors)

        service_pass(1)  # caches, connections
        untimed = {"bare": [], "service layer": []}
        for day in (2, 3):
            for name, run in (
                ("bare", bare_pass),
                ("service layer", lambda d=day: service_pass(d)),
            ):
                c0 = time.thread_time()
                run()
                untimed[name].append(round(1000 * (time.thread_time() - c0) / n, 2))
        acc: dict[str, float] = defaultdict(float)
        stages = list(STAGES)
        if args.batch:
            stages[0] = ("service.services.ingest_batch", "ingest_many", "ingest, in all")
            stages[10:15] = [*BATCH_STAGES[:4], STAGES[13], BATCH_STAGES[4]]
        for module_name, attr, label in stages:
            module = importlib.import_module(module_name)
            setattr(module, attr, timed(acc, label, getattr(module, attr)))
        ingest.hashlib = importlib.import_module("hashlib")
        original_session = runtime.db.session

        @contextlib.contextmanager
        def session():
            t0 = time.thread_time()
            with original_session() as s:
                yield s
            acc["transaction (begin to commit)"] += time.thread_time() - t0

        runtime.db.session = session
        service_pass(4)
        runtime.db.dispose()
    order = [label for _, _, label in stages[:10]] + ["transaction (begin to commit)"]
    order += [label for _, _, label in stages[10:]]
    report = {
        "benchmark": "ingest_stages",
        "input": args.input,
        "batch": args.batch or None,
        "clips": {"source": source, "count": n},
        "load_average": os.getloadavg(),
        "untimed_cpu_ms_per_upload": untimed,
        "stages_cpu_ms_per_upload": {label: round(1000 * acc[label] / n, 2) for label in order},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

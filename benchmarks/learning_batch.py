"""Batched ingest inside the learning period: CPU per chunk on the worker's path.

Three modes, alternating in one run on the same clips and database:

- ``new rule``: ``ingest_many`` as it is (the chunks that continue a run are written with
  their batch; only a chunk that starts a new run goes through the single upload's path);
- ``old rule``: the rule before it, every chunk of the learning period through the single
  upload's ``_store`` inside the batch's transaction;
- ``batch 1``: one chunk per ``ingest_many`` call (one transaction per chunk).

Enrolls one machine (``benchmarks.stream_ingest.enroll``), opens a 30-day learning period,
then each "day" sends one chunk that starts the day's run (untimed: it ends the previous
day's run, which learning may admit and fit a new version for) and ``--clips`` 10 s chunks
continuing it, in batches of ``--batch``. Reports process CPU ms per chunk, per round:

    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 .venv/bin/python benchmarks/learning_batch.py \\
        [--database-url URL]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.service_ingest import DEFAULT_DB, load_clips, postgres_schema  # noqa: E402
from benchmarks.stream_ingest import ENROLL, T0, enroll, mono_flac_chunks  # noqa: E402


def old_rule(writer, p) -> bool:
    """``_MachineWriter._needs_what_came_before`` before the run check: every chunk of the
    learning period reads what came before it."""
    machine, up = writer.machine, p.upload
    if machine.state == "enrolling":
        enrolled = float(machine.enrolled_seconds or 0.0) + up.prepared.duration
        return enrolled >= machine.enrollment_seconds
    return (
        up.scores is not None
        and machine.state == "monitoring"
        and machine.learning_until is not None
        and machine.active_baseline_version is not None
        and up.started_at < machine.learning_until
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", default=os.environ.get("HUMWATCH_BENCH_DATABASE_URL"))
    parser.add_argument("--clips", type=int, default=64, help="chunks continuing each run")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1, user_api="blas")
    from service import migrate
    from service.config import Settings
    from service.db import Database
    from service.models import Machine
    from service.runtime import Runtime
    from service.services import ingest_batch

    writer = ingest_batch._MachineWriter
    rules = {"new rule": writer._needs_what_came_before, "old rule": old_rule}
    clips, source = load_clips(args.clips + 1 + ENROLL)
    clips = mono_flac_chunks(clips)
    base_url = args.database_url or DEFAULT_DB
    cpu_ms: dict[str, list[float]] = {}
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(postgres_schema(base_url)) if "postgres" in base_url else base_url
        migrate.upgrade(url)
        settings = Settings(database_url=url, warm_up_index=False, prune_interval_seconds=0)
        runtime = Runtime(settings=settings, db=Database(url))
        enroll(runtime, "learning", clips, T0)
        with runtime.db.session() as session:
            machine = session.get(Machine, "learning")
            machine.learning_days = 30.0
            machine.learning_until = T0 + timedelta(days=30)
            machine.run_gap_seconds = 60.0
        day = 0
        for _ in range(args.rounds):
            for mode in ("new rule", "old rule", "batch 1"):
                day += 1
                writer._needs_what_came_before = rules.get(mode, rules["new rule"])
                start = T0 + timedelta(days=day)
                ingest_batch.ingest_many(
                    runtime, [ingest_batch.Item("learning", clips[ENROLL], start, {})]
                )
                items = [
                    ingest_batch.Item("learning", clip, start + timedelta(seconds=10 * (i + 1)), {})
                    for i, clip in enumerate(clips[ENROLL + 1 :])
                ]
                size = 1 if mode == "batch 1" else args.batch
                c0 = time.process_time()
                for at in range(0, len(items), size):
                    for out in ingest_batch.ingest_many(runtime, items[at : at + size]):
                        assert not isinstance(out, Exception), out
                ms = 1000 * (time.process_time() - c0) / len(items)
                cpu_ms.setdefault(mode, []).append(round(ms, 2))
        writer._needs_what_came_before = rules["new rule"]
        with runtime.db.session() as session:
            versions = session.get(Machine, "learning").active_baseline_version
        runtime.db.dispose()
    report = {
        "benchmark": "learning_batch",
        "database": "postgres" if "postgres" in base_url else "sqlite",
        "clips": {"source": source, "count": args.clips, "batch": args.batch},
        "active_version_at_the_end": versions,
        "load_average": os.getloadavg(),
        "cpu_ms_per_chunk": cpu_ms,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

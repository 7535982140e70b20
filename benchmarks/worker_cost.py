"""The worker path's CPU per chunk beside the bare pipeline, interleaved in one process.

``stream_ingest.py`` runs the workers as their own processes, one path after another: a
path's few seconds of CPU meet whatever the shared machine does then, and the bare
pipeline alone moved by up to 28 % between its rounds. Here the three arms run in this
process, round by round on the same chunks, in a rotating order, so the machine's load hits
them alike and each round gives a ratio:

- ``bare``: ``embed_audio`` + ``KNNBaseline.decision_function`` on each chunk, no database;
- ``service``: ``service.services.ingest_batch.ingest_many`` of the round's chunks in
  batches of ``--batch`` (the worker's service call), on a machine of its own;
- ``worker``: the round's chunks published to a JetStream work-queue stream of this run,
  then ``service.stream.worker.Worker`` (the code ``humwatch worker`` runs) draining them
  into its own machine: fetch, envelope, ingest, commit, acks; each round a fresh
  connection and subscription (their cost, about a millisecond, is in the figure).

The chunks are the 16 kHz mono FLAC of the agent (real MIMII fan id_00 clips when
../shared/data/machine-audio is present, else synthetic audio), each machine enrolled on
three of them; CPU is this process's (``time.process_time``: every thread), Postgres's own
is not counted. Torch and BLAS one thread, as the service runs.

    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 .venv/bin/python benchmarks/worker_cost.py
    ... --rounds 12 --chunks 96 --batch 16,64
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from benchmarks.service_ingest import DEFAULT_DB, load_clips, postgres_schema  # noqa: E402
from benchmarks.stream_ingest import (  # noqa: E402
    ENROLL,
    SECONDS,
    T0,
    bare_model,
    bench_names,
    delete_streams,
    enroll,
    mono_flac_chunks,
)


def bare_arm(chunks: list[bytes], model_parts) -> None:
    from detectors.pipeline import embed_audio

    embedder, win, hop, model = model_parts
    for data in chunks:
        model.decision_function(embed_audio(data, embedder, win, hop, "mix").vectors)


def service_arm(runtime, machine: str, chunks, batch: int) -> None:
    from service.services import ingest_batch

    items = [ingest_batch.Item(machine, audio, start, {}) for start, audio in chunks]
    for at in range(0, len(items), batch):
        results = ingest_batch.ingest_many(runtime, items[at : at + batch])
        assert all(not isinstance(r, Exception) and r.created for r in results), results


async def publish(nats_url: str, names, machine: str, chunks) -> None:
    from service.stream import envelope, jetstream

    nc = await jetstream.connect(nats_url, name="humwatch-bench")
    try:
        js = nc.jetstream()
        await jetstream.ensure_streams(js, names)
        for start, audio in chunks:
            chunk = envelope.Chunk(machine=machine, started_at=start, audio=audio)
            await js.publish(
                names.audio_subject(None, machine),
                envelope.encode(chunk),
                stream=names.stream,
                headers={"Nats-Msg-Id": chunk.message_id},
            )
    finally:
        await nc.close()


def worker_arm(runtime, options, count: int) -> None:
    from service.stream.worker import Worker

    counts = asyncio.run(Worker(runtime, options).run())
    assert counts["stored"] == count, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", default=os.environ.get("HUMWATCH_BENCH_DATABASE_URL"))
    parser.add_argument(
        "--nats", default=os.environ.get("HUMWATCH_NATS_URL", "nats://127.0.0.1:4222")
    )
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--chunks", type=int, default=64, help="chunks per round and arm")
    parser.add_argument("--batch", default="16", help="worker batch sizes (comma-separated)")
    args = parser.parse_args()
    os.environ["HUMWATCH_NATS_URL"] = args.nats  # stream_ingest's helpers read it
    logging.disable(logging.WARNING)  # the NATS clients' "disconnected" on every close
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1, user_api="blas")
    clips, source = load_clips(40 + ENROLL)
    flac = mono_flac_chunks(clips)
    model_parts = bare_model(flac)

    from service import migrate
    from service.config import Settings
    from service.db import Database
    from service.runtime import Runtime

    batches = [int(b) for b in args.batch.split(",")]
    arms = ["bare"] + [f"service_{b}" for b in batches] + [f"worker_{b}" for b in batches]
    cpu: dict[str, list[float]] = {arm: [] for arm in arms}
    loop_cpu: dict[str, list[float]] = {arm: [] for arm in arms if arm.startswith("worker_")}
    base_url = args.database_url or DEFAULT_DB
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(postgres_schema(base_url)) if "postgres" in base_url else base_url
        migrate.upgrade(url)
        settings = Settings(database_url=url, warm_up_index=False, prune_interval_seconds=0)
        runtime = Runtime(settings=settings, db=Database(url))
        tag = uuid.uuid4().hex[:8]
        machines = {arm: f"bench-{arm.replace('_', '-')}-{tag}" for arm in arms if arm != "bare"}
        for machine in machines.values():
            enroll(runtime, machine, flac, T0)
        names = {b: bench_names("cost") for b in batches}
        monitored = flac[ENROLL:]
        # Warm every arm once (embedder, baselines, prepared statements, NATS client).
        warm_chunks = [
            (T0 + timedelta(days=1, seconds=-10 * (i + 1)), monitored[i]) for i in range(4)
        ]
        bare_arm([a for _, a in warm_chunks], model_parts)
        for b in batches:
            service_arm(runtime, machines[f"service_{b}"], warm_chunks, b)
            asyncio.run(publish(args.nats, names[b], machines[f"worker_{b}"], warm_chunks))
            worker_arm(
                runtime, _options(args.nats, names[b], b, len(warm_chunks)), len(warm_chunks)
            )
        for r in range(args.rounds):
            start = T0 + timedelta(days=1 + r)
            chunks = [
                (
                    start + timedelta(seconds=SECONDS * i),
                    monitored[(r * args.chunks + i) % len(monitored)],
                )
                for i in range(args.chunks)
            ]
            for b in batches:
                machine = machines[f"worker_{b}"]
                asyncio.run(publish(args.nats, names[b], machine, chunks))
            order = arms[r % len(arms) :] + arms[: r % len(arms)]
            for arm in order:
                t0, c0 = time.thread_time(), time.process_time()
                if arm == "bare":
                    bare_arm([audio for _, audio in chunks], model_parts)
                elif arm.startswith("service_"):
                    service_arm(runtime, machines[arm], chunks, int(arm.split("_")[1]))
                else:
                    b = int(arm.split("_")[1])
                    worker_arm(runtime, _options(args.nats, names[b], b, len(chunks)), len(chunks))
                    loop_cpu[arm].append(time.thread_time() - t0)  # this thread runs the loop
                cpu[arm].append(time.process_time() - c0)
            line = {arm: round(1000 * cpu[arm][-1] / args.chunks, 2) for arm in arms}
            line |= {f"{a}_loop": round(1000 * c[-1] / args.chunks, 2) for a, c in loop_cpu.items()}
            print(json.dumps({"round": r, "cpu_ms_per_chunk": line}), file=sys.stderr)
        runtime.db.dispose()
        delete_streams(*names.values())
    report = {
        "benchmark": "worker_cost",
        "source": source,
        "chunks_per_round": args.chunks,
        "rounds": args.rounds,
        "machine": {
            "cpus": os.cpu_count(),
            "load_average": os.getloadavg(),
            "python": platform.python_version(),
        },
        "cpu_ms_per_chunk": {
            arm: [round(1000 * c / args.chunks, 2) for c in cpu[arm]] for arm in arms
        },
        "worker_event_loop_cpu_ms_per_chunk": {
            arm: [round(1000 * c / args.chunks, 2) for c in values]
            for arm, values in loop_cpu.items()
        },
        "audio_s_per_cpu_s": {
            arm: round(SECONDS * args.chunks * args.rounds / sum(cpu[arm]), 1) for arm in arms
        },
        "ratio_to_bare": {},
    }
    bare = np.asarray(cpu["bare"])
    for arm in arms[1:]:
        per_round = bare / np.asarray(cpu[arm])
        report["ratio_to_bare"][arm] = {
            "per_round": [round(float(x), 3) for x in per_round],
            "median": round(float(np.median(per_round)), 3),
            "min": round(float(per_round.min()), 3),
            "max": round(float(per_round.max()), 3),
            "pooled": round(float(bare.sum() / np.sum(cpu[arm])), 3),
        }
    print(json.dumps(report, indent=2))


def _options(nats_url: str, names, batch: int, count: int):
    from service.stream.worker import WorkerOptions

    return WorkerOptions(
        nats_url=nats_url, names=names, batch=batch, max_chunks=count, exit_when_idle=5.0
    )


if __name__ == "__main__":
    main()

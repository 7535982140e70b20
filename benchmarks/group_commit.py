"""Single uploads from many clients at once: group commit on and off, beside the bare pipeline.

Two ``humwatch serve`` processes (one uvicorn process each) on the same fresh Postgres schema,
one with ``HUMWATCH_GROUP_COMMIT=true`` (the default) and one with ``false`` (one write
transaction per upload, as before). ``--clients`` client threads, each the microphone of its
own machine (enrolled on three clips) sending the agent's 10 s 16 kHz mono FLAC chunks of
real MIMII fan id_00 recordings one after the other (``POST /v1/machines/{id}/recordings``).
Round by round, in a rotating order so that the machine's load hits all three alike: the bare
pipeline (``embed_audio`` + ``decision_function`` in this process, as many threads as
clients), the server without group commit, the server with it. Each arm's CPU is that of the
process doing the work (the server's from /proc); Postgres's own CPU is reported apart for the
two servers (the backends' /proc entries), since fewer transactions also cost it less.

Prints one JSON document. About two minutes on 2 cores.

    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 .venv/bin/python benchmarks/group_commit.py
    .venv/bin/python benchmarks/group_commit.py --clients 1,8,32 --rounds 6 --per-client 4
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.service_ingest import DEFAULT_DB, load_clips, postgres_schema  # noqa: E402
from benchmarks.stream_ingest import (  # noqa: E402
    ENROLL,
    SECONDS,
    T0,
    bare_model,
    cpu_seconds,
    enroll,
    mono_flac_chunks,
    running_server,
)

ARMS = ("bare", "one transaction per upload", "group commit")


def postgres_cpu(runtime) -> float:
    """CPU seconds of every Postgres backend of this database (from /proc), 0 on SQLite."""
    if runtime.db.engine.dialect.name != "postgresql":
        return 0.0
    from sqlalchemy import text

    with runtime.db.engine.connect() as conn:
        pids = conn.execute(
            text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
        ).scalars()
        total = 0.0
        for pid in pids:
            with contextlib.suppress(OSError):
                total += cpu_seconds(pid)
    return total


def group_sizes(http: httpx.Client) -> tuple[float, float]:
    """(transactions, uploads) of the server's group commit so far, from its /metrics."""
    values = {}
    for line in http.get("/metrics").text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("humwatch_ingest_group_uploads_count", "humwatch_ingest_group_uploads_sum"):
            values[name] = float(value)
    return (
        values.get("humwatch_ingest_group_uploads_count", 0.0),
        values.get("humwatch_ingest_group_uploads_sum", 0.0),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", default=os.environ.get("HUMWATCH_BENCH_DATABASE_URL"))
    parser.add_argument("--clients", default="8", help="concurrent clients (comma-separated)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--per-client", type=int, default=4, help="uploads per client a round")
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

    levels = [int(c) for c in args.clients.split(",")]
    most = max(levels)
    clips, source = load_clips(ENROLL + 24)
    flac = mono_flac_chunks(clips)
    embedder, win, hop, model = bare_model(flac)
    work = flac[ENROLL:]
    base_url = args.database_url or DEFAULT_DB
    report: dict = {
        "benchmark": "group_commit",
        "clips": {"source": source, "seconds": SECONDS, "flac_bytes": len(flac[0])},
        "rounds": args.rounds,
        "uploads_per_client_per_round": args.per_client,
        "levels": {},
    }
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(postgres_schema(base_url)) if "postgres" in base_url else base_url
        migrate.upgrade(url)
        settings = Settings(database_url=url, warm_up_index=False, prune_interval_seconds=0)
        runtime = Runtime(settings=settings, db=Database(url))
        for c in range(most):
            for arm in ("on", "off"):
                enroll(runtime, f"gc-{arm}-{c}", flac, T0)
        servers = {}
        for arm, flag in (("group commit", "true"), ("one transaction per upload", "false")):
            servers[arm] = stack.enter_context(running_server(url, group_commit=flag))
        http = {
            arm: stack.enter_context(httpx.Client(base_url=base))
            for arm, (base, _) in servers.items()
        }
        machine_of = {"group commit": "gc-on-{}", "one transaction per upload": "gc-off-{}"}
        day = [1]

        def run_arm(arm: str, clients: int) -> tuple[float, float, float, list[float]]:
            """(wall, own CPU, Postgres CPU, latencies) of one round of one arm."""
            day[0] += 1
            start = T0 + timedelta(days=day[0])
            latencies: list[float] = []
            lock = threading.Lock()

            def client(c: int) -> None:
                for j in range(args.per_client):
                    data = work[(c * args.per_client + j) % len(work)]
                    t0 = time.perf_counter()
                    if arm == "bare":
                        model.decision_function(
                            embed_audio(data, embedder, win, hop, "mix").vectors
                        )
                    else:
                        resp = http[arm].post(
                            f"/v1/machines/{machine_of[arm].format(c)}/recordings",
                            content=data,
                            params={"started_at": (start + timedelta(seconds=10 * j)).isoformat()},
                            headers={"Content-Type": "audio/flac"},
                            timeout=300,
                        )
                        assert resp.status_code == 201, resp.text[:300]
                    with lock:
                        latencies.append(time.perf_counter() - t0)

            cpu = time.process_time if arm == "bare" else (lambda: cpu_seconds(servers[arm][1]))
            pg0 = postgres_cpu(runtime) if arm != "bare" else 0.0
            w0, c0 = time.perf_counter(), cpu()
            with ThreadPoolExecutor(clients) as pool:
                list(pool.map(client, range(clients)))
            wall, own = time.perf_counter() - w0, cpu() - c0
            pg = postgres_cpu(runtime) - pg0 if arm != "bare" else 0.0
            return wall, own, pg, latencies

        for clients in levels:
            for arm in ARMS:  # warm: connections, caches, code paths
                run_arm(arm, clients)
            totals = {arm: [0.0, 0.0, 0.0, []] for arm in ARMS}
            groups0 = group_sizes(http["group commit"])
            ratios = {arm: [] for arm in ARMS[1:]}
            for r in range(args.rounds):
                order = ARMS[r % 3 :] + ARMS[: r % 3]
                per_round = {}
                for arm in order:
                    wall, own, pg, lat = run_arm(arm, clients)
                    t = totals[arm]
                    t[0] += wall
                    t[1] += own
                    t[2] += pg
                    t[3] += lat
                    per_round[arm] = own
                for arm in ARMS[1:]:
                    ratios[arm].append(per_round["bare"] / per_round[arm])
            n = clients * args.per_client * args.rounds
            groups1 = group_sizes(http["group commit"])
            level = {}
            for arm in ARMS:
                wall, own, pg, lat = totals[arm]
                level[arm] = {
                    "uploads": n,
                    "cpu_ms_per_upload": round(1000 * own / n, 2),
                    "audio_s_per_cpu_s": round(SECONDS * n / own, 1),
                    "audio_x_realtime_wall": round(SECONDS * n / wall, 1),
                    "latency_p50_ms": round(1000 * float(np.percentile(lat, 50)), 1),
                    "latency_p95_ms": round(1000 * float(np.percentile(lat, 95)), 1),
                }
                if arm != "bare":
                    level[arm]["postgres_cpu_ms_per_upload"] = round(1000 * pg / n, 2)
                    level[arm]["ratio_to_bare_pooled"] = round(
                        level[arm]["audio_s_per_cpu_s"] / level["bare"]["audio_s_per_cpu_s"], 2
                    )
                    level[arm]["ratio_to_bare_median_of_rounds"] = round(
                        float(np.median(ratios[arm])), 2
                    )
            transactions = groups1[0] - groups0[0]
            level["group commit"]["uploads_per_transaction"] = (
                round((groups1[1] - groups0[1]) / transactions, 2) if transactions else None
            )
            report["levels"][str(clients)] = level
        report["load_average"] = os.getloadavg()
        runtime.db.dispose()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

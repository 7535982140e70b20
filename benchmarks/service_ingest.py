"""Ingest throughput and latency of the service against Postgres, beside the bare pipeline.

Starts the service (uvicorn, one process, as `humwatch serve` runs it) on a fresh Postgres
schema, registers one machine per client, enrolls each on a few clips, and then has 1, 4 and
16 concurrent clients upload 10 s clips (real MIMII fan id_00 recordings when
../shared/data/machine-audio is present, else synthetic 8-channel audio) to their monitoring
machine. Every upload is decoded, windowed, embedded, scored and stored with its window audio
and embeddings.

In the same run the same clips go through the bare detectors pipeline in this process
(``embed_audio`` + ``KNNBaseline.decision_function`` on a baseline fitted on the same
enrollment clips), sequentially and with as many threads as clients. The overhead ratio is
service / bare, for p50 latency and for throughput; per CPU, the server process's audio
seconds per CPU second (from /proc, during the timed uploads only) over the bare pipeline's
(this process's CPU time), which does not depend on how loaded the machine is.

Prints one JSON document. About 2 minutes on 2 cores.

    .venv/bin/python benchmarks/service_ingest.py > out/service_ingest.json
    .venv/bin/python benchmarks/service_ingest.py --clients 1 4 --requests 8   # quicker
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import socket
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "machine-audio" / "mimii" / "fan" / "id_00" / "unsplit"
DEFAULT_DB = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
T0 = datetime(2025, 1, 6, tzinfo=UTC)


def load_clips(n: int) -> tuple[list[bytes], str]:
    """``n`` 10 s clips as WAV bytes and where they came from."""
    files = sorted((DATA / "normal").glob("*.wav")) + sorted((DATA / "abnormal").glob("*.wav"))
    if files:
        return [files[i % len(files)].read_bytes() for i in range(n)], "MIMII fan id_00 (8 ch)"
    import io

    import soundfile as sf

    clips = []
    for i in range(n):
        rng = np.random.default_rng(i)
        t = np.arange(160_000) / 16000
        x = 0.2 * np.sin(2 * np.pi * 120 * t) + 0.03 * rng.standard_normal(t.size)
        buf = io.BytesIO()
        sf.write(buf, np.repeat(x[:, None], 8, axis=1), 16000, format="WAV", subtype="PCM_16")
        clips.append(buf.getvalue())
    return clips, "synthetic (8 ch)"


def percentiles(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values) * 1000.0
    return {
        "p50_ms": round(float(np.percentile(arr, 50)), 1),
        "p99_ms": round(float(np.percentile(arr, 99)), 1),
        "mean_ms": round(float(arr.mean()), 1),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def postgres_schema(base_url: str):
    schema = f"hw_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = (
        make_url(base_url)
        .update_query_dict({"options": f"-csearch_path={schema}"})
        .render_as_string(hide_password=False)
    )
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@contextlib.contextmanager
def running_service(url: str, enroll_seconds: float):
    from service import migrate

    migrate.upgrade(url)
    port = free_port()
    env = {
        **os.environ,
        "HUMWATCH_DATABASE_URL": url,
        "HUMWATCH_MIN_ENROLLMENT_SECONDS": str(enroll_seconds),
        "HUMWATCH_PRUNE_INTERVAL_SECONDS": "0",
        "HUMWATCH_WARM_UP_INDEX": "false",  # exact index below 50k vectors: not needed here
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"service exited: {proc.stderr.read()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("service did not become ready in 120 s")
            time.sleep(0.5)
        yield base, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def upload(http: httpx.Client, machine: str, data: bytes, started_at: datetime) -> float:
    t0 = time.perf_counter()
    resp = http.post(
        f"/v1/machines/{machine}/recordings",
        content=data,
        params={"started_at": started_at.isoformat()},
        headers={"Content-Type": "audio/wav"},
    )
    elapsed = time.perf_counter() - t0
    if resp.status_code != 201:
        raise RuntimeError(f"upload failed: {resp.status_code} {resp.text[:300]}")
    return elapsed


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:13]) / os.sysconf("SC_CLK_TCK")


def run_service(
    base: str, pid: int, clips, enroll_clips: int, clients: int, per_client: int, tag: str
):
    """Enroll one machine per client, then measure concurrent monitoring uploads."""
    machines = [f"bench-{tag}-{c}" for c in range(clients)]
    with httpx.Client(base_url=base, timeout=300) as http:
        for m in machines:
            body = {
                "id": m,
                "enrollment_seconds": 10.0 * enroll_clips,
                "enrollment_runs": 1,
                "learning_days": 0,
            }
            assert http.post("/v1/machines", json=body).status_code == 201
            for i in range(enroll_clips):
                upload(http, m, clips[i], T0 + timedelta(seconds=10 * i))
            state = http.get(f"/v1/machines/{m}").json()["state"]
            assert state == "monitoring", state
        # One warm-up upload per machine (baseline cache, connection pool).
        for m in machines:
            upload(http, m, clips[enroll_clips], T0 + timedelta(days=1))

    def client_loop(c: int) -> list[float]:
        with httpx.Client(base_url=base, timeout=300) as http:
            out = []
            for i in range(per_client):
                clip = clips[enroll_clips + 1 + (c + i) % (len(clips) - enroll_clips - 1)]
                out.append(upload(http, machines[c], clip, T0 + timedelta(days=2, minutes=i)))
            return out

    t0, c0 = time.perf_counter(), cpu_seconds(pid)
    with ThreadPoolExecutor(clients) as pool:
        latencies = [x for lat in pool.map(client_loop, range(clients)) for x in lat]
    wall = time.perf_counter() - t0
    return latencies, wall, cpu_seconds(pid) - c0


def run_bare(clips, enroll_clips: int, clients: int, per_client: int):
    """The same work through the detectors pipeline in this process (no HTTP, no database)."""
    import torch

    from detectors.baseline import KNNBaseline
    from detectors.embedders import build_embedder
    from detectors.pipeline import embed_audio
    from service.config import DEFAULT_BASELINE, DEFAULT_CHANNEL, MACHINE_PRESET

    # As the service runs it (HUMWATCH_TORCH_THREADS=1): one intra-op thread per upload.
    torch.set_num_threads(1)
    embedder = build_embedder(MACHINE_PRESET.embedder)
    win, hop = MACHINE_PRESET.window_seconds, MACHINE_PRESET.hop_seconds
    channel = "mix" if DEFAULT_CHANNEL == "mix" else int(DEFAULT_CHANNEL)
    enrolled = [embed_audio(c, embedder, win, hop, channel).vectors for c in clips[:enroll_clips]]
    groups = np.concatenate([[i] * len(v) for i, v in enumerate(enrolled)])
    model = KNNBaseline(
        k=DEFAULT_BASELINE["k"],
        metric=DEFAULT_BASELINE["metric"],
        standardize=DEFAULT_BASELINE["standardize"],
        false_alarm_rate=DEFAULT_BASELINE["false_alarm_rate"],
    ).fit(np.concatenate(enrolled), groups)

    def one(data: bytes) -> float:
        t0 = time.perf_counter()
        vectors = embed_audio(data, embedder, win, hop, channel).vectors
        model.decision_function(vectors)
        return time.perf_counter() - t0

    one(clips[enroll_clips])  # warm-up

    def client_loop(c: int) -> list[float]:
        rest = len(clips) - enroll_clips - 1
        return [one(clips[enroll_clips + 1 + (c + i) % rest]) for i in range(per_client)]

    t0, c0 = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(clients) as pool:
        latencies = [x for lat in pool.map(client_loop, range(clients)) for x in lat]
    return latencies, time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", default=os.environ.get("HUMWATCH_BENCH_DATABASE_URL"))
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=32, help="uploads per concurrency level")
    parser.add_argument("--enroll-clips", type=int, default=3)
    args = parser.parse_args()
    base_url = args.database_url or DEFAULT_DB
    clips, source = load_clips(40)
    from service.config import MACHINE_PRESET

    report = {
        "benchmark": "service_ingest",
        "clips": {"source": source, "seconds": 10.0, "bytes": len(clips[0])},
        "preset": {
            "embedder": MACHINE_PRESET.embedder,
            "window_seconds": MACHINE_PRESET.window_seconds,
            "hop_seconds": MACHINE_PRESET.hop_seconds,
        },
        "database": make_url(base_url).render_as_string(hide_password=True).split("?")[0],
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "service": "uvicorn, 1 process, HTTP on loopback; clients are threads in this process",
        "results": [],
    }
    with (
        postgres_schema(base_url) as url,
        running_service(url, args.enroll_clips * 10.0) as (base, pid),
    ):
        for clients in args.clients:
            per_client = max(1, args.requests // clients)
            lat, wall, server_cpu = run_service(
                base, pid, clips, args.enroll_clips, clients, per_client, clients
            )
            bare_lat, bare_wall, bare_cpu = run_bare(clips, args.enroll_clips, clients, per_client)
            n = len(lat)
            service = {
                **percentiles(lat),
                "clips_per_s": round(n / wall, 2),
                "audio_x_realtime": round(10.0 * n / wall, 1),
                "server_audio_s_per_cpu_s": round(10.0 * n / server_cpu, 1),
            }
            bare = {
                **percentiles(bare_lat),
                "clips_per_s": round(n / bare_wall, 2),
                "audio_s_per_cpu_s": round(10.0 * n / bare_cpu, 1),
            }
            report["results"].append(
                {
                    "clients": clients,
                    "uploads": n,
                    "service": service,
                    "bare_pipeline": bare,
                    "overhead_ratio": {
                        "p50_latency": round(service["p50_ms"] / bare["p50_ms"], 2),
                        "throughput": round(bare["clips_per_s"] / service["clips_per_s"], 2),
                    },
                    "per_cpu_ratio_to_bare": round(
                        service["server_audio_s_per_cpu_s"] / bare["audio_s_per_cpu_s"], 2
                    ),
                }
            )
            print(json.dumps(report["results"][-1]), file=sys.stderr)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

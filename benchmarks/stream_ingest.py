"""Ingest cost of the service, through HTTP and through the queue, beside the bare pipeline.

One run, the same 10 s clips (real MIMII fan id_00 recordings when
../shared/data/machine-audio is present, else synthetic 8-channel audio), one machine per
path enrolled on the first three clips, everything sequential on one core's worth of threads
(torch and BLAS 1 thread, as the service runs):

- ``wav_interleaved``: on each 8-channel WAV clip in turn, the bare pipeline
  (``embed_audio`` + ``KNNBaseline.decision_function`` in this process, no database), the
  service layer (``service.services.ingest.ingest`` in this process: decode, embed, score,
  one write transaction) and HTTP (``humwatch serve``, uvicorn, one process, one client);
- ``{wav,flac}_http_batch_N``: group of N clips by group, the bare pipeline, the service
  layer's batch (``ingest_many`` of the N in this process), HTTP one upload per request and
  HTTP batches of N uploads per request (``POST /v1/recordings/batch``) on the same clips,
  the WAV ones and the agent's FLAC chunks (``--http-batch 16,64``, ``--batch-input
  wav,flac``, ``--batch-uploads`` per path);
- ``bare_flac``: the bare pipeline on the 16 kHz mono FLAC chunks the agent sends;
- ``worker``: agent (this process) -> MQTT -> ``humwatch bridge`` -> JetStream ->
  ``humwatch worker`` x 1 and x 2 -> database, on the FLAC chunks, as fast as the workers
  take them (chunks/s), then paced at half the 2-worker capacity for the latency from the
  agent's publish to the recording row's insert (p50, p95);
- ``worker_{1,2}_backlog``: the same, but the workers are paused while every chunk is
  published and stored in JetStream and timed draining that backlog: every fetch finds a
  full batch, which is the workers' cost when they are the bottleneck (fed live, the feed
  decides how full each fetch is).

Every path reports clips/s, audio seconds per wall second and per CPU second (the CPU of
the processes doing the work: this process for bare and service_layer, the server for http,
the workers for worker; Postgres's own CPU is not counted), and its ratio to the bare
pipeline on the same input (interleaved, or measured just before it).

    .venv/bin/python benchmarks/stream_ingest.py > out/stream_ingest.json
    .venv/bin/python benchmarks/stream_ingest.py --quick
    .venv/bin/python benchmarks/stream_ingest.py --paths http_batch   # HTTP single vs batch
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.service_ingest import DEFAULT_DB, load_clips, postgres_schema  # noqa: E402

T0 = datetime(2025, 1, 6, tzinfo=UTC)
LOG_DIR = ROOT / "out" / "stream_ingest"  # the bridge's and workers' logs
ENROLL = 3
SECONDS = 10.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (and its reaped children), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(x) for x in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def figures(n: int, wall: float, cpu: float) -> dict:
    return {
        "clips": n,
        "clips_per_s": round(n / wall, 2),
        "audio_x_realtime": round(SECONDS * n / wall, 1),
        "audio_s_per_cpu_s": round(SECONDS * n / cpu, 1) if cpu > 0 else None,
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
    }


def ratio(service: dict, bare: dict) -> dict:
    return {
        "throughput": round(service["clips_per_s"] / bare["clips_per_s"], 2),
        "per_cpu": round(service["audio_s_per_cpu_s"] / bare["audio_s_per_cpu_s"], 2)
        if service["audio_s_per_cpu_s"] and bare["audio_s_per_cpu_s"]
        else None,
    }


def mono_flac_chunks(clips: list[bytes]) -> list[bytes]:
    """What the agent sends for each clip: mixdown, 16-bit, FLAC."""
    from detectors.audio import decode
    from service.stream.agent import encode_flac, to_pcm16

    return [encode_flac(to_pcm16(decode(c).mono("mix")), 16000) for c in clips]


def bare_model(clips: list[bytes]):
    from detectors.baseline import KNNBaseline
    from detectors.embedders import build_embedder
    from detectors.pipeline import embed_audio
    from service.config import DEFAULT_BASELINE, MACHINE_PRESET

    embedder = build_embedder(MACHINE_PRESET.embedder)
    win, hop = MACHINE_PRESET.window_seconds, MACHINE_PRESET.hop_seconds
    enrolled = [embed_audio(c, embedder, win, hop, "mix").vectors for c in clips[:ENROLL]]
    groups = np.concatenate([[i] * len(v) for i, v in enumerate(enrolled)])
    params = {k: DEFAULT_BASELINE[k] for k in ("k", "metric", "standardize", "false_alarm_rate")}
    model = KNNBaseline(**params).fit(np.concatenate(enrolled), groups)
    return embedder, win, hop, model


def run_bare(clips: list[bytes], model_parts, threads: int = 1) -> dict:
    from concurrent.futures import ThreadPoolExecutor

    from detectors.pipeline import embed_audio

    embedder, win, hop, model = model_parts

    def one(data: bytes) -> None:
        model.decision_function(embed_audio(data, embedder, win, hop, "mix").vectors)

    one(clips[0])
    t0, c0 = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, clips))
    return figures(len(clips), time.perf_counter() - t0, time.process_time() - c0)


def enroll(runtime, machine: str, clips: list[bytes], start: datetime) -> None:
    from service.schemas import MachineCreate
    from service.services import ingest
    from service.services.machines import create_machine

    with runtime.db.session() as session:
        create_machine(
            session,
            runtime,
            MachineCreate(
                id=machine,
                enrollment_seconds=SECONDS * ENROLL,
                enrollment_runs=1,
                learning_days=0,
            ),
        )
    for i, clip in enumerate(clips[:ENROLL]):
        result = ingest.ingest(
            runtime, machine, clip, started_at=start + timedelta(seconds=10 * i), conditions={}
        )
    assert result.machine_state == "monitoring", result.machine_state


@contextlib.contextmanager
def running_server(url: str, **settings: str):
    """``humwatch serve`` (one uvicorn process) on a free port: ``(base_url, pid)``;
    ``settings``: more HUMWATCH_* variables."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "HUMWATCH_DATABASE_URL": url, "HUMWATCH_WARM_UP_INDEX": "false"}
    env.update({f"HUMWATCH_{k.upper()}": v for k, v in settings.items()})
    env["HUMWATCH_PRUNE_INTERVAL_SECONDS"] = "0"
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(port)],
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, "the service exited"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, "the service did not become ready"
            time.sleep(0.3)
        yield base, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def run_interleaved(url: str, runtime, clips: list[bytes], model_parts) -> dict:
    """Bare pipeline, service layer and HTTP on each WAV clip in turn (load drift hits all
    three alike): their figures and ratios."""
    from detectors.pipeline import embed_audio
    from service.services import ingest

    embedder, win, hop, model = model_parts
    enroll(runtime, "bench-layer", clips, T0)
    enroll(runtime, "bench-http", clips, T0)
    start = T0 + timedelta(days=1)
    totals = {name: [0.0, 0.0] for name in ("bare", "service_layer", "http")}
    with running_server(url) as (base, pid), httpx.Client(base_url=base, timeout=300) as http:

        def bare(data: bytes, _at) -> None:
            model.decision_function(embed_audio(data, embedder, win, hop, "mix").vectors)

        def layer(data: bytes, at: datetime) -> None:
            ingest.ingest(runtime, "bench-layer", data, started_at=at, conditions={})

        def post(data: bytes, at: datetime) -> None:
            resp = http.post(
                "/v1/machines/bench-http/recordings",
                content=data,
                params={"started_at": at.isoformat()},
                headers={"Content-Type": "audio/wav"},
            )
            assert resp.status_code == 201, resp.text[:300]

        for fn in (bare, layer, post):  # warm: caches, connections
            fn(clips[0], start)
        backends = postgres_backends(runtime)
        pg_cpu = 0.0
        for i, clip in enumerate(clips[ENROLL:]):
            at = start + timedelta(seconds=10 * (i + 1))
            for name, fn, cpu in (
                ("bare", bare, time.process_time),
                ("service_layer", layer, time.process_time),
                ("http", post, lambda: cpu_seconds(pid)),
            ):
                t0, c0 = time.perf_counter(), cpu()
                p0 = sum(cpu_seconds(b) for b in backends) if fn is layer else 0.0
                fn(clip, at)
                totals[name][0] += time.perf_counter() - t0
                totals[name][1] += cpu() - c0
                if fn is layer:
                    pg_cpu += sum(cpu_seconds(b) for b in backends) - p0
    n = len(clips) - ENROLL
    out = {name: figures(n, wall, cpu) for name, (wall, cpu) in totals.items()}
    for name in ("service_layer", "http"):
        out[name]["ratio_to_bare"] = ratio(out[name], out["bare"])
    if backends:
        out["service_layer"]["postgres_cpu_ms_per_clip"] = round(1000 * pg_cpu / n, 2)
    return out


def run_http_batches(
    url: str, runtime, clips: list[bytes], model_parts, size: int, uploads: int, kind: str
) -> dict:
    """Bare pipeline, HTTP one upload per request and HTTP batches of ``size`` uploads
    (``POST /v1/recordings/batch``), group of ``size`` clips by group in turn (load drift
    hits the three alike), on the same clips (cycled, each upload its own start time);
    ``kind``: ``wav`` (8-channel WAV) or ``flac`` (the agent's 16 kHz mono chunks)."""
    from detectors.pipeline import embed_audio
    from service.services.ingest_batch import Item, ingest_many

    embedder, win, hop, model = model_parts
    media = {"wav": "audio/wav", "flac": "audio/flac"}[kind]
    single, batch = f"bench-http1-{kind}-{size}", f"bench-httpb-{kind}-{size}"
    layer = f"bench-layerb-{kind}-{size}"
    for machine in (single, batch, layer):
        enroll(runtime, machine, clips, T0)
    work = [clips[ENROLL + i % (len(clips) - ENROLL)] for i in range(uploads)]
    start = T0 + timedelta(days=1)
    totals = {name: [0.0, 0.0] for name in ("bare", "service_batch", "http", "http_batch")}
    # 64 x 2.5 MB of 8-channel WAV is over the default HUMWATCH_MAX_BATCH_BYTES (128 MiB).
    limit = str(1 << 30)
    with (
        running_server(url, max_batch_bytes=limit) as (base, pid),
        httpx.Client(base_url=base, timeout=600) as http,
    ):

        def bare(group: list[bytes], _times) -> None:
            for data in group:
                model.decision_function(embed_audio(data, embedder, win, hop, "mix").vectors)

        def in_process(group: list[bytes], times) -> None:
            items = [Item(layer, d, at, {}) for d, at in zip(group, times, strict=True)]
            assert all(r.created for r in ingest_many(runtime, items))

        def one_by_one(group: list[bytes], times) -> None:
            for data, at in zip(group, times, strict=True):
                resp = http.post(
                    f"/v1/machines/{single}/recordings",
                    content=data,
                    params={"started_at": at.isoformat()},
                    headers={"Content-Type": media},
                )
                assert resp.status_code == 201, resp.text[:300]

        def batched(group: list[bytes], times) -> None:
            items = [
                {"machine_id": batch, "started_at": at.isoformat(), "file": f"f{j}"}
                for j, at in enumerate(times)
            ]
            files = [("manifest", (None, json.dumps({"items": items}), "application/json"))]
            files += [(f"f{j}", (f"f{j}.{kind}", d, media)) for j, d in enumerate(group)]
            resp = http.post("/v1/recordings/batch", files=files)
            assert resp.status_code == 200, resp.text[:300]
            assert resp.json()["created"] == len(group), resp.text[:300]

        warm = T0 + timedelta(hours=1)  # caches, connections, the first batch's code paths
        for fn in (bare, in_process, one_by_one, batched):
            fn(work[:2], [warm, warm + timedelta(seconds=10)])
        for g in range(0, uploads, size):
            group = work[g : g + size]
            times = [start + timedelta(seconds=10 * (g + j)) for j in range(len(group))]
            for name, fn, cpu in (
                ("bare", bare, time.process_time),
                ("service_batch", in_process, time.process_time),
                ("http", one_by_one, lambda: cpu_seconds(pid)),
                ("http_batch", batched, lambda: cpu_seconds(pid)),
            ):
                t0, c0 = time.perf_counter(), cpu()
                fn(group, times)
                totals[name][0] += time.perf_counter() - t0
                totals[name][1] += cpu() - c0
    out = {name: figures(uploads, wall, cpu) for name, (wall, cpu) in totals.items()}
    for name in ("service_batch", "http", "http_batch"):
        out[name]["ratio_to_bare"] = ratio(out[name], out["bare"])
    out["http_batch"]["items_per_request"] = size
    # What HTTP adds to the same batches in process (uvicorn, multipart, the JSON answer).
    out["http_batch"]["front_end_cpu_ms_per_clip"] = round(
        1000 * (totals["http_batch"][1] - totals["service_batch"][1]) / uploads, 2
    )
    return out


def postgres_backends(runtime) -> list[int]:
    """Server processes of this runtime's connections (Postgres on this machine), to count
    the database's own CPU per upload."""
    if not runtime.db.url.startswith("postgresql"):
        return []
    from sqlalchemy import text

    with runtime.db.session() as session:
        name = session.execute(text("SELECT current_setting('application_name')")).scalar_one()
        pids = session.execute(
            text("SELECT pid FROM pg_stat_activity WHERE application_name = :n"), {"n": name}
        ).scalars()
        return [pid for pid in pids if Path(f"/proc/{pid}/stat").exists()]


@contextlib.contextmanager
def stream_processes(db_url: str, names, workers: int, batch: int | None = None):
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HUMWATCH_DATABASE_URL": db_url,
        "HUMWATCH_WARM_UP_INDEX": "false",
        "HUMWATCH_PRUNE_INTERVAL_SECONDS": "0",
    }
    common = ["--subject-prefix", names.nats_prefix, "--stream", names.stream]
    common += ["--dead-stream", names.dead_stream]
    cli = [sys.executable, "-m", "service.cli"]
    bridge = subprocess.Popen(
        [*cli, "bridge", "--topic-prefix", names.mqtt_prefix, "--client-id", names.consumer]
        + common,
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=open(LOG_DIR / "bridge.log", "ab"),  # noqa: SIM115 - closed with the process
    )
    procs = [
        subprocess.Popen(
            [*cli, "worker", "--consumer", names.consumer, *common]
            + ([] if batch is None else ["--batch", str(batch)]),
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=open(LOG_DIR / f"worker-{i}.log", "ab"),  # noqa: SIM115
        )
        for i in range(workers)
    ]
    try:
        yield bridge, procs
    finally:
        for proc in [bridge, *procs]:
            proc.terminate()
        for proc in [bridge, *procs]:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


def wait_for_stream(stream: str, count: int, deadline: float) -> None:
    """Until the JetStream stream holds ``count`` messages."""
    import asyncio

    import nats

    async def wait() -> None:
        nc = await nats.connect(os.environ["HUMWATCH_NATS_URL"])
        try:
            js = nc.jetstream()
            while (await js.stream_info(stream)).state.messages < count:
                assert time.monotonic() < deadline, "the bridge did not store every chunk in time"
                await asyncio.sleep(0.2)
        finally:
            await nc.close()

    asyncio.run(wait())


def delete_streams(*all_names) -> None:
    """Remove the JetStream streams of these benchmark runs from the shared server."""
    import asyncio

    import nats

    from service.stream import jetstream

    async def delete() -> None:
        nc = await nats.connect(os.environ["HUMWATCH_NATS_URL"])
        try:
            for names in all_names:
                await jetstream.delete_streams(nc.jetstream(), names)
        finally:
            await nc.close()

    asyncio.run(delete())


def stored_times(runtime, machine: str) -> dict:
    from sqlalchemy import select

    from service.models import Recording

    with runtime.db.session() as session:
        rows = session.execute(
            select(Recording.started_at, Recording.created_at).where(
                Recording.machine_id == machine
            )
        ).all()
    return {r.started_at: r.created_at for r in rows}


class TimedAgent:
    """The real agent, recording when each chunk was handed to it."""

    def __init__(self, options) -> None:
        from service.stream.agent import Agent

        self.agent = Agent(options)
        self.published: dict[datetime, float] = {}
        original = self.agent._spool_chunk

        def spool(started_at, pcm):
            self.published[started_at] = time.time()
            original(started_at, pcm)

        self.agent._spool_chunk = spool

    def run(self, chunks) -> dict:
        return self.agent.run(iter(chunks), forever=False)


def bench_names(kind: str):
    """Topics, subjects, streams and consumer of one benchmark run of its own, ``hw{kind}-``."""
    from service.stream.topics import Names

    tag = uuid.uuid4().hex[:8]
    return Names(
        mqtt_prefix=f"hw{kind}-{tag}",
        nats_prefix=f"hw{kind}-{tag}",
        stream=f"HW{kind.upper()}_{tag}",
        dead_stream=f"HW{kind.upper()}_DEAD_{tag}",
        consumer=f"hw{kind}-{tag}",
    )


def run_worker_path(
    db_url: str,
    runtime,
    flac: list[bytes],
    workers: int,
    mqtt: str,
    pace: float | None,
    batch: int | None = None,
    backlog: bool = False,
) -> dict:
    """One worker-path run; ``backlog``: the workers are paused (SIGSTOP) while every chunk
    is published and stored in JetStream, then resumed and timed draining the queue, so each
    fetch finds a full batch (the workers' cost when they are the bottleneck)."""
    import soundfile as sf

    from service.stream.agent import AgentOptions

    names = bench_names("bench")
    machine = f"bench-worker-{uuid.uuid4().hex[:8]}"
    enroll(runtime, machine, flac, T0)
    pcm = [sf.read(io.BytesIO(c), dtype="int16")[0] for c in flac[ENROLL:]]
    start = T0 + timedelta(days=1)
    chunks = [(start + timedelta(seconds=10 * i), p) for i, p in enumerate(pcm)]
    warm = [(start - timedelta(seconds=10 * (i + 1)), p) for i, p in enumerate(pcm[:workers])]
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    for old in LOG_DIR.glob("*.log"):
        old.unlink()
    with stream_processes(db_url, names, workers, batch) as (bridge, procs):
        import tempfile

        def agent(spool: str, pace_factor: float) -> TimedAgent:
            return TimedAgent(
                AgentOptions(
                    mqtt_url=mqtt,
                    machine=machine,
                    names=names,
                    buffer_dir=Path(spool),
                    pace=pace_factor,
                )
            )

        with tempfile.TemporaryDirectory() as spool:
            # MQTT keeps messages only for sessions it knows: wait for the bridge's.
            deadline = time.monotonic() + 120
            log = LOG_DIR / "bridge.log"
            while names.mqtt_prefix + "/+/+/audio" not in log.read_text().split("subscribed")[-1]:
                assert time.monotonic() < deadline, "the bridge did not subscribe"
                time.sleep(0.2)
            time.sleep(0.5)
            agent(spool, 0).run(warm)  # workers started, embedder and baseline loaded
            deadline = time.monotonic() + 300
            while len(stored_times(runtime, machine)) < ENROLL + len(warm):
                assert time.monotonic() < deadline, "workers did not start"
                time.sleep(0.2)
            timed = agent(spool, pace or 0)
            if backlog:
                for proc in procs:
                    os.kill(proc.pid, signal.SIGSTOP)
                timed.run(chunks)
                wait_for_stream(names.stream, len(chunks), deadline)
                for proc in procs:
                    os.kill(proc.pid, signal.SIGCONT)
                resumed = time.time()
            c0 = sum(cpu_seconds(p.pid) for p in procs)
            b0 = cpu_seconds(bridge.pid)
            if not backlog:
                threading.Thread(target=timed.run, args=(chunks,), daemon=True).start()
            want = {c[0] for c in chunks}
            while True:
                stored = stored_times(runtime, machine)
                if want <= stored.keys():
                    break
                assert time.monotonic() < deadline, "chunks not stored in time"
                time.sleep(0.05)
            cpu = sum(cpu_seconds(p.pid) for p in procs) - c0
            bridge_cpu = cpu_seconds(bridge.pid) - b0
    delete_streams(names)
    first = resumed if backlog else min(timed.published.values())
    last = max(stored[s].timestamp() for s in want)
    out = figures(len(chunks), last - first, cpu)
    if backlog:
        return out
    latencies = [stored[s].timestamp() - timed.published[s] for s in want]
    out["bridge_cpu_s"] = round(bridge_cpu, 2)
    out["latency_p50_ms"] = round(float(np.percentile(latencies, 50)) * 1000, 1)
    out["latency_p95_ms"] = round(float(np.percentile(latencies, 95)) * 1000, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", default=os.environ.get("HUMWATCH_BENCH_DATABASE_URL"))
    parser.add_argument("--mqtt", default="mqtt://127.0.0.1:1883")
    parser.add_argument("--nats", default="nats://127.0.0.1:4222")
    parser.add_argument("--clips", type=int, default=40)
    parser.add_argument("--quick", action="store_true", help="12 clips (about a minute)")
    parser.add_argument(
        "--worker-batch", type=int, default=None, help="the workers' --batch (default: theirs)"
    )
    parser.add_argument(
        "--http-batch",
        default="16,64",
        help="items per request of the HTTP batch paths (comma-separated; '' for none)",
    )
    parser.add_argument(
        "--batch-uploads", type=int, default=128, help="uploads per HTTP batch path"
    )
    parser.add_argument(
        "--batch-input", default="wav,flac", help="inputs of the HTTP batch paths: wav, flac"
    )
    parser.add_argument(
        "--paths",
        default="interleaved,http_batch,worker",
        help="which paths to run (comma-separated: interleaved, http_batch, worker)",
    )
    args = parser.parse_args()
    os.environ["HUMWATCH_NATS_URL"] = args.nats
    os.environ["HUMWATCH_MQTT_URL"] = args.mqtt
    n = 12 if args.quick else args.clips
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1, user_api="blas")
    all_clips, source = load_clips(n + ENROLL)
    clips = all_clips[ENROLL:]
    flac_all = mono_flac_chunks(all_clips)
    flac = flac_all[ENROLL:]

    from service import migrate
    from service.config import Settings
    from service.db import Database
    from service.runtime import Runtime

    report = {
        "benchmark": "stream_ingest",
        "clips": {
            "source": source,
            "seconds": SECONDS,
            "count": n,
            "wav_bytes": len(clips[0]),
            "flac_bytes": len(flac[0]),
        },
        "machine": {
            "cpus": os.cpu_count(),
            "load_average": os.getloadavg(),
            "python": platform.python_version(),
        },
        "results": {},
    }
    base_url = args.database_url or DEFAULT_DB
    wav_model = bare_model(all_clips)
    flac_model = bare_model(flac_all)
    results = report["results"]
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(postgres_schema(base_url)) if "postgres" in base_url else base_url
        report["database"] = url.split("?")[0].split("@")[-1]
        migrate.upgrade(url)
        settings = Settings(database_url=url, warm_up_index=False, prune_interval_seconds=0)
        app_name = {"application_name": f"hwbench-{uuid.uuid4().hex[:8]}"}
        runtime = Runtime(
            settings=settings,
            db=Database(url, connect_args=app_name) if "postgres" in url else Database(url),
        )

        def step(name: str, value: dict) -> dict:
            results[name] = value
            print(json.dumps({name: value}), file=sys.stderr)
            return value

        wb = args.worker_batch
        report["worker_batch"] = wb
        paths = set(args.paths.split(","))
        if "interleaved" in paths:
            step("wav_interleaved", run_interleaved(url, runtime, all_clips, wav_model))
        sizes = [int(x) for x in args.http_batch.split(",") if x.strip()]
        inputs = {"wav": (all_clips, wav_model), "flac": (flac_all, flac_model)}
        for kind in args.batch_input.split(",") if "http_batch" in paths else []:
            for size in sizes:
                kind_clips, kind_model = inputs[kind]
                step(
                    f"{kind}_http_batch_{size}",
                    run_http_batches(
                        url, runtime, kind_clips, kind_model, size, args.batch_uploads, kind
                    ),
                )
        if "worker" not in paths:
            runtime.db.dispose()
            print(json.dumps(report, indent=2))
            return
        bare1 = step("bare_flac", run_bare(flac, flac_model))
        w1 = step("worker_1", run_worker_path(url, runtime, flac_all, 1, args.mqtt, None, wb))
        results["worker_1"]["ratio_to_bare"] = ratio(w1, bare1)
        bare2 = step("bare_flac_2_threads", run_bare(flac, flac_model, threads=2))
        w2 = step("worker_2", run_worker_path(url, runtime, flac_all, 2, args.mqtt, None, wb))
        results["worker_2"]["ratio_to_bare"] = ratio(w2, bare2)
        for n_workers, bare in ((1, bare1), (2, bare2)):
            name = f"worker_{n_workers}_backlog"
            drained = step(
                name,
                run_worker_path(url, runtime, flac_all, n_workers, args.mqtt, None, wb, True),
            )
            results[name]["ratio_to_bare"] = ratio(drained, bare)
        # Half the two workers' capacity, in audio seconds per wall second.
        pace = max(1.0, 0.5 * w2["audio_x_realtime"])
        paced = step(
            "worker_2_paced", run_worker_path(url, runtime, flac_all, 2, args.mqtt, pace, wb)
        )
        paced["offered_x_realtime"] = round(pace, 1)
        runtime.db.dispose()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

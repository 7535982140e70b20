"""Issue 8 §2 through the API: a simulated machine enrolled on eight runs, then a new run.

For every kind and seed: a fresh SQLite database, the app with the service's default settings
(enrollment 120 s and 8 runs, learning 7 days, the default preset), a machine registered
through ``POST /v1/machines``, eight healthy runs of 40 s (four 10 s uploads each, consecutive
inside a run, runs 6 hours apart) through ``POST /v1/machines/{id}/recordings``; then a ninth
healthy run of 60 s (a day later) and one run of each fault (30 s, two days later). It prints
the share of windows the API flags (``is_outlier``) in each, the ratio percentiles and the
baseline version that scored them. Seeds follow ``humwatch evaluate simulated`` (its
enrollment and new-run seeds), at its SNR of 12 dB.

    python scripts/api_new_run.py --kind pump --kind fan --seed 0 --seed 1 --seed 2 \
        --fault bearing@0.3 --json out/api-new-run.json

With ``--fault-clips N`` each fault is instead N clips of 10 s one a minute (as an agent on a
duty cycle sends them), after 20 healthy clips one a minute, and it also reports the events
the service opened: during the healthy lead-in (false events) and during the fault, with what
opened them (``evidence``: ``windows`` or ``sustained``).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import soundfile as sf
from fastapi.testclient import TestClient

from detectors.evaluate_simulated import SimulatedProtocol
from detectors.simulate import Fault, MachineSimulator
from service.app import create_app
from service.config import Settings
from service.migrate import upgrade

RATE = 16000
CHUNK_SECONDS = 10.0
START = datetime(2026, 11, 1, 6, 0, tzinfo=UTC)


def wav(samples: np.ndarray) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, RATE, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def post_run(client, machine, sim, seconds, started):
    """Upload one continuous run in 10 s chunks; returns the windows the API answered."""
    windows = []
    for i in range(int(round(seconds / CHUNK_SECONDS))):
        at = (started + timedelta(seconds=i * CHUNK_SECONDS)).isoformat()
        r = client.post(
            f"/v1/machines/{machine}/recordings",
            params={"started_at": at},
            content=wav(sim.next_chunk(CHUNK_SECONDS)),
            headers={"Content-Type": "audio/wav"},
        )
        r.raise_for_status()
        body = r.json()
        windows.extend({**w, "baseline_version": body["baseline_version"]} for w in body["windows"])
    return windows


def post_clips(client, machine, sim, clips, started, every_s=60.0):
    """``clips`` uploads of 10 s, one every ``every_s``; returns the windows answered."""
    windows = []
    for i in range(clips):
        windows += post_run(
            client, machine, sim, CHUNK_SECONDS, started + timedelta(seconds=i * every_s)
        )
    return windows


def events_between(client, machine, start, end) -> list[dict]:
    """Anomaly events opened or reopened in [start, end): (action, evidence, severity)."""
    out = []
    for e in client.get("/v1/events", params={"machine": machine, "kind": "anomaly"}).json()[
        "items"
    ]:
        detail = client.get(f"/v1/events/{e['id']}").json()
        for t in detail["timeline"]:
            if t["action"] in ("open", "reopen") and start <= datetime.fromisoformat(t["at"]) < end:
                out.append({"action": t["action"], "evidence": t.get("evidence"), "at": t["at"]})
    return out


def summary(windows) -> dict:
    ratios = np.array([w["ratio"] for w in windows if w["ratio"] is not None])
    versions = sorted({w["baseline_version"] for w in windows if w["baseline_version"]})
    return {
        "windows": len(windows),
        "flagged": round(float(np.mean([w["is_outlier"] for w in windows])), 4),
        "ratio_p50": round(float(np.median(ratios)), 3) if len(ratios) else None,
        "ratio_p99": round(float(np.quantile(ratios, 0.99)), 3) if len(ratios) else None,
        "versions": versions,
    }


def run_one(
    kind: str,
    seed: int,
    faults: list[Fault],
    snr_db: float,
    new_runs: int,
    fault_clips: int = 0,
    event_params: dict | None = None,
) -> dict:
    protocol = SimulatedProtocol(seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'humwatch.db'}"
        upgrade(url)
        settings = Settings(database_url=url, warm_up_index=False, event_sweep_interval_seconds=0)
        with TestClient(create_app(settings)) as client:
            machine = f"{kind}-{seed}"
            client.post(
                "/v1/machines", json={"id": machine, "machine_type": kind}
            ).raise_for_status()
            if event_params:
                client.put(
                    f"/v1/machines/{machine}/event-params", json=event_params
                ).raise_for_status()
            for run in range(8):
                sim = MachineSimulator(
                    kind, RATE, snr_db=snr_db, seed=protocol.enrollment_seed(kind, run)
                )
                post_run(client, machine, sim, 40.0, START + timedelta(hours=6 * run))
            state = client.get(f"/v1/machines/{machine}").json()
            if state["state"] != "monitoring":
                raise SystemExit(f"{machine} did not finish enrollment: {state['state']}")
            baselines = client.get(f"/v1/machines/{machine}/baselines").json()
            first = next(b for b in baselines if b["version"] == 1)
            result = {
                "kind": kind,
                "seed": seed,
                "threshold_method": first.get("threshold_method"),
                "new_runs": [],
            }
            for r in range(new_runs):
                sim = MachineSimulator(
                    kind, RATE, snr_db=snr_db, seed=protocol.new_run_seed(kind, r)
                )
                windows = post_run(client, machine, sim, 60.0, START + timedelta(days=3 + r))
                result["new_runs"].append(summary(windows))
            result["new_run"] = result["new_runs"][0]
            for n, fault in enumerate(faults):
                sim = MachineSimulator(
                    kind, RATE, snr_db=snr_db, seed=protocol.new_run_seed(kind, 0), fault=fault
                )
                at = START + timedelta(days=3 + new_runs + n)
                if not fault_clips:
                    windows = post_run(client, machine, sim, 30.0, at)
                    result[f"{fault.type}@{fault.severity:g}"] = summary(windows)
                    continue
                healthy = MachineSimulator(
                    kind, RATE, snr_db=snr_db, seed=protocol.new_run_seed(kind, 0)
                )
                lead = post_clips(client, machine, healthy, 20, at)
                onset = at + timedelta(minutes=20)
                windows = post_clips(client, machine, sim, fault_clips, onset)
                end = onset + timedelta(minutes=fault_clips)
                result[f"{fault.type}@{fault.severity:g}"] = {
                    **summary(windows),
                    "lead_in_flagged": summary(lead)["flagged"],
                    "false_events": events_between(client, machine, at, onset),
                    "fault_events": events_between(client, machine, onset, end),
                }
            return result


def parse_fault(text: str) -> Fault:
    name, _, severity = text.partition("@")
    return Fault(name, float(severity or 0.3))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--kind", action="append", help="simulated kind (repeat); default pump, fan"
    )
    parser.add_argument("--seed", action="append", type=int, help="seed (repeat); default 0")
    parser.add_argument(
        "--fault", action="append", help="TYPE@SEVERITY (repeat); default bearing@0.3"
    )
    parser.add_argument("--new-runs", type=int, default=1, help="healthy runs after enrollment")
    parser.add_argument("--snr-db", type=float, default=SimulatedProtocol.snr_db)
    parser.add_argument(
        "--fault-clips",
        type=int,
        default=0,
        help="each fault as this many 10 s clips one a minute, after 20 healthy ones, "
        "reporting the events opened (0: one 30 s run, windows only)",
    )
    parser.add_argument(
        "--event-params",
        type=json.loads,
        help="event parameter overrides, e.g. '{\"slow_fraction\": 0}'",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    faults = [parse_fault(f) for f in (args.fault or ["bearing@0.3"])]
    results = []
    for kind in args.kind or ["pump", "fan"]:
        for seed in args.seed or [0]:
            result = run_one(
                kind,
                seed,
                faults,
                args.snr_db,
                args.new_runs,
                args.fault_clips,
                args.event_params,
            )
            results.append(result)
            later = [r["flagged"] for r in result["new_runs"][1:]]
            cells = [
                f"new run {result['new_run']['flagged']:.3f} (p50 {result['new_run']['ratio_p50']})"
            ]
            if later:
                cells.append(f"later runs {np.mean(later):.3f}")
            for f in faults:
                fig = result[f"{f.type}@{f.severity:g}"]
                cell = f"{f.type}@{f.severity:g} {fig['flagged']:.3f}"
                if "fault_events" in fig:
                    opened = [e["evidence"] for e in fig["fault_events"]] or ["none"]
                    cell += f" (event: {'/'.join(opened)}; false: {len(fig['false_events'])})"
                cells.append(cell)
            print(f"{kind} seed {seed}: " + ", ".join(cells), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The demo plant: simulated machines (and real recordings when present) streamed to the API.

``DemoFeed`` registers the machines, enrolls them with backdated audio, then sends one chunk
per machine per step with consecutive ``started_at`` times, and after ``fault_after_seconds``
of monitoring injects a fault into one machine. It talks HTTP through any ``httpx.Client``
(a real server, or FastAPI's TestClient in tests), and runs in real time or as fast as the
service answers (simulated time).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import httpx
import numpy as np

from detectors.audio import encode_wav, load_mono
from detectors.simulate import Fault, MachineSimulator, MachineSpec

SAMPLE_RATE = 16000
REPLAY_DIR = (
    Path(__file__).resolve().parents[3] / "shared/data/machine-audio/mimii/fan/id_00/unsplit"
)


class AudioSource(Protocol):
    def next_chunk(self, seconds: float) -> np.ndarray:
        """The next ``(n_samples,)`` float32 mono audio at 16 kHz."""
        ...

    def inject_fault(self) -> str:
        """Turn faulty from the next chunk on; returns what was injected."""
        ...

    def new_run(self, run: int) -> None:
        """Start run number ``run`` of the machine (another start: speed, levels, background)."""
        ...


class SimulatedSource:
    """A ``MachineSimulator`` that develops ``fault`` when asked; each run another seed."""

    def __init__(self, spec: MachineSpec, fault: Fault, seed: int, snr_db: float = 12.0):
        self.spec, self.seed, self.snr_db = spec, seed, snr_db
        self.simulator = MachineSimulator(spec, SAMPLE_RATE, snr_db=snr_db, seed=seed)
        self.fault = fault

    def new_run(self, run: int) -> None:
        self.simulator = MachineSimulator(
            self.spec, SAMPLE_RATE, snr_db=self.snr_db, seed=self.seed + 1000 * (run + 1)
        )

    def next_chunk(self, seconds: float) -> np.ndarray:
        return self.simulator.next_chunk(seconds)

    def inject_fault(self) -> str:
        self.simulator.fault = self.fault
        return f"{self.fault.type} fault (severity {self.fault.severity:g})"


class ReplaySource:
    """Loops over real recordings: normal clips, then abnormal ones once faulty."""

    def __init__(self, normal: list[Path], abnormal: list[Path]):
        if not normal:
            raise ValueError("a replay machine needs at least one normal recording")
        self._clips = {"normal": normal, "abnormal": abnormal or normal}
        self._mode = "normal"
        self._index = 0
        self._buffer = np.zeros(0, np.float32)

    @classmethod
    def from_folder(cls, folder: Path) -> ReplaySource | None:
        """``folder/normal/*.wav`` and ``folder/abnormal/*.wav`` (MIMII layout), if present."""
        normal = sorted((folder / "normal").glob("*.wav"))
        if not normal:
            normal = sorted(folder.glob("*.wav"))
        return cls(normal, sorted((folder / "abnormal").glob("*.wav"))) if normal else None

    def next_chunk(self, seconds: float) -> np.ndarray:
        needed = int(round(seconds * SAMPLE_RATE))
        while self._buffer.size < needed:
            clips = self._clips[self._mode]
            waveform, _ = load_mono(clips[self._index % len(clips)], SAMPLE_RATE, "mix")
            self._index += 1
            self._buffer = np.concatenate([self._buffer, waveform])
        chunk, self._buffer = self._buffer[:needed], self._buffer[needed:]
        return chunk

    def inject_fault(self) -> str:
        self._mode, self._index, self._buffer = "abnormal", 0, np.zeros(0, np.float32)
        return "switched to recordings of the abnormal machine"

    def new_run(self, run: int) -> None:
        self._buffer = np.zeros(0, np.float32)  # each clip is a recording of its own


@dataclass
class DemoMachine:
    """A machine of the demo plant and where its audio comes from."""

    id: str
    name: str
    machine_type: str
    area: str
    source: AudioSource
    site: str = "demo-plant"
    labels: dict[str, str] = field(default_factory=dict)

    def registration(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "site": self.site,
            "area": self.area,
            "machine_type": self.machine_type,
            "labels": {"demo": "true", **self.labels},
        }


def demo_plant(replay_dir: Path | None = REPLAY_DIR, seed: int = 0) -> list[DemoMachine]:
    """Four simulated machines of different types and speeds, plus a replay of real fan
    recordings when ``replay_dir`` holds some. The pump is the one that will develop a fault."""
    machines = [
        DemoMachine(
            "pump-01",
            "Cooling water pump 1",
            "pump",
            "utilities",
            SimulatedSource(MachineSpec.preset("pump", rpm=2950), Fault("bearing", 0.8), seed + 1),
        ),
        DemoMachine(
            "fan-01",
            "Exhaust fan 1",
            "fan",
            "paint shop",
            SimulatedSource(MachineSpec.preset("fan", rpm=1480), Fault("imbalance", 0.8), seed + 2),
        ),
        DemoMachine(
            "compressor-01",
            "Air compressor 1",
            "compressor",
            "utilities",
            SimulatedSource(
                MachineSpec.preset("compressor", rpm=1780), Fault("valve_click", 0.8), seed + 3
            ),
        ),
        DemoMachine(
            "conveyor-01",
            "Assembly conveyor 1",
            "conveyor",
            "assembly",
            SimulatedSource(
                MachineSpec.preset("conveyor", rpm=960), Fault("belt_squeal", 0.8), seed + 4
            ),
        ),
    ]
    replay = ReplaySource.from_folder(replay_dir) if replay_dir and replay_dir.is_dir() else None
    if replay is not None:
        machines.append(
            DemoMachine(
                "fan-mimii",
                "Fan (real MIMII recordings)",
                "fan",
                "lab",
                replay,
                labels={"source": "mimii-fan-id00"},
            )
        )
    return machines


class FeedError(RuntimeError):
    """The API refused the demo's request."""


class DemoFeed:
    """Registers, enrolls and streams the demo machines through the HTTP API.

    Parameters
    ----------
    http : httpx.Client with ``base_url`` set (and an ``Authorization`` header if needed)
    machines : the plant
    chunk_seconds : audio per request
    faulty_machine : id of the machine that develops a fault
    fault_after_seconds : seconds of monitoring before the fault
    start : time of the first live sample (default: now)
    """

    def __init__(
        self,
        http: httpx.Client,
        machines: list[DemoMachine],
        chunk_seconds: float = 10.0,
        faulty_machine: str = "pump-01",
        fault_after_seconds: float = 180.0,
        start: datetime | None = None,
        log: Callable[[str], None] = print,
    ):
        self.http = http
        self.machines = machines
        self.chunk_seconds = chunk_seconds
        self.faulty_machine = faulty_machine
        self.fault_after_seconds = fault_after_seconds
        self.start = (start or datetime.now(UTC)).astimezone(UTC)
        self.log = log
        self.steps = 0
        self.fault_injected = False

    def _check(self, response: httpx.Response, what: str) -> dict[str, Any]:
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail") or response.json()
            except ValueError:
                detail = response.text
            raise FeedError(f"{what}: HTTP {response.status_code}: {detail}")
        return response.json()

    def _send(self, machine: DemoMachine, started_at: datetime) -> dict[str, Any]:
        audio = encode_wav(machine.source.next_chunk(self.chunk_seconds), SAMPLE_RATE)
        response = self.http.post(
            f"/v1/machines/{machine.id}/recordings",
            content=audio,
            headers={"Content-Type": "audio/wav"},
            params={"started_at": started_at.isoformat()},
        )
        return self._check(response, f"sending audio of {machine.id}")

    def register(self) -> None:
        """Create the machines that do not exist yet (a rerun keeps the existing ones)."""
        for machine in self.machines:
            response = self.http.post("/v1/machines", json=machine.registration())
            if response.status_code == 409:
                continue
            self._check(response, f"registering {machine.id}")
            self.log(f"registered {machine.id} ({machine.name})")

    def resource(self, machine: DemoMachine) -> dict:
        return self._check(self.http.get(f"/v1/machines/{machine.id}"), machine.id)

    def state(self, machine: DemoMachine) -> str:
        return self.resource(machine)["state"]

    def enroll(self, chunks_per_run: int = 4, max_runs: int = 30) -> None:
        """Send backdated normal audio until every machine monitors (builds baseline v1):
        runs of ``chunks_per_run`` chunks, an hour apart, each another start of the machine;
        the live stream that follows is one more new run."""
        for machine in self.machines:
            if self.state(machine) != "enrolling":
                continue
            for run in range(max_runs):
                machine.source.new_run(run)
                run_start = self.start - timedelta(hours=max_runs - run)
                for i in range(chunks_per_run):
                    self._send(machine, run_start + timedelta(seconds=self.chunk_seconds * i))
                resource = self.resource(machine)
                if resource["state"] == "monitoring":
                    sent = (run + 1) * chunks_per_run * self.chunk_seconds
                    covered = resource["coverage"]
                    self.log(
                        f"{machine.id}: baseline v{resource['active_baseline_version']} from "
                        f"{covered['runs']} runs, {covered['seconds']:g} s of audio "
                        f"(of {sent:g} s sent: the rest was scored against it)"
                    )
                    break
            else:
                raise FeedError(f"{machine.id} still enrolling after {max_runs} runs")
            machine.source.new_run(max_runs)

    def step(self) -> dict[str, list[dict[str, Any]]]:
        """One chunk per machine; returns the scored windows per machine id."""
        elapsed = self.steps * self.chunk_seconds
        if not self.fault_injected and elapsed >= self.fault_after_seconds:
            for machine in self.machines:
                if machine.id == self.faulty_machine:
                    self.log(f"{machine.id}: injecting a {machine.source.inject_fault()}")
            self.fault_injected = True
        started = self.start + timedelta(seconds=elapsed)
        out = {m.id: self._send(m, started)["windows"] for m in self.machines}
        self.steps += 1
        return out

    def run(
        self,
        realtime: bool = True,
        max_steps: int | None = None,
        on_step: Callable[[dict[str, list[dict[str, Any]]]], None] | None = None,
    ) -> None:
        """Stream until ``max_steps`` (forever when None); in real time each chunk is sent once
        its last sample would have been recorded."""
        while max_steps is None or self.steps < max_steps:
            if realtime:
                due = self.start + timedelta(seconds=(self.steps + 1) * self.chunk_seconds)
                delay = (due - datetime.now(UTC)).total_seconds()
                if delay > 0:
                    time.sleep(delay)
            result = self.step()
            if on_step:
                on_step(result)


class EventWatcher:
    """Follows the plant's events through ``GET /v1/events`` and says what changed: which
    machine opened what, when, its severity, escalations, resolutions and closes."""

    def __init__(self, http: httpx.Client, site: str = "demo-plant"):
        self.http = http
        self.site = site
        self.seen: dict[int, tuple[str, str]] = {}

    def poll(self) -> list[str]:
        """Lines for the events that are new or changed since the last poll, oldest first."""
        resp = self.http.get("/v1/events", params={"site": self.site, "limit": 100})
        if resp.status_code >= 400:
            raise FeedError(f"listing events: HTTP {resp.status_code}: {resp.text[:200]}")
        lines = []
        for event in reversed(resp.json()["items"]):
            now = (event["state"], event["severity"])
            before = self.seen.get(event["id"])
            self.seen[event["id"]] = now
            if before == now:
                continue
            lines.append(describe_event(event, before))
        return lines


def _clock(iso: str | None) -> str:
    return datetime.fromisoformat(iso).astimezone(UTC).strftime("%H:%M:%S") if iso else "?"


def describe_event(event: dict[str, Any], before: tuple[str, str] | None = None) -> str:
    """One line about an event's latest change (``before``: its previous state, severity)."""
    what = "sensor fault" if event["kind"] == "sensor" else "anomaly"
    if event["cause"]:
        what += f" ({event['cause']})"
    head = f"{event['machine_id']}: {what} event #{event['id']}"
    peak = f", peak ratio {event['peak_ratio']:.2f}" if event["peak_ratio"] is not None else ""
    if before is None and event["state"] == "open":
        return f"{_clock(event['opened_at'])} {head} opened as {event['severity'].upper()}{peak}"
    if event["state"] == "open" and before is not None and before[0] != "open":
        return f"{head} reopened ({event['severity']}){peak}"
    if event["state"] == "open" and before is not None and before[1] != event["severity"]:
        return (
            f"{_clock(event['escalated_at'])} {head} escalated to {event['severity'].upper()}{peak}"
        )
    if event["state"] == "resolved":
        return f"{_clock(event['resolved_at'])} {head} resolved by itself{peak}"
    if event["state"] == "closed":
        closed = event["close"] or {}
        return f"{head} closed as {closed.get('disposition')} by {closed.get('by')}"
    return f"{_clock(event['opened_at'])} {head} {event['state']} ({event['severity']}){peak}"


def summarize(windows: dict[str, list[dict[str, Any]]], flags: bool = True) -> str:
    """One line: each machine's highest window ratio in the step (``flags``: outliers marked)."""
    parts = []
    for machine_id, rows in windows.items():
        ratios = [w["ratio"] for w in rows if w.get("ratio") is not None]
        if not ratios:
            parts.append(f"{machine_id} -")
            continue
        flag = " !" if flags and any(w["is_outlier"] for w in rows) else ""
        parts.append(f"{machine_id} {max(ratios):.2f}{flag}")
    return "  ".join(parts)

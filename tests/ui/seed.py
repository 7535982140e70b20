"""A small seeded plant for the page tests: simulated machines (detectors/simulate.py)
enrolled and then streaming near the present, two of them with faults of known frequency."""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import numpy as np
import soundfile as sf

from detectors.simulate import Fault, simulate

RATE = 16000
FAST_MACHINE = {"window_seconds": 1.0, "hop_seconds": 0.5}
ENROLL_CLIPS = 8
CLIP_SECONDS = 6.0
# Each enrollment clip is its own run (RUN_SPACING apart, beyond the run gap), as the
# service asks; no learning period (but for fan-02), so the others keep baseline v1.
RUN_SPACING = timedelta(minutes=6)
SETTINGS = {
    "min_enrollment_seconds": ENROLL_CLIPS * CLIP_SECONDS - 1,
    "min_enrollment_runs": ENROLL_CLIPS,
    "run_gap_seconds": 300.0,
    "learning_days": 0.0,
    "warm_up_index": False,
    "prune_interval_seconds": 0,
}


@dataclass(frozen=True)
class SeedMachine:
    id: str
    name: str
    site: str
    area: str
    kind: str
    fault: str | None = None
    enroll: bool = True
    last_audio_minutes: float = 1.0
    learning_days: float | None = None  # None: the service's (none here)


PLANT = (
    SeedMachine("pump-01", "Feed pump 1", "north", "boiler house", "pump", fault="bearing"),
    SeedMachine("fan-01", "Exhaust fan 1", "north", "boiler house", "fan"),
    SeedMachine("conv-01", "Conveyor 1", "north", "line 2", "conveyor", fault="belt_squeal"),
    SeedMachine(
        "comp-01", "Compressor 1", "south", "compressors", "compressor", last_audio_minutes=120.0
    ),
    SeedMachine("gear-01", "Gearbox 1", "south", "line 5", "gearbox", enroll=False),
    # Scored on baseline v1 while its learning period widens the baseline.
    SeedMachine("fan-02", "Exhaust fan 2", "north", "boiler house", "fan", learning_days=7.0),
)

# The seed of each machine's last (faulty for pump-01 and conv-01) clip.
FAULT_SEED = {m.id: 10 * i + 8 for i, m in enumerate(PLANT)}


def wav(samples: np.ndarray) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, RATE, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def seed(base_url: str, headers: dict[str, str] | None = None) -> dict[str, list[int]]:
    """Register and feed the plant; returns each machine's outlier window ids."""
    now = datetime.now(UTC).replace(microsecond=0)
    outliers: dict[str, list[int]] = {}
    with httpx.Client(base_url=base_url, headers=headers or {}, timeout=60) as client:
        for i, m in enumerate(PLANT):
            body = {
                "id": m.id,
                "name": m.name,
                "site": m.site,
                "area": m.area,
                "machine_type": m.kind,
                **FAST_MACHINE,
                **({} if m.learning_days is None else {"learning_days": m.learning_days}),
            }
            client.post("/v1/machines", json=body).raise_for_status()
            clips = ENROLL_CLIPS if m.enroll else 2
            start = now - timedelta(minutes=m.last_audio_minutes + 90)
            for c in range(clips):
                audio = simulate(m.kind, CLIP_SECONDS, RATE, seed=10 * i + c)
                at = start + c * RUN_SPACING
                client.post(
                    f"/v1/machines/{m.id}/recordings",
                    params={"started_at": at.isoformat()},
                    content=wav(audio),
                    headers={"Content-Type": "audio/wav"},
                ).raise_for_status()
            if not m.enroll:
                continue
            # Normal audio 20 minutes before the last clip, then the last clip (faulty or not).
            at = now - timedelta(minutes=m.last_audio_minutes + 20)
            normal = simulate(m.kind, CLIP_SECONDS, RATE, seed=10 * i + 7)
            client.post(
                f"/v1/machines/{m.id}/recordings",
                params={"started_at": at.isoformat()},
                content=wav(normal),
                headers={"Content-Type": "audio/wav"},
            ).raise_for_status()
            fault = Fault(m.fault, 1.0) if m.fault else None
            last = simulate(m.kind, CLIP_SECONDS, RATE, seed=FAULT_SEED[m.id], fault=fault)
            at = now - timedelta(minutes=m.last_audio_minutes, seconds=CLIP_SECONDS)
            r = client.post(
                f"/v1/machines/{m.id}/recordings",
                params={"started_at": at.isoformat()},
                content=wav(last),
                headers={"Content-Type": "audio/wav"},
            )
            r.raise_for_status()
            outliers[m.id] = [w["id"] for w in r.json()["windows"] if w["is_outlier"]]
    return outliers

"""The new-run protocol on simulated machines: what a healthy machine's next run will see.

For every machine kind of the simulator, a baseline is enrolled as the service enrolls:
``enrollment_runs`` runs of ``run_seconds`` each (every run another seed: another speed,
component levels, background mix and events, ``detectors.simulate``), fitted with the
preset's baseline and calibrated by holding out whole runs. Then:

- ``far``: the share of windows above the threshold over ``new_runs`` new healthy runs (other
  seeds, never seen), the false-alarm rate a plant would live with;
- ``det[fault][severity]``: the share of windows above the threshold on a new run with that
  fault at that severity, for every fault type.

With ``learning_runs`` the machine then learns as the service's learning period does: that
many further healthy runs are offered one by one, each admitted when at most
``LEARNING_MAX_OUTLIER_FRACTION`` of its windows are above the threshold of both the
current and the enrollment baseline, which is then refitted on all admitted material; the
figures are measured after learning (``admitted`` says how many runs joined).

Audio is embedded as the service embeds it (windows of the preset, the preset's embedder).
Seeds are fixed by ``seed`` and reported, so every figure can be reproduced.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from detectors.embedders import build_embedder, embed_windows
from detectors.presets import Preset
from detectors.simulate import FAULT_TYPES, MACHINE_KINDS, Fault, MachineSimulator
from detectors.windows import frame

SAMPLE_RATE = 16000
LEARNING_MAX_OUTLIER_FRACTION = 0.05  # as service/services/learning.py


def _kind_index(kind: str) -> int:
    return MACHINE_KINDS.index(kind) if kind in MACHINE_KINDS else len(MACHINE_KINDS)


@dataclass(frozen=True)
class SimulatedProtocol:
    """Sizes and seeds of the simulated evaluation (defaults: the published table)."""

    kinds: tuple[str, ...] = MACHINE_KINDS
    enrollment_runs: int = 8
    run_seconds: float = 40.0
    new_runs: int = 20
    new_run_seconds: float = 60.0
    faults: tuple[str, ...] = FAULT_TYPES
    severities: tuple[float, ...] = (0.1, 0.3, 0.6)
    fault_seconds: float = 30.0
    snr_db: float = 12.0
    seed: int = 0
    learning_runs: int = 0

    # Seeds differ per kind: the simulator's background depends on the seed alone, so shared
    # seeds would give every kind the same backgrounds and make the kinds one sample.
    def enrollment_seed(self, kind: str, run: int) -> int:
        return self.seed * 1_000_000 + _kind_index(kind) * 100_000 + run

    def new_run_seed(self, kind: str, run: int) -> int:
        return self.seed * 1_000_000 + _kind_index(kind) * 100_000 + 50_000 + run

    def learning_seed(self, kind: str, run: int) -> int:
        return self.seed * 1_000_000 + _kind_index(kind) * 100_000 + 20_000 + run


@dataclass
class KindResult:
    kind: str
    threshold: float
    threshold_rule: str
    far_per_run: list[float]
    det: dict[str, dict[str, float]] = field(default_factory=dict)
    admitted: int = 0

    @property
    def far(self) -> float:
        return float(np.mean(self.far_per_run))

    def det_at(self, severity: float) -> float:
        return float(np.mean([d[f"{severity:g}"] for d in self.det.values()]))


@dataclass
class SimulatedResult:
    preset: Preset
    protocol: SimulatedProtocol
    false_alarm_rate: float
    kinds: list[KindResult]

    @property
    def far(self) -> float:
        return float(np.mean([k.far for k in self.kinds]))

    def det_at(self, severity: float) -> float:
        return float(np.mean([k.det_at(severity) for k in self.kinds]))

    def to_dict(self) -> dict[str, Any]:
        return {
            "preset": self.preset.name,
            "protocol": asdict(self.protocol),
            "target_far": self.false_alarm_rate,
            "far": round(self.far, 4),
            "det": {f"{s:g}": round(self.det_at(s), 4) for s in self.protocol.severities},
            "kinds": [
                {
                    "kind": k.kind,
                    "threshold": k.threshold,
                    "threshold_rule": k.threshold_rule,
                    "far": round(k.far, 4),
                    "far_per_run": [round(v, 4) for v in k.far_per_run],
                    "det": k.det,
                    "learning_admitted": k.admitted,
                }
                for k in self.kinds
            ],
        }


def evaluate_simulated(
    preset: Preset,
    protocol: SimulatedProtocol | None = None,
    on_kind: Callable[[str], None] | None = None,
) -> SimulatedResult:
    """Run the new-run protocol for ``preset`` (see the module docstring)."""
    protocol = protocol or SimulatedProtocol()
    embedder = build_embedder(preset.embedder)

    def embed(audio: np.ndarray) -> np.ndarray:
        windows = frame(audio, SAMPLE_RATE, preset.window_seconds, preset.hop_seconds)
        return embed_windows(embedder, audio, windows)

    def run_audio(kind: str, seed: int, seconds: float, fault: Fault | None = None):
        sim = MachineSimulator(kind, SAMPLE_RATE, snr_db=protocol.snr_db, seed=seed, fault=fault)
        return sim.next_chunk(seconds)

    results = []
    for kind in protocol.kinds:
        enrolled = [
            embed(run_audio(kind, protocol.enrollment_seed(kind, r), protocol.run_seconds))
            for r in range(protocol.enrollment_runs)
        ]
        groups = np.concatenate([np.full(len(v), i) for i, v in enumerate(enrolled)])
        model = preset.baseline().fit(np.concatenate(enrolled), groups)
        first, admitted = model, 0
        for r in range(protocol.learning_runs):
            run = embed(run_audio(kind, protocol.learning_seed(kind, r), protocol.run_seconds))
            limit = LEARNING_MAX_OUTLIER_FRACTION
            if np.mean(model.predict(run)) <= limit and np.mean(first.predict(run)) <= limit:
                enrolled.append(run)
                admitted += 1
                groups = np.concatenate([np.full(len(v), i) for i, v in enumerate(enrolled)])
                model = preset.baseline().fit(np.concatenate(enrolled), groups)
        far_per_run = [
            float(
                np.mean(
                    model.predict(
                        embed(
                            run_audio(
                                kind, protocol.new_run_seed(kind, r), protocol.new_run_seconds
                            )
                        )
                    )
                )
            )
            for r in range(protocol.new_runs)
        ]
        det = {}
        for fault_type in protocol.faults:
            det[fault_type] = {}
            for severity in protocol.severities:
                audio = run_audio(
                    kind,
                    protocol.new_run_seed(kind, 0),
                    protocol.fault_seconds,
                    Fault(fault_type, severity),
                )
                det[fault_type][f"{severity:g}"] = round(
                    float(np.mean(model.predict(embed(audio)))), 4
                )
        results.append(
            KindResult(
                kind,
                float(model.threshold_),
                str(model.threshold_method_.get("rule")),
                far_per_run,
                det,
                admitted,
            )
        )
        if on_kind:
            on_kind(kind)
    return SimulatedResult(preset, protocol, preset.baseline().false_alarm_rate, results)


def simulated_table(results: list[SimulatedResult]) -> str:
    """Markdown: per preset and kind, new-run false alarms and detection by severity."""
    severities = results[0].protocol.severities
    head = "| preset | kind | target FAR | new-run FAR | " + " | ".join(
        f"det @{s:g}" for s in severities
    )
    lines = [
        head + " | rule | learned runs |",
        "|---|---|---:|---:|" + "---:|" * len(severities) + "---|---:|",
    ]
    for r in results:
        for k in r.kinds:
            dets = " | ".join(f"{k.det_at(s):.3f}" for s in severities)
            lines.append(
                f"| {r.preset.name} | {k.kind} | {r.false_alarm_rate:.3f} | {k.far:.4f} "
                f"| {dets} | {k.threshold_rule} | {k.admitted} |"
            )
        dets = " | ".join(f"**{r.det_at(s):.3f}**" for s in severities)
        lines.append(
            f"| **{r.preset.name}** | **all** | {r.false_alarm_rate:.3f} | **{r.far:.4f}** "
            f"| {dets} | | |"
        )
    return "\n".join(lines)


def seeds_table(by_seed: list[list[SimulatedResult]]) -> str:
    """Markdown: per preset, the all-kinds figures of every seed and their mean over seeds.

    ``by_seed[i][j]`` is preset ``j`` evaluated with the ``i``-th seed. One seed is one draw
    of every kind's enrollment runs, so its false-alarm rate is one sample of a threshold fitted
    on few runs; the mean over seeds is the figure to hold against the target.
    """
    severities = by_seed[0][0].protocol.severities
    lines = [
        "| preset | seed | target FAR | new-run FAR | "
        + " | ".join(f"det @{s:g}" for s in severities)
        + " |",
        "|---|---|---:|---:|" + "---:|" * len(severities),
    ]
    for j, first in enumerate(by_seed[0]):
        rows = [results[j] for results in by_seed]
        for r in rows:
            dets = " | ".join(f"{r.det_at(s):.3f}" for s in severities)
            lines.append(
                f"| {r.preset.name} | {r.protocol.seed} | {r.false_alarm_rate:.3f} "
                f"| {r.far:.4f} | {dets} |"
            )
        far = float(np.mean([r.far for r in rows]))
        dets = " | ".join(
            f"**{float(np.mean([r.det_at(s) for r in rows])):.3f}**" for s in severities
        )
        lines.append(
            f"| **{first.preset.name}** | **mean of {len(rows)}** | {first.false_alarm_rate:.3f} "
            f"| **{far:.4f}** | {dets} |"
        )
    return "\n".join(lines)


def fault_table(result: SimulatedResult, severity: float = 0.3) -> str:
    """Markdown: detection per fault type and kind at one severity."""
    faults = result.protocol.faults
    lines = [
        f"| kind | {' | '.join(faults)} |",
        "|---|" + "---:|" * len(faults),
    ]
    for k in result.kinds:
        lines.append(
            f"| {k.kind} | " + " | ".join(f"{k.det[f][f'{severity:g}']:.2f}" for f in faults) + " |"
        )
    return "\n".join(lines)

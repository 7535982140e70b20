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
many further healthy runs are offered one by one, each admitted by ``learning_rule``
(``detectors.learning``; by default the service's: at most 5 % of its windows above the
threshold of both the current and the enrollment baseline), which is then refitted on all
admitted material; the figures are measured after learning (``admitted`` says how many
healthy runs joined).

With ``learning_faults`` learning is also offered a **developing fault**: one run of every
fault type in it at every severity of ``learning_fault_severities`` (mildest first), spread
evenly between the healthy learning runs, each a run of the machine with that fault
(``fault_admitted`` says how many of them joined; ``learning_log`` lists every offered run
with its ratio statistics against the current and the enrollment baseline).

Audio is embedded as the service embeds it (windows of the preset, the preset's embedder).
Seeds are fixed by ``seed`` and reported, so every figure can be reproduced.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from detectors.embedders import build_embedder, embed_windows
from detectors.learning import DEFAULT_RULE, AdmissionRule, refusal
from detectors.presets import Preset
from detectors.simulate import FAULT_TYPES, MACHINE_KINDS, Fault, MachineSimulator
from detectors.windows import frame

SAMPLE_RATE = 16000


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
    learning_rule: str = str(DEFAULT_RULE)
    learning_faults: tuple[str, ...] = ()
    learning_fault_severities: tuple[float, ...] = (0.1, 0.3)

    # Seeds differ per kind: the simulator's background depends on the seed alone, so shared
    # seeds would give every kind the same backgrounds and make the kinds one sample.
    def enrollment_seed(self, kind: str, run: int) -> int:
        return self.seed * 1_000_000 + _kind_index(kind) * 100_000 + run

    def new_run_seed(self, kind: str, run: int) -> int:
        return self.seed * 1_000_000 + _kind_index(kind) * 100_000 + 50_000 + run

    def learning_seed(self, kind: str, run: int) -> int:
        return self.seed * 1_000_000 + _kind_index(kind) * 100_000 + 20_000 + run

    def learning_fault_seed(self, kind: str, run: int) -> int:
        return self.seed * 1_000_000 + _kind_index(kind) * 100_000 + 30_000 + run

    def learning_sequence(self) -> list[Fault | None]:
        """The runs offered to learning in order: None for a healthy run, else its fault.

        Fault runs go mildest first (a fault develops) and are spread evenly between the
        healthy runs: the ``i``-th of ``F`` follows healthy run ``round((i + 1) L / (F + 1))``.
        """
        faults = [
            Fault(f, s)
            for s in sorted(self.learning_fault_severities)
            for f in self.learning_faults
        ]
        after = [
            round((i + 1) * self.learning_runs / (len(faults) + 1)) for i in range(len(faults))
        ]
        sequence: list[Fault | None] = []
        for healthy in range(self.learning_runs + 1):
            sequence.extend(f for f, a in zip(faults, after, strict=True) if a == healthy)
            if healthy < self.learning_runs:
                sequence.append(None)
        return sequence


@dataclass
class KindResult:
    kind: str
    threshold: float
    threshold_rule: str
    far_per_run: list[float]
    det: dict[str, dict[str, float]] = field(default_factory=dict)
    admitted: int = 0
    learning_log: list[dict[str, Any]] = field(default_factory=list)

    @property
    def fault_admitted(self) -> dict[str, int]:
        """Per severity, how many of the offered fault runs learning admitted."""
        out: dict[str, int] = {}
        for entry in self.learning_log:
            if entry["fault"] is not None:
                key = f"{entry['severity']:g}"
                out[key] = out.get(key, 0) + int(entry["admitted"])
        return out

    @property
    def fault_offered(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for entry in self.learning_log:
            if entry["fault"] is not None:
                key = f"{entry['severity']:g}"
                out[key] = out.get(key, 0) + 1
        return out

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
                    "learning_fault_runs": k.fault_offered,
                    "fault_admitted": k.fault_admitted,
                    "learning_log": k.learning_log,
                }
                for k in self.kinds
            ],
        }


def _ratio_stats(ratios: np.ndarray) -> dict[str, float]:
    return {
        "share": round(float(np.mean(ratios > 1.0)), 4),
        "median": round(float(np.median(ratios)), 4),
        "p90": round(float(np.quantile(ratios, 0.9)), 4),
    }


def evaluate_simulated(
    preset: Preset,
    protocol: SimulatedProtocol | None = None,
    on_kind: Callable[[str], None] | None = None,
    cache: dict[tuple, np.ndarray] | None = None,
) -> SimulatedResult:
    """Run the new-run protocol for ``preset`` (see the module docstring).

    ``cache`` (optional, a dict owned by the caller) keeps the embeddings of every run, so
    several evaluations of one preset and seed (other learning rules) embed each run once.
    """
    protocol = protocol or SimulatedProtocol()
    rule = AdmissionRule.parse(protocol.learning_rule)
    embedder = build_embedder(preset.embedder)

    def embed(audio: np.ndarray) -> np.ndarray:
        windows = frame(audio, SAMPLE_RATE, preset.window_seconds, preset.hop_seconds)
        return embed_windows(embedder, audio, windows)

    def simulate(kind: str, seed: int, seconds: float, fault: Fault | None = None):
        sim = MachineSimulator(kind, SAMPLE_RATE, snr_db=protocol.snr_db, seed=seed, fault=fault)
        return sim.next_chunk(seconds)

    def run_vectors(kind: str, seed: int, seconds: float, fault: Fault | None = None):
        if cache is None:
            return embed(simulate(kind, seed, seconds, fault))
        key = (preset.name, repr(preset.embedder), kind, seed, seconds, fault, protocol.snr_db)
        if key not in cache:
            cache[key] = embed(simulate(kind, seed, seconds, fault))
        return cache[key]

    results = []
    for kind in protocol.kinds:
        enrolled = [
            run_vectors(kind, protocol.enrollment_seed(kind, r), protocol.run_seconds)
            for r in range(protocol.enrollment_runs)
        ]
        groups = np.concatenate([np.full(len(v), i) for i, v in enumerate(enrolled)])
        model = preset.baseline().fit(np.concatenate(enrolled), groups)
        first, admitted, log = model, 0, []
        healthy = faulty = 0
        for fault in protocol.learning_sequence():
            if fault is None:
                seed = protocol.learning_seed(kind, healthy)
                healthy += 1
            else:
                seed = protocol.learning_fault_seed(kind, faulty)
                faulty += 1
            run = run_vectors(kind, seed, protocol.run_seconds, fault)
            active = model.decision_function(run) / model.threshold_
            v1 = first.decision_function(run) / first.threshold_
            why_not = refusal(active, v1, rule)
            log.append(
                {
                    "fault": None if fault is None else fault.type,
                    "severity": 0.0 if fault is None else fault.severity,
                    "seed": seed,
                    "admitted": why_not is None,
                    "active": _ratio_stats(active),
                    "v1": _ratio_stats(v1),
                }
            )
            if why_not is None:
                enrolled.append(run)
                admitted += fault is None
                groups = np.concatenate([np.full(len(v), i) for i, v in enumerate(enrolled)])
                model = preset.baseline().fit(np.concatenate(enrolled), groups)
        far_per_run = [
            float(
                np.mean(
                    model.predict(
                        run_vectors(kind, protocol.new_run_seed(kind, r), protocol.new_run_seconds)
                    )
                )
            )
            for r in range(protocol.new_runs)
        ]
        det = {}
        for fault_type in protocol.faults:
            det[fault_type] = {}
            for severity in protocol.severities:
                vectors = run_vectors(
                    kind,
                    protocol.new_run_seed(kind, 0),
                    protocol.fault_seconds,
                    Fault(fault_type, severity),
                )
                det[fault_type][f"{severity:g}"] = round(float(np.mean(model.predict(vectors))), 4)
        results.append(
            KindResult(
                kind,
                float(model.threshold_),
                str(model.threshold_method_.get("rule")),
                far_per_run,
                det,
                admitted,
                log,
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


def learning_table(results: list[SimulatedResult]) -> str:
    """Markdown: per preset and kind, what learning admitted (healthy runs and fault runs by
    severity, each "admitted of offered") and the figures after learning."""
    protocol = results[0].protocol
    severities = sorted(protocol.learning_fault_severities) if protocol.learning_faults else []
    lines = [
        "| preset | kind | rule | healthy admitted | "
        + "".join(f"fault @{s:g} admitted | " for s in severities)
        + "new-run FAR | det @0.3 |",
        "|---|---|---|---:|" + "---:|" * len(severities) + "---:|---:|",
    ]
    for r in results:
        for k in r.kinds:
            faults = "".join(
                f"{k.fault_admitted.get(f'{s:g}', 0)} of {k.fault_offered.get(f'{s:g}', 0)} | "
                for s in severities
            )
            det = f"{k.det_at(0.3):.3f}" if 0.3 in r.protocol.severities else "-"
            lines.append(
                f"| {r.preset.name} | {k.kind} | {r.protocol.learning_rule} "
                f"| {k.admitted} of {r.protocol.learning_runs} | {faults}{k.far:.4f} | {det} |"
            )
    return "\n".join(lines)


def learning_rules_table(by_rule: dict[str, list[SimulatedResult]]) -> str:
    """Markdown: one row per admission rule, totals over kinds and seeds (admitted of offered)
    and means over seeds of the all-kinds new-run FAR and detection after learning.

    ``by_rule[rule]`` holds one preset's results, one per seed, all with that rule."""
    first = next(iter(by_rule.values()))[0].protocol
    severities = sorted(first.learning_fault_severities) if first.learning_faults else []
    dets = first.severities
    lines = [
        "| rule | healthy admitted | "
        + "".join(f"fault @{s:g} admitted | " for s in severities)
        + "new-run FAR | "
        + " | ".join(f"det @{s:g}" for s in dets)
        + " |",
        "|---|---:|" + "---:|" * len(severities) + "---:|" + "---:|" * len(dets),
    ]
    for rule, results in by_rule.items():
        kinds = [k for r in results for k in r.kinds]
        healthy = sum(k.admitted for k in kinds)
        offered = sum(r.protocol.learning_runs * len(r.kinds) for r in results)
        cells = [f"{healthy} of {offered}"]
        for s in severities:
            got = sum(k.fault_admitted.get(f"{s:g}", 0) for k in kinds)
            of = sum(k.fault_offered.get(f"{s:g}", 0) for k in kinds)
            cells.append(f"{got} of {of}")
        cells.append(f"{float(np.mean([r.far for r in results])):.4f}")
        cells += [f"{float(np.mean([r.det_at(s) for r in results])):.3f}" for s in dets]
        lines.append(f"| {rule} | " + " | ".join(cells) + " |")
    return "\n".join(lines)

"""Simulated fleet evaluation of the event logic: false events per machine-week, detection and
delays of injected faults, sensor faults kept apart.

Each simulated machine (one of every kind of ``detectors.simulate``, cycling, at a random
speed) is enrolled as the service enrolls it: ``enroll_seconds`` of ``clip_seconds``
recordings spread over ``enroll_runs`` runs, a ``KNNBaseline`` of the default preset fitted
with one calibration group per run; during the ``learning_days`` learning period each run
that ends joins the baseline (refitted) when it looks normal to the active and the
enrollment baselines, as in ``service/services/learning.py``. Then a simulated stretch of
operation is scored through the same path the service uses (``detectors.windows.frame``
-> embedder -> ``KNNBaseline.decision_function`` -> ratio = score / threshold, and
``detectors.sensor.window_flags``) and fed, clip by clip, to
``detectors.events.EventTracker``:

- one ``clip_seconds`` clip every ``clip_interval_s`` (duty cycle);
- **new runs** every ``run_hours`` (a new simulator seed: speed, levels and background
  change as the simulator makes them between runs);
- **machine faults** at random times, of random type and severity (uniform in
  ``severity_range``), lasting ``fault_hours``;
- **microphone faults** (silence, clipping, dropouts) at other random times, lasting
  ``mic_fault_minutes``.

Simulating audio costs about 0.3 s of CPU per 10 s clip, so a literal week at one clip a
minute (10,080 clips) would take close to an hour per machine. Each run, each fault and each
microphone fault is therefore represented by ``pool_clips`` distinct consecutive clips, and
the stream draws its clips from the current pool with replacement (a bootstrap of that
condition's sound). The event logic still sees every clip of the week, in time order.

Ground truth: an anomaly event opened (or reopened: that pages again) while a machine fault
is active is that fault's detection; one opened during a microphone fault is a sensor fault
reported as an anomaly; any other is a false anomaly event. A fault is detected when an
anomaly event is opened (or reopened) during it; faults that fell inside an event already
open are counted apart (``faults_with_event_already_open``: the operator got no new
event), and of those the ones during which that event escalated to alarm
(``faults_with_event_already_open_escalated_to_alarm``: a critical page of its own, but from
an event the operator may already have judged), and so is the fraction of healthy time spent
inside an open anomaly event.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from detectors.baseline import KNNBaseline
from detectors.embedders import build_embedder, embed_windows
from detectors.events import EventParams, EventTracker, WindowObs
from detectors.learning import admit_run
from detectors.presets import DEFAULT_PRESET, Preset
from detectors.sensor import window_flags
from detectors.simulate import FAULT_TYPES, MACHINE_KINDS, Fault, MachineSimulator, MachineSpec
from detectors.windows import frame

SAMPLE_RATE = 16000
MIC_FAULTS = ("silence", "clipping", "dropout")
T0 = datetime(2026, 1, 5, 0, 0, tzinfo=UTC)


@dataclass(frozen=True)
class FleetConfig:
    """What to simulate (defaults: about 4 minutes of CPU per machine-week on one core)."""

    machines: int = 5
    days: float = 7.0
    seed: int = 0
    clip_seconds: float = 10.0
    clip_interval_s: float = 60.0
    enroll_seconds: float = 120.0
    pool_clips: int = 6
    run_hours: tuple[float, float] = (4.0, 12.0)
    faults_per_week: float = 3.0
    fault_hours: tuple[float, float] = (1.0, 6.0)
    severity_range: tuple[float, float] = (0.1, 1.0)
    mic_faults_per_week: float = 3.0
    mic_fault_minutes: tuple[float, float] = (10.0, 90.0)
    rpm_spread: float = 0.2  # machine speeds: preset rpm times 1 +- this (uniform)
    # As the service enrolls (HUMWATCH_MIN_ENROLLMENT_RUNS): the enrollment clips are split
    # evenly over this many runs, one calibration group per run.
    enroll_runs: int = 8  # the service's HUMWATCH_MIN_ENROLLMENT_RUNS
    # As the service's learning period (HUMWATCH_LEARNING_DAYS): each run that ends within
    # it joins the baseline (refitted) when its window ratios to the active baseline and to
    # the enrollment one pass the service's admission rule (detectors.learning).
    learning_days: float = 7.0


@dataclass(frozen=True)
class Interval:
    """Something injected: ``kind`` is a fault type or a microphone fault."""

    start_s: float
    end_s: float
    kind: str
    severity: float = 0.0
    run: int = 0


@dataclass
class ScoredClip:
    """One clip of the stream: its time, window ratios ``(n_windows,)`` and sensor flags."""

    t_s: float
    ratios: np.ndarray
    silent: np.ndarray
    clipped: np.ndarray
    dropout: np.ndarray


@dataclass
class MachineStream:
    """A machine's scored week and what was injected into it."""

    machine: str
    kind: str
    rpm: float
    window_seconds: float
    hop_seconds: float
    clips: list[ScoredClip]
    faults: list[Interval]
    mic_faults: list[Interval]
    learned_runs: int = 0
    _observations: list[list[WindowObs]] | None = field(default=None, repr=False)

    def observations(self) -> list[list[WindowObs]]:
        """Per clip, its windows as the event logic sees them (built once, reused)."""
        if self._observations is None:
            self._observations = [
                [
                    WindowObs(
                        T0 + timedelta(seconds=clip.t_s + i * self.hop_seconds),
                        T0
                        + timedelta(seconds=clip.t_s + i * self.hop_seconds + self.window_seconds),
                        float(r),
                        silent=bool(clip.silent[i]),
                        clipped=bool(clip.clipped[i]),
                        dropout=bool(clip.dropout[i]),
                    )
                    for i, r in enumerate(clip.ratios)
                ]
                for clip in self.clips
            ]
        return self._observations


@dataclass
class _Pools:
    """Per condition, a ``(pool_clips,)`` list of scored clips and (healthy only) audio."""

    scored: dict[Any, list[tuple[np.ndarray, Any]]] = field(default_factory=dict)
    audio: dict[Any, list[np.ndarray]] = field(default_factory=dict)


class _Scorer:
    """The service's scoring path for one machine: windows -> embedder -> kNN -> ratio, with
    its enrollment (run groups) and learning period (admitted runs refit the baseline)."""

    def __init__(self, preset: Preset, embedder) -> None:
        self.preset = preset
        self.embedder = embedder
        self.model: KNNBaseline | None = None
        self.enrollment_model: KNNBaseline | None = None
        self.vectors: list[np.ndarray] = []
        self.groups: list[np.ndarray] = []
        self.learned_runs = 0

    def _fit(self) -> KNNBaseline:
        # As the service fits a machine of this preset (its 1 % false-alarm target).
        return self.preset.baseline().fit(np.concatenate(self.vectors), np.concatenate(self.groups))

    def enroll(self, clips: list[np.ndarray], runs: list[int]) -> None:
        for clip, run in zip(clips, runs, strict=True):
            v = self.vectors_of(clip)
            self.vectors.append(v)
            self.groups.append(np.full(v.shape[0], run))
        self.model = self.enrollment_model = self._fit()

    def learn(self, run: int, vectors: list[np.ndarray]) -> bool:
        """Admit a run that ended (its clips' vectors) as the learning period does."""
        v = np.concatenate(vectors)
        active = self.model.decision_function(v) / self.model.threshold_
        first = self.enrollment_model.decision_function(v) / self.enrollment_model.threshold_
        if not admit_run(active, first):
            return False
        self.vectors.append(v)
        self.groups.append(np.full(v.shape[0], run))
        self.model = self._fit()
        self.learned_runs += 1
        return True

    def _windows(self, clip: np.ndarray):
        return frame(clip, SAMPLE_RATE, self.preset.window_seconds, self.preset.hop_seconds)

    def vectors_of(self, clip: np.ndarray, windows=None) -> np.ndarray:
        windows = self._windows(clip) if windows is None else windows
        return embed_windows(self.embedder, clip, windows)  # the preset's framing, as at ingest

    def score(self, clip: np.ndarray) -> tuple[np.ndarray, Any, np.ndarray]:
        """``(n_windows,)`` ratios, the clip's ``WindowFlags`` and its vectors."""
        w = self._windows(clip)
        vectors = self.vectors_of(clip, w)
        ratios = self.model.decision_function(vectors) / float(self.model.threshold_)
        flags = window_flags(clip, w.start_samples, w.window_samples, SAMPLE_RATE)
        return ratios.astype(np.float64), flags, vectors


def _intervals(
    rng: np.random.Generator,
    count: int,
    span: tuple[float, float],
    length_s: tuple[float, float],
    taken: list[Interval],
    kinds: Iterable[str],
    severity: tuple[float, float] | None,
) -> list[Interval]:
    """``count`` non-overlapping intervals inside ``span`` avoiding ``taken`` (1 h margins)."""
    kinds = list(kinds)
    out: list[Interval] = []
    for _ in range(count):
        for _attempt in range(200):
            length = rng.uniform(*length_s)
            start = rng.uniform(span[0], span[1] - length)
            end = start + length
            if all(end + 3600 < o.start_s or start > o.end_s + 3600 for o in taken + out):
                sev = float(rng.uniform(*severity)) if severity else 0.0
                out.append(Interval(start, end, str(rng.choice(kinds)), sev))
                break
    return sorted(out, key=lambda i: i.start_s)


def _mic_fault_audio(kind: str, clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A healthy clip as a faulty microphone would deliver it."""
    if kind == "silence":  # dead microphone: its self-noise only (about -90 dBFS)
        return (3e-5 * rng.standard_normal(clip.size)).astype(np.float32)
    if kind == "clipping":  # gain far too high
        peak = float(np.max(np.abs(clip))) or 1.0
        return np.clip(clip * (3.0 / peak), -1.0, 1.0).astype(np.float32)
    out = clip.copy()  # dropouts: the signal vanishes for 0.3-2 s, a few times
    for _ in range(int(rng.integers(1, 4))):
        length = int(rng.uniform(0.3, 2.0) * SAMPLE_RATE)
        start = int(rng.integers(0, max(1, clip.size - length)))
        out[start : start + length] = 0.0
    return out


def simulate_machine(
    index: int, config: FleetConfig, preset: Preset = DEFAULT_PRESET, embedder=None
) -> MachineStream:
    """Enroll one simulated machine and score its stretch of operation."""
    rng = np.random.default_rng([config.seed, index])
    kind = MACHINE_KINDS[index % len(MACHINE_KINDS)]
    nominal = MachineSpec.preset(kind).rpm
    rpm = float(nominal * rng.uniform(1 - config.rpm_spread, 1 + config.rpm_spread))
    spec = MachineSpec.preset(kind, rpm=rpm)
    scorer = _Scorer(preset, embedder or build_embedder(preset.embedder))
    base_seed = int(rng.integers(0, 2**31 - 1))

    def run_seed(run: int) -> int:
        return (base_seed + 7919 * run) % (2**31 - 1)

    week = config.days * 86400.0
    # Runs: boundaries every run_hours; run 0 is the enrollment run.
    bounds = [0.0]
    while bounds[-1] < week:
        bounds.append(bounds[-1] + 3600.0 * rng.uniform(*config.run_hours))
    start_s = config.enroll_seconds + 3600.0  # the first hour after enrollment is warm-up
    n_faults = max(1, round(config.faults_per_week * config.days / 7))
    faults = _intervals(
        rng,
        n_faults,
        (start_s, week),
        tuple(3600.0 * h for h in config.fault_hours),
        [],
        FAULT_TYPES,
        config.severity_range,
    )
    n_mic = max(1, round(config.mic_faults_per_week * config.days / 7))
    mic = _intervals(
        rng,
        n_mic,
        (start_s, week),
        tuple(60.0 * m for m in config.mic_fault_minutes),
        faults,
        MIC_FAULTS,
        None,
    )

    def run_at(t: float) -> int:
        return int(np.searchsorted(bounds, t, side="right") - 1)

    faults = [replace(f, run=run_at(f.start_s)) for f in faults]
    mic = [replace(m, run=run_at(m.start_s)) for m in mic]

    # Enrollment: consecutive recordings of enroll_runs runs before the week (their own seeds),
    # as the service enrolls: one calibration group per run.
    n_enroll = max(2, math.ceil(config.enroll_seconds / config.clip_seconds))
    enroll_clips, enroll_groups = [], []
    for r in range(max(config.enroll_runs, 1)):
        sim = MachineSimulator(spec, SAMPLE_RATE, seed=(run_seed(-1 - r)))
        share = n_enroll // config.enroll_runs + (r < n_enroll % config.enroll_runs)
        for _ in range(max(share, 1)):
            enroll_clips.append(sim.next_chunk(config.clip_seconds))
            enroll_groups.append(-1 - r)
    if len(set(enroll_groups)) < 2:  # one run: consecutive segments, as the service does
        enroll_groups = [i * 5 // len(enroll_clips) for i in range(len(enroll_clips))]
    scorer.enroll(enroll_clips, enroll_groups)
    learning_until = config.learning_days * 86400.0

    pools = _Pools()

    def healthy_pool(run: int) -> list:
        if run not in pools.scored:
            sim = MachineSimulator(spec, SAMPLE_RATE, seed=run_seed(run))
            audio = [sim.next_chunk(config.clip_seconds) for _ in range(config.pool_clips)]
            pools.audio[run] = audio
            pools.scored[run] = [scorer.score(a) for a in audio]
        return pools.scored[run]

    def fault_pool(i: int, f: Interval) -> list:
        key = ("fault", i)
        if key not in pools.scored:
            sim = MachineSimulator(
                spec, SAMPLE_RATE, seed=run_seed(f.run), fault=Fault(f.kind, f.severity)
            )
            pools.scored[key] = [
                scorer.score(sim.next_chunk(config.clip_seconds)) for _ in range(config.pool_clips)
            ]
        return pools.scored[key]

    def mic_pool(i: int, m: Interval) -> list:
        key = ("mic", i)
        if key not in pools.scored:
            healthy_pool(m.run)
            mic_rng = np.random.default_rng([config.seed, index, 1000 + i])
            pools.scored[key] = [
                scorer.score(_mic_fault_audio(m.kind, a, mic_rng)) for a in pools.audio[m.run]
            ]
        return pools.scored[key]

    clips: list[ScoredClip] = []
    t = start_s - 3600.0
    pick = np.random.default_rng([config.seed, index, 7])
    current_run = run_at(t)
    used: dict[int, list[Any]] = {}  # run -> the pools its clips came from
    while t + config.clip_seconds <= week:
        run = run_at(t)
        if run != current_run:
            # A run ended: the learning period looks at it once (every window it sent).
            if bounds[run] <= learning_until and current_run in used:
                scorer.learn(current_run, [c[2] for p in used[current_run] for c in p])
            current_run = run
        pool = None
        for i, f in enumerate(faults):
            if f.start_s <= t < f.end_s:
                pool = fault_pool(i, f)
        for i, m in enumerate(mic):
            if m.start_s <= t < m.end_s:
                pool = mic_pool(i, m)
        if pool is None:
            pool = healthy_pool(run_at(t))
        if all(p is not pool for p in used.setdefault(run, [])):
            used[run].append(pool)
        ratios, flags, _ = pool[int(pick.integers(len(pool)))]
        clips.append(ScoredClip(t, ratios, flags.silent, flags.clipped, flags.dropout))
        t += config.clip_interval_s
    return MachineStream(
        f"{kind}-{index:02d}",
        kind,
        rpm,
        preset.window_seconds,
        preset.hop_seconds,
        clips,
        faults,
        mic,
        learned_runs=scorer.learned_runs,
    )


@dataclass
class StreamResult:
    false_events: int = 0
    sensor_as_anomaly: int = 0
    sensor_events: int = 0
    mic_faults_with_sensor_event: int = 0
    detected: list[bool] = field(default_factory=list)
    already_open: list[bool] = field(default_factory=list)
    # Per fault that fell inside an event already open: whether that event escalated to
    # alarm during the fault (a critical page of its own, HumwatchMachineAnomalyAlarm).
    escalated_open: list[bool] = field(default_factory=list)
    healthy_s: float = 0.0
    healthy_in_anomaly_s: float = 0.0
    warning_delays: list[float] = field(default_factory=list)
    alarm_delays: list[float] = field(default_factory=list)


def replay(stream: MachineStream, params: EventParams) -> StreamResult:
    """Feed a scored stream to the event logic and score its events against the truth."""
    tracker = EventTracker(params)
    window_s = stream.window_seconds
    opened: list[tuple[float, str]] = []  # (time, severity) of anomaly opens
    escalations: list[float] = []
    open_spans: list[list[float]] = []  # [open, close] of anomaly events, close inf if open
    sensor_opens: list[float] = []
    for obs in stream.observations():
        for change in tracker.observe(obs):
            at = (change.at - T0).total_seconds()
            if change.kind == "sensor":
                if change.action == "open":
                    sensor_opens.append(at)
                continue
            if change.action in ("open", "reopen"):
                # A reopen pages again (the alert fires anew): it counts like an open.
                opened.append((at, change.severity))
                escalations.append(at if change.severity == "alarm" else math.inf)
                open_spans.append([at, math.inf])
            elif change.action == "escalate":
                escalations[-1] = min(escalations[-1], at)
            elif change.action == "resolve":
                open_spans[-1][1] = at
    result = StreamResult()
    end_s = stream.clips[-1].t_s + window_s if stream.clips else 0.0
    injected = [(f.start_s, f.end_s) for f in stream.faults + stream.mic_faults]
    start_s = stream.clips[0].t_s if stream.clips else 0.0
    result.healthy_s = end_s - start_s - sum(e - s for s, e in injected)
    for s, e in open_spans:
        e = min(e, end_s)
        overlap = sum(max(0.0, min(e, fe) - max(s, fs)) for fs, fe in injected)
        result.healthy_in_anomaly_s += max(0.0, e - s - overlap)
    for at, _severity in opened:
        if any(f.start_s <= at <= f.end_s for f in stream.faults):
            continue
        if any(m.start_s <= at <= m.end_s + params.sensor_quiet_s for m in stream.mic_faults):
            result.sensor_as_anomaly += 1
        else:
            result.false_events += 1
    for f in stream.faults:
        during = [i for i, (at, _) in enumerate(opened) if f.start_s <= at <= f.end_s]
        containing = [i for i, (s, e) in enumerate(open_spans) if s <= f.start_s < e]
        masked = bool(containing) and not during
        result.detected.append(bool(during))
        result.already_open.append(masked)
        if masked:
            result.escalated_open.append(
                any(f.start_s <= escalations[i] <= f.end_s for i in containing)
            )
        if during:
            first = during[0]
            result.warning_delays.append(opened[first][0] - f.start_s)
            alarm = min(escalations[i] for i in during)
            if alarm <= f.end_s:
                result.alarm_delays.append(alarm - f.start_s)
    result.sensor_events = len(sensor_opens)
    result.mic_faults_with_sensor_event = sum(
        any(m.start_s <= s <= m.end_s for s in sensor_opens) for m in stream.mic_faults
    )
    return result


def _quantile(values: list[float], q: float) -> float | None:
    return float(np.quantile(values, q)) if values else None


def summarize(
    streams: list[MachineStream], params: EventParams, config: FleetConfig
) -> dict[str, Any]:
    """The fleet figures for one set of event parameters."""
    results = [replay(s, params) for s in streams]
    weeks = sum(
        (s.clips[-1].t_s - s.clips[0].t_s + config.clip_interval_s) / (7 * 86400.0)
        for s in streams
        if s.clips
    )
    faults = [
        (f, d)
        for s, r in zip(streams, results, strict=True)
        for f, d in zip(s.faults, r.detected, strict=True)
    ]
    strong = [d for f, d in faults if f.severity >= 0.3]
    warning = [d for r in results for d in r.warning_delays]
    alarm = [d for r in results for d in r.alarm_delays]
    mic_total = sum(len(s.mic_faults) for s in streams)
    healthy = sum(r.healthy_s for r in results)
    return {
        "healthy_time_in_anomaly_fraction": (
            sum(r.healthy_in_anomaly_s for r in results) / healthy if healthy else None
        ),
        "faults_with_event_already_open": sum(sum(r.already_open) for r in results),
        "faults_with_event_already_open_escalated_to_alarm": sum(
            sum(r.escalated_open) for r in results
        ),
        "false_anomaly_events_per_machine_week": sum(r.false_events for r in results) / weeks,
        "false_anomaly_events": sum(r.false_events for r in results),
        "machine_weeks": weeks,
        "faults_injected": len(faults),
        "faults_detected_fraction": sum(d for _, d in faults) / len(faults) if faults else None,
        "faults_severity_ge_0_3": len(strong),
        "faults_detected_fraction_severity_ge_0_3": sum(strong) / len(strong) if strong else None,
        "warning_delay_s_median": _quantile(warning, 0.5),
        "warning_delay_s_p90": _quantile(warning, 0.9),
        "alarm_delay_s_median": _quantile(alarm, 0.5),
        "alarm_delay_s_p90": _quantile(alarm, 0.9),
        "faults_escalated_to_alarm": len(alarm),
        "sensor_faults_injected": mic_total,
        "sensor_faults_with_sensor_event_fraction": (
            sum(r.mic_faults_with_sensor_event for r in results) / mic_total if mic_total else None
        ),
        "sensor_events_reported_as_anomaly": sum(r.sensor_as_anomaly for r in results),
    }


def detection_by_severity(streams: list[MachineStream], params: EventParams) -> list[dict]:
    """Detected fraction per severity band (0.1 wide) and per fault type."""
    rows = []
    results = [replay(s, params) for s in streams]
    pairs = [
        (f, d)
        for s, r in zip(streams, results, strict=True)
        for f, d in zip(s.faults, r.detected, strict=True)
    ]
    for lo in (0.1, 0.3, 0.5, 0.7):
        hi = 1.0 if lo == 0.7 else lo + 0.2
        band = [d for f, d in pairs if lo <= f.severity < hi or (hi == 1.0 and f.severity == 1.0)]
        rows.append(
            {
                "severity": f"{lo:.1f}-{hi:.1f}",
                "faults": len(band),
                "detected_fraction": sum(band) / len(band) if band else None,
            }
        )
    for kind in FAULT_TYPES:
        typed = [d for f, d in pairs if f.kind == kind]
        rows.append(
            {
                "type": kind,
                "faults": len(typed),
                "detected_fraction": sum(typed) / len(typed) if typed else None,
            }
        )
    return rows


TRADEOFF_PARAMETER = "open_ratio"
TRADEOFF_VALUES = (0.8, 0.9, 1.0, 1.05, 1.1, 1.2, 1.3, 1.5, 2.0)
# The sustained-evidence rule's fraction (0: off), the other parameters as given.
SUSTAINED_PARAMETER = "slow_fraction"
SUSTAINED_VALUES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)


def evaluate_fleet(
    config: FleetConfig,
    params: EventParams | None = None,
    preset: Preset = DEFAULT_PRESET,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Simulate, score and evaluate the fleet; the trade-off curves over ``open_ratio`` and
    over the sustained-evidence ``slow_fraction`` (each from the given parameters)."""
    params = params or EventParams()
    embedder = build_embedder(preset.embedder)
    streams = []
    for i in range(config.machines):
        stream = simulate_machine(i, config, preset, embedder)
        streams.append(stream)
        if progress:
            ratios = np.concatenate([c.ratios for c in stream.clips])
            progress(
                f"{stream.machine} ({stream.rpm:.0f} rpm): {len(stream.clips)} clips, "
                f"{len(stream.faults)} faults, {len(stream.mic_faults)} microphone faults; "
                f"windows above 1: {(ratios > 1).mean():.1%}"
            )
    out = summarize(streams, params, config)
    tradeoff = []
    for value in TRADEOFF_VALUES:
        varied = replace(
            params,
            open_ratio=value,
            resolve_ratio=min(params.resolve_ratio, value),
            alarm_ratio=max(params.alarm_ratio, value),
        )
        figures = summarize(streams, varied, config)
        tradeoff.append({TRADEOFF_PARAMETER: value, **figures})
    sustained = [
        {
            SUSTAINED_PARAMETER: value,
            **summarize(streams, replace(params, slow_fraction=value), config),
        }
        for value in SUSTAINED_VALUES
    ]
    out.update(
        {
            "params": params.to_dict(),
            "seed": config.seed,
            "config": asdict(config),
            "preset": preset.name,
            "detection": detection_by_severity(streams, params),
            "tradeoff_parameter": TRADEOFF_PARAMETER,
            "tradeoff": tradeoff,
            "sustained_parameter": SUSTAINED_PARAMETER,
            "sustained_tradeoff": sustained,
            "machines": [
                {
                    "machine": s.machine,
                    "kind": s.kind,
                    "rpm": s.rpm,
                    "clips": len(s.clips),
                    "runs_learned": s.learned_runs,
                    "windows_above_1_fraction": float(
                        np.mean(np.concatenate([c.ratios for c in s.clips]) > 1)
                    ),
                    "faults": [asdict(f) for f in s.faults],
                    "mic_faults": [asdict(m) for m in s.mic_faults],
                }
                for s in streams
            ],
        }
    )
    return out

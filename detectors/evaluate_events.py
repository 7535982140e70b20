"""Event figures on real clips: held-out normal clips followed by anomalous clips.

The fleet evaluation (``detectors.fleet``) measures the event logic on simulated weeks; this
measures it on the real labelled clips, with the folds of ``detectors.evaluate``:

- Groups ``(dataset, machine_type, section)`` with at least ``min_normals`` test normals and
  ``min_anomalies`` anomalies (the dev groups large enough for a stream: DCASE 2023 valve
  section_00, MIMII fan id_00 in the shared set).
- The group's test normals are split into k folds, ``repeats`` times over (seeds ``seed``,
  ``seed + 1``, ...), as ``detectors.evaluate.evaluate_group`` splits them; the anomalies are
  split into k folds with the same seeds, so that within one repeat every anomalous clip is
  in exactly one stream. For each fold the baseline is the preset's ``KNNBaseline`` fitted on
  the official train normals plus the other folds' normals, one calibration group per clip
  (each clip is a run of its own, as in ``evaluate_group``).
- The fold's **stream** is its held-out normal clips, then its anomalous clips, each dated
  right after the previous one ends (or every ``clip_interval_s``). Every window is scored
  as the service scores it (ratio = score / threshold, sensor flags of
  ``detectors.sensor.window_flags``) and fed clip by clip to ``EventTracker`` with the
  given ``EventParams`` (the service's defaults unless told otherwise).
- Truth, as ``detectors.fleet.replay`` scores it: the anomalous stretch (from the first
  anomalous clip's first sample to the last one's end) is the fault. An anomaly event opened
  or reopened during it detects it (delay from its onset to the warning and to the alarm);
  any anomaly event opened during the normal stretch is a false event. A stretch that falls
  inside an event opened during the normals is not detected and is counted apart
  (``stretches_with_event_already_open``).
- False events are per machine-week of normal stream (the normal stretches' time from the
  first normal clip to the onset: with consecutive clips, the normal audio itself).

Not modelled: the learning period (the baseline never grows while streaming) and the
service's enrollment rule (here the baseline is whatever the other folds hold).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from detectors.evaluate import Clip, ClipEmbedder, _folds, group_clips
from detectors.events import EventParams
from detectors.fleet import (
    TRADEOFF_PARAMETER,
    TRADEOFF_VALUES,
    Interval,
    MachineStream,
    ScoredClip,
    StreamResult,
    replay,
)
from detectors.pipeline import embed_audio
from detectors.presets import DEFAULT_PRESET, Preset
from detectors.sensor import WindowFlags, window_flags

WEEK_S = 7 * 86400.0


@dataclass(frozen=True)
class RealStreamConfig:
    """Which groups, how they are split, and how the clips are dated."""

    folds: int = 5
    repeats: int = 3
    seed: int = 0
    min_normals: int = 20
    min_anomalies: int = 20
    clip_interval_s: float | None = None  # None: each clip starts where the previous ended

    def __post_init__(self) -> None:
        if self.folds < 2:
            raise ValueError("folds must be at least 2 (one fold's normals are the stream)")
        if self.repeats < 1:
            raise ValueError("repeats must be at least 1")
        if self.clip_interval_s is not None and self.clip_interval_s <= 0:
            raise ValueError("clip_interval_s must be > 0")


@dataclass(frozen=True)
class ClipAudio:
    """What a stream needs of one clip: ``(n_windows, dim)`` vectors, its sensor flags and its
    length in seconds."""

    vectors: np.ndarray
    flags: WindowFlags
    seconds: float


class StreamClipEmbedder(ClipEmbedder):
    """``ClipEmbedder`` that also keeps each clip's sensor flags and length (cached by path)."""

    def __init__(self, preset: Preset):
        super().__init__(preset)
        self._audio: dict[Path, ClipAudio] = {}

    def audio(self, clip: Clip) -> ClipAudio:
        if clip.path not in self._audio:
            p = self.preset
            out = embed_audio(clip.path, self.embedder, p.window_seconds, p.hop_seconds, p.channel)
            w = out.windows
            flags = window_flags(out.waveform, w.start_samples, w.window_samples, w.sample_rate)
            seconds = out.waveform.size / w.sample_rate
            self._audio[clip.path] = ClipAudio(out.vectors, flags, seconds)
            self._cache[clip.path] = out.vectors
        return self._audio[clip.path]

    def __call__(self, clip: Clip) -> np.ndarray:
        return self.audio(clip).vectors


def eligible(clips: list[Clip], config: RealStreamConfig) -> tuple[bool, str | None]:
    """Whether a group is large enough for streams, and why not."""
    normals = sum(c.label == "normal" and c.split != "train" for c in clips)
    anomalies = sum(c.label == "anomaly" for c in clips)
    if normals < config.min_normals or anomalies < config.min_anomalies:
        return False, (
            f"{normals} test normals and {anomalies} anomalies: streams need at least "
            f"{config.min_normals} and {config.min_anomalies}"
        )
    if normals < 2 * config.folds or anomalies < config.folds:
        return False, f"too few clips for {config.folds} folds"
    return True, None


def group_streams(
    clips: list[Clip],
    embedder: StreamClipEmbedder,
    preset: Preset,
    config: RealStreamConfig,
) -> list[MachineStream]:
    """The scored streams of one group: one per fold and repeat (see the module docstring)."""
    normals = [c for c in clips if c.label == "normal" and c.split != "train"]
    train = [c for c in clips if c.label == "normal" and c.split == "train"]
    anomalies = [c for c in clips if c.label == "anomaly"]
    window_s, hop_s = preset.window_seconds, preset.hop_seconds
    name = "/".join(clips[0].group)
    streams = []
    for r in range(config.repeats):
        normal_folds = _folds(len(normals), config.folds, config.seed + r)
        anomaly_folds = _folds(len(anomalies), config.folds, config.seed + r)
        for j, (held, bad) in enumerate(zip(normal_folds, anomaly_folds, strict=True)):
            held_set = set(held.tolist())
            members = train + [c for i, c in enumerate(normals) if i not in held_set]
            vectors = [embedder(c) for c in members]
            groups = np.concatenate([np.full(len(v), i) for i, v in enumerate(vectors)])
            model = preset.baseline().fit(np.concatenate(vectors), groups=groups)
            threshold = float(model.threshold_)
            scored, t, onset = [], 0.0, None
            for label, clip in [("normal", normals[i]) for i in held] + [
                ("anomaly", anomalies[i]) for i in bad
            ]:
                if label == "anomaly" and onset is None:
                    onset = t
                audio = embedder.audio(clip)
                ratios = model.decision_function(audio.vectors) / threshold
                f = audio.flags
                scored.append(
                    ScoredClip(t, ratios.astype(np.float64), f.silent, f.clipped, f.dropout)
                )
                t += audio.seconds if config.clip_interval_s is None else config.clip_interval_s
            end = scored[-1].t_s + embedder.audio(anomalies[bad[-1]]).seconds
            stretch = Interval(onset, end, "anomalous clips", severity=1.0, run=j)
            streams.append(
                MachineStream(
                    f"{name} repeat {r} fold {j}", name, 0.0, window_s, hop_s, scored, [stretch], []
                )
            )
    return streams


def _quantile(values: list[float], q: float) -> float | None:
    return float(np.quantile(values, q)) if values else None


def _rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def stream_figures(streams: list[MachineStream], params: EventParams) -> dict[str, Any]:
    """The fleet evaluation's event figures over a set of real-clip streams."""
    results: list[StreamResult] = [replay(s, params) for s in streams]
    normal_s = sum(s.faults[0].start_s - s.clips[0].t_s for s in streams)
    false_events = sum(r.false_events for r in results)
    detected = [d for r in results for d in r.detected]
    warning = [d for r in results for d in r.warning_delays]
    alarm = [d for r in results for d in r.alarm_delays]
    windows = [(s, c) for s in streams for c in s.clips]
    normal_ratios = [c.ratios for s, c in windows if c.t_s < s.faults[0].start_s]
    anomaly_ratios = [c.ratios for s, c in windows if c.t_s >= s.faults[0].start_s]
    return {
        "streams": len(streams),
        "normal_stream_s": round(normal_s, 1),
        "machine_weeks": normal_s / WEEK_S,
        "false_anomaly_events": false_events,
        "false_anomaly_events_per_machine_week": (
            round(false_events / (normal_s / WEEK_S), 1) if normal_s else None
        ),
        # One false event in this much normal audio would read as this many per week: the
        # resolution of the figure above (a few hundred clips are far from a machine-week).
        "false_anomaly_events_per_machine_week_resolution": (
            round(WEEK_S / normal_s, 1) if normal_s else None
        ),
        "streams_with_false_event_fraction": _rounded(
            float(np.mean([r.false_events > 0 for r in results]))
        ),
        "anomalous_stretches": len(detected),
        "anomalous_stretches_detected_fraction": _rounded(
            sum(detected) / len(detected) if detected else None
        ),
        "stretches_with_event_already_open": sum(sum(r.already_open) for r in results),
        "warning_delay_s_median": _rounded(_quantile(warning, 0.5), 1),
        "warning_delay_s_p90": _rounded(_quantile(warning, 0.9), 1),
        "alarm_delay_s_median": _rounded(_quantile(alarm, 0.5), 1),
        "alarm_delay_s_p90": _rounded(_quantile(alarm, 0.9), 1),
        "stretches_escalated_to_alarm": len(alarm),
        "sensor_events": sum(r.sensor_events for r in results),
        "normal_windows_above_open_ratio_fraction": _rounded(
            float(np.mean(np.concatenate(normal_ratios) > params.open_ratio))
        ),
        "anomalous_windows_above_open_ratio_fraction": _rounded(
            float(np.mean(np.concatenate(anomaly_ratios) > params.open_ratio))
        ),
        "window_ratios": {
            "normal": _distribution(np.concatenate(normal_ratios)),
            "anomalous": _distribution(np.concatenate(anomaly_ratios)),
        },
    }


def _distribution(ratios: np.ndarray) -> dict[str, float]:
    """Where a stretch's window ratios lie: the share above 1 and a few quantiles."""
    return {
        "above_1_fraction": round(float(np.mean(ratios > 1)), 4),
        "median": round(float(np.median(ratios)), 3),
        "p99": round(float(np.quantile(ratios, 0.99)), 3),
        "max": round(float(ratios.max()), 3),
    }


def _tradeoff(streams: list[MachineStream], params: EventParams) -> list[dict[str, Any]]:
    rows = []
    for value in TRADEOFF_VALUES:
        varied = replace(
            params,
            open_ratio=value,
            resolve_ratio=min(params.resolve_ratio, value),
            alarm_ratio=max(params.alarm_ratio, value),
        )
        rows.append({TRADEOFF_PARAMETER: value, **stream_figures(streams, varied)})
    return rows


def evaluate_real_streams(
    clips: list[Clip],
    preset: Preset = DEFAULT_PRESET,
    params: EventParams | None = None,
    config: RealStreamConfig | None = None,
    embedder: StreamClipEmbedder | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Event figures per eligible group and pooled over them, with the trade-off curve over
    ``open_ratio`` (only the event logic re-runs)."""
    params = params or EventParams()
    config = config or RealStreamConfig()
    embedder = embedder or StreamClipEmbedder(preset)
    groups, skipped, pooled = [], [], []
    for key, members in group_clips(clips).items():
        ok, reason = eligible(members, config)
        if not ok:
            skipped.append(
                dict(zip(("dataset", "machine_type", "section"), key, strict=True))
                | {"reason": reason}
            )
            continue
        streams = group_streams(members, embedder, preset, config)
        pooled.extend(streams)
        figures = stream_figures(streams, params)
        groups.append(
            {
                "dataset": key[0],
                "machine_type": key[1],
                "section": key[2],
                "normals": sum(c.label == "normal" and c.split != "train" for c in members),
                "train_normals": sum(c.label == "normal" and c.split == "train" for c in members),
                "anomalies": sum(c.label == "anomaly" for c in members),
                **figures,
                "tradeoff": _tradeoff(streams, params),
            }
        )
        if progress:
            progress(
                f"{'/'.join(key)}: {figures['streams']} streams, "
                f"{figures['false_anomaly_events']} false events, detected "
                f"{figures['anomalous_stretches_detected_fraction']}"
            )
    if not groups:
        raise ValueError(
            "no group has enough clips for streams "
            f"(at least {config.min_normals} test normals and {config.min_anomalies} anomalies)"
        )
    return {
        "preset": preset.name,
        "params": params.to_dict(),
        "config": asdict(config),
        "seed": config.seed,
        "groups": groups,
        "pooled": stream_figures(pooled, params),
        "tradeoff_parameter": TRADEOFF_PARAMETER,
        "tradeoff": _tradeoff(pooled, params),
        "skipped": skipped,
    }


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def markdown_table(out: dict[str, Any]) -> str:
    """The figures per group and pooled, as a Markdown table."""
    columns = (
        ("streams", "streams"),
        ("normal_stream_s", "normal audio (s)"),
        ("false_anomaly_events", "false events"),
        ("false_anomaly_events_per_machine_week", "false events / machine-week"),
        ("false_anomaly_events_per_machine_week_resolution", "(one event reads as)"),
        ("anomalous_stretches_detected_fraction", "anomalous stretches detected"),
        ("stretches_with_event_already_open", "inside an event already open"),
        ("warning_delay_s_median", "warning delay median (s)"),
        ("warning_delay_s_p90", "p90 (s)"),
        ("alarm_delay_s_median", "alarm delay median (s)"),
        ("stretches_escalated_to_alarm", "escalated to alarm"),
    )
    lines = [
        "| group | " + " | ".join(title for _, title in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    rows = [(f"{g['dataset']} {g['machine_type']} {g['section']}", g) for g in out["groups"]]
    rows.append(("**pooled**", out["pooled"]))
    for name, figures in rows:
        lines.append(f"| {name} | " + " | ".join(_cell(figures[k]) for k, _ in columns) + " |")
    return "\n".join(lines) + "\n"


def tradeoff_table(out: dict[str, Any]) -> str:
    """The pooled trade-off curve over ``open_ratio`` as a Markdown table."""
    lines = [
        "| open_ratio | false events / machine-week | streams with a false event | "
        "anomalous stretches detected | inside an event already open | "
        "warning delay median (s) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in out["tradeoff"]:
        lines.append(
            f"| {row[TRADEOFF_PARAMETER]:g} | "
            + " | ".join(
                _cell(row[k])
                for k in (
                    "false_anomaly_events_per_machine_week",
                    "streams_with_false_event_fraction",
                    "anomalous_stretches_detected_fraction",
                    "stretches_with_event_already_open",
                    "warning_delay_s_median",
                )
            )
            + " |"
        )
    return "\n".join(lines) + "\n"

"""Event figures on real-clip streams (``detectors.evaluate_events``), on synthetic clips
written to disk: a machine hum whose anomalies add a loud tone is detected in every stream
within the first anomalous clip; "anomalies" that sound like the normals are not; groups
too small are skipped with the reason."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import soundfile as sf

from detectors.evaluate import load_clips
from detectors.evaluate_events import (
    RealStreamConfig,
    StreamClipEmbedder,
    evaluate_real_streams,
    markdown_table,
)
from detectors.events import EventParams
from detectors.presets import DEFAULT_PRESET

RATE = 16000
SECONDS = 8.0  # 4 windows of 5 s every 1 s per clip with the default preset
NORMALS, ANOMALIES = 12, 6
CONFIG = RealStreamConfig(folds=3, repeats=1, min_normals=NORMALS, min_anomalies=ANOMALIES)


def hum(seed: int, tone: bool) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(SECONDS * RATE)) / RATE
    x = 0.3 * np.sin(2 * np.pi * 120 * t) + 0.05 * rng.standard_normal(t.size)
    if tone:
        x += 0.2 * np.sin(2 * np.pi * 2500 * t)
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("streams")
    rows, seed = [], 0
    # "fan": anomalies carry a tone; "twin": its anomalies are more of the normal sound;
    # "small": too few clips for streams.
    for machine, normals, anomalies, tone in (
        ("fan", NORMALS, ANOMALIES, True),
        ("twin", NORMALS, ANOMALIES, False),
        ("small", 4, 2, True),
    ):
        for i in range(normals + anomalies):
            label = "normal" if i < normals else "anomaly"
            path = f"{machine}_{label}_{i}.wav"
            sf.write(root / path, hum(seed, tone and label == "anomaly"), RATE)
            seed += 1
            rows.append(
                {
                    "path": path,
                    "dataset": "plant",
                    "machine_type": machine,
                    "section": "id_00",
                    "split": "unsplit",
                    "label": label,
                }
            )
    manifest = root / "manifest.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return load_clips(manifest)


@pytest.fixture(scope="module")
def out(clips):
    return evaluate_real_streams(clips, DEFAULT_PRESET, EventParams(), CONFIG)


def test_streams_detect_a_loud_tone_within_the_first_anomalous_clip(out):
    groups = {g["machine_type"]: g for g in out["groups"]}
    fan = groups["fan"]
    assert fan["streams"] == 3 and fan["anomalous_stretches"] == 3
    assert fan["normal_stream_s"] == pytest.approx(NORMALS * SECONDS)  # each normal once
    assert fan["false_anomaly_events"] == 0
    assert fan["anomalous_stretches_detected_fraction"] == 1.0
    # m = 3 of n = 6 windows above open_ratio: the third window of the first anomalous clip
    # (starts 2 s after the onset, lasts 5 s) opens the warning.
    assert fan["warning_delay_s_median"] == pytest.approx(2 + 5)
    assert fan["warning_delay_s_p90"] == pytest.approx(2 + 5)
    ratios = fan["window_ratios"]
    assert ratios["anomalous"]["median"] > EventParams().open_ratio > ratios["normal"]["max"]


def test_anomalies_that_sound_normal_open_no_event(out):
    twin = next(g for g in out["groups"] if g["machine_type"] == "twin")
    assert twin["anomalous_stretches_detected_fraction"] == 0.0
    assert twin["warning_delay_s_median"] is None


def test_small_groups_are_skipped_and_figures_pool(out):
    (skip,) = out["skipped"]
    assert skip["machine_type"] == "small" and "streams need at least 12 and 6" in skip["reason"]
    pooled = out["pooled"]
    assert pooled["streams"] == 6 and pooled["anomalous_stretches_detected_fraction"] == 0.5
    assert out["params"] == EventParams().to_dict() and out["preset"] == "default"
    assert [row["open_ratio"] for row in out["tradeoff"]][:3] == [0.8, 0.9, 1.0]
    assert "| **pooled** | 6 |" in markdown_table(out)


def test_clip_interval_dates_the_clips(clips):
    """One clip a minute: the same windows, so the same detection, on a sparser clock."""
    fan = [c for c in clips if c.machine_type == "fan"]
    sparse = RealStreamConfig(**{**CONFIG.__dict__, "clip_interval_s": 60.0})
    out = evaluate_real_streams(fan, DEFAULT_PRESET, EventParams(), sparse)
    (group,) = out["groups"]
    assert group["normal_stream_s"] == pytest.approx(NORMALS * 60.0)
    assert group["anomalous_stretches_detected_fraction"] == 1.0


def test_embedder_keeps_flags_and_length(clips):
    embedder = StreamClipEmbedder(DEFAULT_PRESET)
    audio = embedder.audio(clips[0])
    assert audio.vectors.shape[0] == audio.flags.silent.shape[0] == 4
    assert audio.seconds == pytest.approx(SECONDS)
    assert not audio.flags.silent.any() and embedder(clips[0]) is audio.vectors

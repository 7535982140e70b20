import csv
import json

import numpy as np
import pytest
import soundfile as sf

from detectors.evaluate import (
    REFERENCE_PRESET,
    Clip,
    aggregate_scores,
    evaluate,
    load_clips,
    plan_group,
    read_dcase_tree,
)

RATE = 16000


def machine_clip(seed, anomalous=False, seconds=3.0):
    """A hum with noise; anomalies add a tone the normals never have."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    x = 0.3 * np.sin(2 * np.pi * (120 + rng.normal(0, 1)) * t) + 0.05 * rng.standard_normal(t.size)
    if anomalous:
        x += 0.1 * np.sin(2 * np.pi * 3000 * t)
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    rows = []
    specs = [
        ("plant", "fan", "id_00", 8, 6),
        ("plant", "pump", "id_00", 2, 2),
        ("plant", "valve", "id_00", 6, 0),
    ]
    seed = 0
    for dataset, machine, section, normals, anomalies in specs:
        for i in range(normals + anomalies):
            label = "normal" if i < normals else "anomaly"
            path = f"{machine}/{label}_{i}.wav"
            (root / machine).mkdir(exist_ok=True)
            sf.write(root / path, machine_clip(seed, label == "anomaly"), RATE)
            seed += 1
            rows.append(
                {
                    "path": path,
                    "dataset": dataset,
                    "machine_type": machine,
                    "section": section,
                    "split": "unsplit",
                    "label": label,
                }
            )
    csv_path = root / "manifest.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return csv_path


def test_evaluate_reports_groups_and_skips(manifest):
    clips = load_clips(manifest)
    result = evaluate(clips, REFERENCE_PRESET, folds=4)
    doc = json.loads(json.dumps(result.to_dict()))
    assert [
        (g["machine_type"], g["normals"], g["anomalies"], g["folds"], g["repeats"])
        for g in doc["groups"]
    ] == [("fan", 8, 6, 4, 3)]
    assert doc["groups"][0]["auc"] == 1.0  # a tone that no normal has is trivially separable
    assert doc["mean_auc"] == doc["groups"][0]["auc"]
    reasons = {s["machine_type"]: s["reason"] for s in doc["skipped"]}
    assert reasons["valve"] == "no anomalies"
    assert reasons["pump"] == "2 test normal(s) and no train clips: needs 4 for 2 folds of 2"


def test_held_out_normals_never_leak_into_their_baseline(manifest):
    # With k=1 a clip that sat in its own baseline would score exactly 0.
    from dataclasses import replace

    clips = [c for c in load_clips(manifest) if c.machine_type == "fan"]
    result = evaluate(clips, replace(REFERENCE_PRESET, k=1), folds=4)
    folds = result.groups[0].folds
    assert sum(len(f.normal_scores) for f in folds) == 8 * 3  # every normal once per repeat
    assert all(s > 0 for f in folds for s in f.normal_scores)


def test_plan_group_uses_train_clips_for_a_single_fold():
    def clip(split, label):
        return Clip(None, "d", "m", "s", split, label)

    assert plan_group([clip("test", "normal")] * 2 + [clip("test", "anomaly")], 5)[0] == 0
    assert plan_group(
        [clip("test", "normal")] * 2 + [clip("train", "normal"), clip("test", "anomaly")], 5
    ) == (1, None)
    assert plan_group([clip("test", "normal")] * 10 + [clip("test", "anomaly")], 5) == (5, None)


def test_aggregate_scores():
    s = np.array([1.0, 2.0, 3.0, 10.0])
    assert aggregate_scores(s, "mean") == 4.0
    assert aggregate_scores(s, "max") == 10.0
    assert aggregate_scores(s, "p50") == 2.5
    with pytest.raises(ValueError):
        aggregate_scores(s, "median")


def test_reads_dcase_tree(tmp_path):
    names = {
        "valve/train/section_00_source_train_normal_0001_pat_00.wav": (
            "section_00",
            "train",
            "normal",
        ),
        "valve/test/section_00_target_test_anomaly_0002_pat_01.wav": (
            "section_00",
            "test",
            "anomaly",
        ),
        "fan/test/anomaly_id_02_00000001.wav": ("id_02", "test", "anomaly"),
        "fan/train/normal_id_02_00000003.wav": ("id_02", "train", "normal"),
    }
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        sf.write(tmp_path / name, np.zeros(RATE, np.float32), RATE)
    clips = {str(c.path.relative_to(tmp_path)): c for c in read_dcase_tree(tmp_path, "dev")}
    assert {k: (c.section, c.split, c.label) for k, c in clips.items()} == names


def test_manifest_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_clips(tmp_path / "missing.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("path,label\nx.wav,normal\n")
    with pytest.raises(ValueError, match="lacks column"):
        load_clips(bad)


def hum(seed, freq, seconds=3.0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    x = 0.3 * np.sin(2 * np.pi * (freq + rng.normal(0, 1)) * t) + 0.05 * rng.standard_normal(t.size)
    return x.astype(np.float32)


def test_evaluation_within_the_domain_scores_each_clip_in_its_own_condition(tmp_path):
    from detectors.evaluate import clip_attributes, clip_domain

    named = Clip(tmp_path / "section_00_target_test_normal_0027_pat_02.wav", "", "", "", "", "")
    assert clip_attributes(named) == "pat_02" and clip_domain(named) == "target"

    # Source normals hum at 120 Hz, target normals at 900 Hz. The anomalies are target clips
    # that hum at 120 Hz: normal for the source, so a pooled baseline misses them.
    clips, seed = [], 0
    for domain, freq in (("source", 120), ("target", 900)):
        for i in range(12):
            path = tmp_path / f"section_00_{domain}_test_normal_{i:04d}.wav"
            sf.write(path, hum(seed, freq), RATE)
            clips.append(Clip(path, "d", "valve", "section_00", "test", "normal"))
            seed += 1
    for i in range(6):
        path = tmp_path / f"section_00_target_test_anomaly_{i:04d}.wav"
        sf.write(path, hum(seed, 120), RATE)
        clips.append(Clip(path, "d", "valve", "section_00", "test", "anomaly"))
        seed += 1
    assert clip_domain(clips[0]) == "source" and clip_domain(clips[-1]) == "target"

    pooled = evaluate(clips, REFERENCE_PRESET, folds=2, repeats=1)
    within = evaluate(clips, REFERENCE_PRESET, folds=2, repeats=1, condition="domain")
    assert within.preset.name == "reference by domain" and within.groups[0].split_by_condition
    assert not pooled.groups[0].split_by_condition
    assert all(f.threshold_rule.startswith("within domain") for f in within.groups[0].folds)
    assert pooled.groups[0].auc < 0.8 and within.groups[0].auc == 1.0
    with pytest.raises(ValueError, match="unknown condition"):
        evaluate(clips, REFERENCE_PRESET, condition="rpm")

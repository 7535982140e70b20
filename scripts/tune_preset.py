"""Compare candidate presets on the shared clips; prints one JSON line per candidate.

Used to choose ``DEFAULT_PRESET`` in detectors/evaluate.py (docs/evaluation.md records the
results). Usage: python scripts/tune_preset.py [MANIFEST] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

from detectors.evaluate import (
    DEFAULT_PRESET,
    REFERENCE_PRESET,
    ClipEmbedder,
    Preset,
    evaluate,
    load_clips,
)

LOGMEL = dict(REFERENCE_PRESET.embedder)


def candidates() -> list[Preset]:
    ref = REFERENCE_PRESET
    out = [ref, DEFAULT_PRESET]

    def add(name, pooling=None, **kw):
        emb = dict(LOGMEL, **kw.pop("embedder", {}))
        if pooling:
            emb["pooling"] = pooling
        out.append(replace(ref, name=name, embedder=emb, **kw))

    add("mean+std+max", ["mean", "std", "max"])
    add("mean+std+dstd", ["mean", "std", "dstd"])
    add("mean+std+max+dstd", ["mean", "std", "max", "dstd"])
    add("mean+std+p10+p90", ["mean", "std", "p10", "p90"])
    add("mean+std agg=max", aggregate="max")
    add("mean+std agg=p90", aggregate="p90")
    add("mean+std k=1", k=1)
    add("mean+std k=10", k=10)
    add("mean+std cosine", metric="cosine")
    add("mean+std no-z", standardize=False)
    add("mean+std 64 mels", embedder={"n_mels": 64})
    add("mean+std win=2s", window_seconds=2.0, hop_seconds=1.0)
    add("mean+std win=0.5s", window_seconds=0.5, hop_seconds=0.25)
    add(
        "mean+std+max+dstd win=2s",
        ["mean", "std", "max", "dstd"],
        window_seconds=2.0,
        hop_seconds=1.0,
    )
    add("mean+std mix", channel="mix")
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("manifest", nargs="?", default="../shared/data/machine-audio/manifest.csv")
    parser.add_argument("--only", nargs="*")
    args = parser.parse_args()
    clips = load_clips(args.manifest)
    embedders: dict[str, ClipEmbedder] = {}
    for preset in candidates():
        if args.only and preset.name not in args.only:
            continue
        key = json.dumps(
            [preset.embedder, preset.window_seconds, preset.hop_seconds, preset.channel],
            sort_keys=True,
        )
        embed = embedders.setdefault(key, ClipEmbedder(preset))
        t0 = time.perf_counter()
        res = evaluate(clips, preset, embed=embed)
        row = {
            "preset": preset.name,
            "mean_auc": round(res.mean_auc, 4),
            "mean_pauc": round(res.mean_pauc, 4),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        for g in res.groups:
            row[f"{g.dataset[:9]}/{g.machine_type}/{g.section}"] = round(g.auc, 3)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()

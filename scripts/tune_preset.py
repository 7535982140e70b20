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
    """Every configuration tried while choosing the default, in the order they were tried."""
    ref = REFERENCE_PRESET
    out = [ref, DEFAULT_PRESET]
    f4 = ["mean", "std", "max", "dstd"]
    w2 = {"window_seconds": 2.0, "hop_seconds": 1.0}
    w5 = {"window_seconds": 5.0, "hop_seconds": 1.0}

    def add(name, pooling=None, embedder=None, **kw):
        emb = dict(LOGMEL, **(embedder or {}))
        if pooling:
            emb["pooling"] = pooling
        out.append(replace(ref, name=name, embedder=emb, **kw))

    # Pooling, aggregation, k, metric, scaling and front end at the reference's 1 s window.
    add("ms+max", ["mean", "std", "max"])
    add("ms+dstd", ["mean", "std", "dstd"])
    add("F4=ms+max+dstd", f4)
    add("ms+p10+p90", ["mean", "std", "p10", "p90"])
    add("ms agg=max", aggregate="max")
    add("ms agg=p90", aggregate="p90")
    add("ms k=1", k=1)
    add("ms k=10", k=10)
    add("ms cosine", metric="cosine")
    add("ms no-z", standardize=False)
    add("ms 64 mels", embedder={"n_mels": 64})
    add("ms mix", channel="mix")
    # Window length.
    add("ms w0.5", window_seconds=0.5, hop_seconds=0.25)
    add("ms w2", **w2)
    add("F4 w2 h0.5", f4, window_seconds=2.0, hop_seconds=0.5)
    add("F4 w2", f4, **w2)
    add("F4 w3", f4, window_seconds=3.0, hop_seconds=1.0)
    add("F4 w4", f4, window_seconds=4.0, hop_seconds=1.0)
    add("ms w5", **w5)
    add("F4 w5", f4, **w5)
    add("F4 w5 h2.5", f4, window_seconds=5.0, hop_seconds=2.5)
    add("F4 w8", f4, window_seconds=8.0, hop_seconds=1.0)
    # Around F4 at 2 s and 5 s.
    add("F4 w2 nfft2048 256mels", f4, {"n_fft": 2048, "hop_length": 512, "n_mels": 256}, **w2)
    add("F4+min w2", f4 + ["min"], **w2)
    add("F4 w2 no-z", f4, standardize=False, **w2)
    add("F4 w2 k3", f4, k=3, **w2)
    add("F4 w2 k10", f4, k=10, **w2)
    add("F4 w5 k1", f4, k=1, **w5)
    add("F4 w5 k3", f4, k=3, **w5)
    add("F4 w5 k10", f4, k=10, **w5)
    add("F4 w5 agg=max", f4, aggregate="max", **w5)
    add("F4 w5 64 mels", f4, {"n_mels": 64}, **w5)
    add("F4+p10+p90 w5", f4 + ["p10", "p90"], **w5)
    add("mean+max+dstd w5", ["mean", "max", "dstd"], **w5)
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

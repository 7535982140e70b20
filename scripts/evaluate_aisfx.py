"""The aisfx embedder on the dev clips: alone, and in an ensemble with the default log-mel.

Same protocol and same run as ``humwatch evaluate`` (``detectors.evaluate.evaluate``, 5 folds x
3 repeats per group); prints a markdown table of AUC/pAUC per group for each preset and writes
every result as JSON. Embeddings are cached per (embedder, window, hop) under ``--cache``, so a
rerun only scores. The aisfx weights come from ``humwatch models fetch aisfx``.

    nice -n 10 python scripts/evaluate_aisfx.py \\
        --manifest ../shared/data/machine-audio/manifest.csv \\
        --model-dir ~/.cache/humwatch/models/aisfx

The aisfx vectors are embedded once per window with ``pooling="mean+max"`` (mean over time,
then max over time: 1024 values); the ``max`` (original) and ``mean`` presets use the halves.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from detectors.embedders import build_embedder
from detectors.ensemble import EnsembleBaseline
from detectors.evaluate import (
    DEFAULT_PRESET,
    REFERENCE_PRESET,
    Clip,
    EvaluationResult,
    Preset,
    _folds,
    evaluate,
    group_clips,
    load_clips,
    markdown_table,
    plan_group,
)
from detectors.pipeline import embed_audio

POOL_SLICES = {"mean": slice(0, 512), "max": slice(512, 1024), "mean+max": slice(0, 1024)}


class CachedEmbeddings:
    """Clip -> ``(n_windows, dim)`` vectors of one embedder spec and window, cached on disk."""

    def __init__(self, spec: dict, window: float, hop: float, channel, cache_dir: Path):
        self.spec, self.window, self.hop, self.channel = spec, window, hop, channel
        where = {k: v for k, v in spec.items() if k != "model_dir"}  # same weights, any place
        key = json.dumps([where, window, hop, str(channel)], sort_keys=True)
        self.path = cache_dir / f"{spec['name']}-{hashlib.sha1(key.encode()).hexdigest()[:12]}.npz"
        self.vectors: dict[str, np.ndarray] = {}
        if self.path.is_file():
            with np.load(self.path) as npz:
                self.vectors = {k: npz[k] for k in npz.files}
        self._embedder = None

    def fill(self, clips: list[Clip]) -> None:
        todo = [c for c in clips if str(c.path) not in self.vectors]
        if not todo:
            return
        self._embedder = self._embedder or build_embedder(self.spec)
        start = time.perf_counter()
        for i, clip in enumerate(todo, 1):
            out = embed_audio(clip.path, self._embedder, self.window, self.hop, self.channel)
            self.vectors[str(clip.path)] = out.vectors
            if i % 50 == 0 or i == len(todo):
                took = time.perf_counter() - start
                print(f"  {self.path.name}: {i}/{len(todo)} clips, {took:.0f} s", flush=True)
                np.savez(self.path, **self.vectors)

    def view(self, columns: slice = slice(None)):
        return lambda clip: self.vectors[str(clip.path)][:, columns]


@dataclass(frozen=True)
class EnsemblePreset:
    """Two presets' windows scored by their own kNN baselines, normalised and averaged."""

    name: str
    members: tuple[Preset, ...]
    dims: tuple[int, ...]
    normalize: str = "threshold"
    combine: str = "mean"
    aggregate: str = "mean"

    def baseline(self) -> EnsembleBaseline:
        return EnsembleBaseline(
            [p.baseline() for p in self.members],
            list(self.dims),
            normalize=self.normalize,
            combine=self.combine,
        )


def aligned(*embeds):
    """Concatenate the window vectors of several embeddings (same windows) column-wise."""

    def embed(clip: Clip) -> np.ndarray:
        parts = [e(clip) for e in embeds]
        n = min(len(p) for p in parts)
        if any(len(p) != n for p in parts):
            raise ValueError(f"{clip.path}: members cut {[len(p) for p in parts]} windows")
        return np.concatenate(parts, axis=1)

    return embed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", default="../shared/data/machine-audio/manifest.csv")
    parser.add_argument("--root", default=None)
    parser.add_argument("--model-dir", default=str(Path("~/.cache/humwatch/models/aisfx")))
    parser.add_argument("--cache", default="/tmp/humwatch-aisfx-cache")
    parser.add_argument("--windows", default="2:1,5:1", help="window:hop seconds, comma-separated")
    parser.add_argument("--poolings", default="mean,max", help="aisfx poolings alone (mean+max)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default="aisfx-evaluation.json")
    parser.add_argument("--markdown", default=None, help="also write the table here")
    parser.add_argument("--embed-only", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cache_dir = Path(args.cache)
    cache_dir.mkdir(parents=True, exist_ok=True)
    clips = load_clips(args.manifest, args.root)
    model_dir = str(Path(args.model_dir).expanduser())

    default = DEFAULT_PRESET
    logmel = CachedEmbeddings(
        default.embedder, default.window_seconds, default.hop_seconds, default.channel, cache_dir
    )
    ref = REFERENCE_PRESET
    reference = CachedEmbeddings(
        ref.embedder, ref.window_seconds, ref.hop_seconds, ref.channel, cache_dir
    )
    print("embedding log-mel (default, reference)")
    logmel.fill(clips)
    reference.fill(clips)
    aisfx_spec = {"name": "aisfx", "model_dir": model_dir, "pooling": "mean+max"}
    aisfx = {}
    for item in args.windows.split(","):
        window, hop = (float(x) for x in item.split(":"))
        print(f"embedding aisfx, window {window:g} s, hop {hop:g} s")
        aisfx[(window, hop)] = CachedEmbeddings(aisfx_spec, window, hop, "mix", cache_dir)
        aisfx[(window, hop)].fill(clips)
    if args.embed_only:
        return

    runs: list[tuple[object, object]] = [
        (default, logmel.view()),
        (ref, reference.view()),
    ]
    for (window, hop), cached in aisfx.items():
        for pooling in args.poolings.split(","):
            cols = POOL_SLICES[pooling]
            spec = {"name": "aisfx", "pooling": pooling}
            base = Preset(
                name=f"aisfx w{window:g} {pooling} z-euclid",
                embedder=spec,
                window_seconds=window,
                hop_seconds=hop,
                k=5,
                metric="euclidean",
                standardize=True,
                channel="mix",
            )
            runs.append((base, cached.view(cols)))
            runs.append(
                (
                    replace(
                        base,
                        name=f"aisfx w{window:g} {pooling} cosine",
                        metric="cosine",
                        standardize=False,
                    ),
                    cached.view(cols),
                )
            )
        if (window, hop) == (default.window_seconds, default.hop_seconds):
            # aisfx "mean" pooling (the better one alone), each metric, each normalisation and
            # combination; the log-mel member is the default preset unchanged.
            member = Preset(
                name="aisfx mean",
                embedder={"name": "aisfx", "pooling": "mean"},
                window_seconds=window,
                hop_seconds=hop,
                channel="mix",
            )
            embed = aligned(logmel.view(), cached.view(POOL_SLICES["mean"]))
            for metric, z, label in (("euclidean", True, "z-euclid"), ("cosine", False, "cosine")):
                for norm in ("threshold", "zscore"):
                    for combine in ("mean", "max"):
                        ens = EnsemblePreset(
                            name=f"ensemble default+aisfx w{window:g} {label} {norm} {combine}",
                            members=(default, replace(member, metric=metric, standardize=z)),
                            dims=(default_dim(logmel), 512),
                            normalize=norm,
                            combine=combine,
                        )
                        runs.append((ens, embed))

    results: list[EvaluationResult] = []
    tails: list[dict] = []
    for preset, embed in runs:
        start = time.perf_counter()
        result = evaluate(clips, preset, embed=embed)
        results.append(result)
        tails.append(tail_detection(clips, preset, embed))
        print(
            f"{preset.name:55s} AUC {result.mean_auc:.3f} pAUC {result.mean_pauc:.3f} "
            f"TPR@1%FPR(window) {tails[-1]} ({time.perf_counter() - start:.0f} s)",
            flush=True,
        )
    table = markdown_table(results) + "\n\n" + summary_table(results, tails)
    print()
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
    out = []
    for r, tail in zip(results, tails, strict=True):
        preset = asdict(r.preset) if isinstance(r.preset, Preset) else {"name": r.preset.name}
        out.append(
            {
                "preset": preset,
                "mean_auc": round(r.mean_auc, 4),
                "mean_pauc": round(r.mean_pauc, 4),
                "window_tpr_at_1pct_fpr": tail,
                "groups": [g.summary() for g in r.groups],
            }
        )
    Path(args.json).write_text(json.dumps(out, indent=1))


TAIL_GROUPS = (("dcase2023_task2_dev", "valve", "section_00"), ("mimii", "fan", "id_00"))


def tail_detection(clips, preset, embed, false_alarm=0.01, folds=5, repeats=3) -> dict:
    """Best achievable window detection rate at ``false_alarm`` window false alarms.

    The same folds as ``evaluate``; the threshold is set on the held-out normal windows
    themselves, so this shows separability apart from calibration. Mean over folds.
    """
    out = {}
    for key, members in group_clips(clips).items():
        if key not in TAIL_GROUPS:
            continue
        n_folds, _ = plan_group(members, folds)
        normals = [c for c in members if c.label == "normal" and c.split != "train"]
        train = [c for c in members if c.label == "normal" and c.split == "train"]
        anomalies = np.concatenate([embed(c) for c in members if c.label == "anomaly"])
        rates = []
        for r in range(repeats):
            for held in _folds(len(normals), n_folds, r):
                held_set = set(held.tolist())
                base = train + [c for i, c in enumerate(normals) if i not in held_set]
                vectors = [embed(c) for c in base]
                groups = np.concatenate([np.full(len(v), i) for i, v in enumerate(vectors)])
                model = preset.baseline().fit(np.concatenate(vectors), groups=groups)
                normal_scores = model.decision_function(
                    np.concatenate([embed(normals[i]) for i in held])
                )
                threshold = np.quantile(normal_scores, 1.0 - false_alarm, method="higher")
                rates.append(float((model.decision_function(anomalies) > threshold).mean()))
        out[" ".join(key[1:])] = round(float(np.mean(rates)), 4)
    return out


def summary_table(results: list[EvaluationResult], tails: list[dict]) -> str:
    """Mean AUC/pAUC and the window detection rate at 1 % false alarms, one row per preset."""
    names = [" ".join(k[1:]) for k in TAIL_GROUPS]
    lines = [
        "| preset | mean AUC | mean pAUC | "
        + " | ".join(f"{n}: TPR at 1 % window FPR" for n in names)
        + " |",
        "|---|---:|---:|" + "---:|" * len(names),
    ]
    for r, tail in zip(results, tails, strict=True):
        cells = " | ".join(f"{tail.get(n, float('nan')):.3f}" for n in names)
        lines.append(f"| {r.preset.name} | {r.mean_auc:.3f} | {r.mean_pauc:.3f} | {cells} |")
    return "\n".join(lines)


def default_dim(cached: CachedEmbeddings) -> int:
    return next(iter(cached.vectors.values())).shape[1]


if __name__ == "__main__":
    main()

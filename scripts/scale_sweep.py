"""Experiment: how each dimension is scaled before the whitening (one scale at a time).

The `per-dimension` preset (the default before the two-space baseline) z-scores every
dimension on its own before the principal-component whitening.
This sweep replaces that scale, for whitened baselines only (small baselines keep plain
z-scoring), by a mix of the dimension's standard deviation and the RMS standard deviation of
its statistic block (the 128 bands of one log-mel statistic: mean, std, max or dstd):

- ``lin:L``: ``scale = sqrt((1 - L) std**2 + L * block_rms**2)``
- ``geo:L``: ``scale = std**(1 - L) * block_rms**L``
- ``floor:F``: ``scale = max(std, F * block_rms)``

and reports, for each, the dev clips (mean AUC / pAUC, and on the two groups with 20+
normals AUC, pAUC, window FAR at the calibrated threshold and the best detection at 1 %
window false alarms) and the simulated new-run protocol over seeds 0-2 (10 new runs):
FAR and detection at severity 0.3 and 0.6, with ``--per-fault`` the detection at 0.3 per
kind and fault.

    python scripts/scale_sweep.py ../shared/data/machine-audio/manifest.csv \
        lin:0 lin:0.5 lin:1 geo:0.5 --per-fault

``lin:0`` is the `per-dimension` preset. The library is patched in this process only
(``detectors.baseline`` looks ``fit_transform`` up at call time).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import detectors.baseline as baseline_module
from detectors import transform as T
from detectors.evaluate import ClipEmbedder, evaluate, load_clips
from detectors.evaluate_simulated import SimulatedProtocol, evaluate_simulated
from detectors.presets import PRESETS

ORIGINAL = T.fit_transform


def block_scaled(how: str, mix: float, block: int):
    """A ``fit_transform`` whose whitened transforms scale dimensions as ``how:mix`` says."""

    def fit_transform(
        vectors, standardize, whiten, random_state=0, residual=False, n_components=None
    ):
        fitted = ORIGINAL(vectors, standardize, whiten, random_state, residual, n_components)
        if whiten is None or not standardize or mix == 0:
            return fitted
        x = np.asarray(vectors, dtype=np.float64)
        std = np.maximum(
            x.std(axis=0), T.MIN_SCALE_FRACTION * max(float(x.std(axis=0).mean()), 1e-12)
        )
        rms = np.repeat(np.sqrt(np.mean((std**2).reshape(-1, block), axis=1)), block)
        if how == "lin":
            scale = np.sqrt((1 - mix) * std**2 + mix * rms**2)
        elif how == "floor":
            scale = np.maximum(std, mix * rms)
        else:
            scale = std ** (1 - mix) * rms**mix
        eigenvalues, components = T._principal_components((x - x.mean(axis=0)) / scale)
        share = np.cumsum(eigenvalues) / max(float(eigenvalues.sum()), 1e-12)
        wanted = int(np.searchsorted(share, whiten) + 1) if n_components is None else n_components
        keep = max(1, min(wanted, eigenvalues.size))
        floor = T.MIN_EIGENVALUE * max(float(eigenvalues[0]), 1e-12)
        projection = components[:, :keep] / np.sqrt(np.maximum(eigenvalues[:keep], floor))
        return T.FeatureTransform(
            fitted.mean, scale.astype(np.float32), projection.astype(np.float32)
        )

    return fit_transform


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifest", type=Path)
    parser.add_argument("configs", nargs="+", help="lin:L, geo:L or floor:F")
    parser.add_argument("--block", type=int, default=128, help="dimensions per statistic block")
    parser.add_argument("--per-fault", action="store_true")
    args = parser.parse_args()
    preset = PRESETS["per-dimension"]  # the sweep patches its one space
    clips = load_clips(args.manifest)
    embed = ClipEmbedder(preset)
    caches: dict[int, dict] = {seed: {} for seed in (0, 1, 2)}
    for config in args.configs:
        how, _, mix = config.partition(":")
        baseline_module.fit_transform = block_scaled(how, float(mix), args.block)
        dev = evaluate(clips, preset, embed=embed)
        large = [
            f"{g.machine_type} {g.section}: AUC {g.auc:.3f} pAUC {g.pauc:.3f} "
            f"FAR {g.mean_of('far'):.4f} best@1% {g.mean_of('best_det_at_1pct'):.3f}"
            for g in dev.groups
            if g.normals >= 20
        ]
        fars, det3, det6, per_fault = [], [], [], {}
        for seed in (0, 1, 2):
            sim = evaluate_simulated(
                preset, SimulatedProtocol(seed=seed, new_runs=10), cache=caches[seed]
            )
            fars.append(np.mean([np.mean(k.far_per_run) for k in sim.kinds]))
            det3.append(np.mean([np.mean([k.det[f]["0.3"] for f in k.det]) for k in sim.kinds]))
            det6.append(np.mean([np.mean([k.det[f]["0.6"] for f in k.det]) for k in sim.kinds]))
            for k in sim.kinds:
                for f in k.det:
                    per_fault.setdefault((k.kind, f), []).append(k.det[f]["0.3"])
        print(
            f"{config}: dev mean AUC {dev.mean_auc:.3f} pAUC {dev.mean_pauc:.3f}; "
            + "; ".join(large)
            + f" | sim FAR {np.mean(fars):.4f} det@0.3 {np.mean(det3):.3f}"
            + f" det@0.6 {np.mean(det6):.3f}",
            flush=True,
        )
        if args.per_fault:
            for (kind, fault), values in sorted(per_fault.items()):
                print(f"    {kind} {fault} det@0.3 {np.mean(values):.2f}")
    baseline_module.fit_transform = ORIGINAL


if __name__ == "__main__":
    main()

"""A trial, not the default: band smoothing plus a band-outlier score (docs/evaluation.md, round 9).

``smooth3+band`` is the default preset with ``band_smoothing: 3`` in its embedder spec and a
third score beside its two whitened spaces: the mean of a window's ``TOP`` largest |z| per
dimension (z against the baseline's own mean and standard deviation), calibrated by the
same leave-run-out folds (mean and deviation refitted without each held-out run), each
score divided by its threshold and the largest ratio taken, the combined threshold
recalibrated on the combined leave-run-out ratios. ``band`` is the same without smoothing
(round 5's score), ``smooth3`` smoothing alone (round 7). The class lives here, outside
``detectors/``: nothing in the service can build or store it.

    python scripts/band_outlier_trial.py sim smooth3+band --seed 0 --seed 1 --seed 2
    python scripts/band_outlier_trial.py fleet smooth3+band --seed 0
    python scripts/band_outlier_trial.py clips smooth3+band
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, replace

import numpy as np

from detectors.baseline import KNNBaseline
from detectors.calibrate import (
    MAX_CALIBRATION_QUERIES,
    calibrate_threshold,
    leave_group_out_scores,
)
from detectors.presets import DEFAULT_PRESET, Preset

TOP = 4  # dimensions averaged per window (round 5's best)


def _stats(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and standard deviation ``(dim,)``, the deviation floored at 5 % of
    its median (a silent band would otherwise divide by zero)."""
    sd = vectors.std(axis=0)
    return vectors.mean(axis=0), np.maximum(sd, max(float(np.median(sd)) * 0.05, 1e-6))


def band_scores(mean: np.ndarray, sd: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """``(m, dim)`` -> ``(m,)``: the mean of each row's ``TOP`` largest |z|."""
    z = np.abs((vectors - mean) / sd)
    return np.partition(z, -TOP, axis=1)[:, -TOP:].mean(axis=1)


class BandOutlierBaseline(KNNBaseline):
    """``KNNBaseline`` (one or two spaces) plus the band-outlier score, larger ratio wins."""

    def fit(self, vectors: np.ndarray, groups: np.ndarray | None = None) -> BandOutlierBaseline:
        super().fit(vectors, groups)
        vectors = np.asarray(vectors, np.float32)
        ids = (  # as KNNBaseline.fit numbers the runs
            np.arange(len(vectors))
            if groups is None
            else np.unique(np.asarray(groups), return_inverse=True)[1].astype(np.int64)
        )

        def fit_without(train: np.ndarray):
            mean, sd = _stats(vectors[train])
            return lambda queries: band_scores(mean, sd, queries)

        loo, loo_groups = leave_group_out_scores(
            vectors,
            ids,
            fit_without,
            MAX_CALIBRATION_QUERIES,
            self.max_calibration_folds,
            self.random_state,
        )
        assert np.array_equal(loo_groups, self.loo_groups_), "calibration folds differ"
        self.band_threshold_, _ = calibrate_threshold(loo, loo_groups, self.false_alarm_rate)
        self.knn_threshold_ = float(self.threshold_)
        self.band_mean_, self.band_sd_ = _stats(vectors)
        self.loo_scores_ = np.maximum(
            self.loo_scores_ / self.knn_threshold_, loo / self.band_threshold_
        ).astype(np.float32)
        self.threshold_, self.threshold_method_ = calibrate_threshold(
            self.loo_scores_, loo_groups, self.false_alarm_rate
        )
        return self

    def decision_function(self, vectors: np.ndarray) -> np.ndarray:
        knn = super().decision_function(vectors) / self.knn_threshold_
        band = band_scores(self.band_mean_, self.band_sd_, np.asarray(vectors, np.float32))
        return np.maximum(knn, band / self.band_threshold_).astype(np.float32)


@dataclass(frozen=True)
class BandOutlierPreset(Preset):
    def baseline(self) -> BandOutlierBaseline:
        return BandOutlierBaseline(**super().baseline().get_params())


SMOOTH3 = replace(
    DEFAULT_PRESET, name="smooth3", embedder={**DEFAULT_PRESET.embedder, "band_smoothing": 3}
)
TRIAL_PRESETS: dict[str, Preset] = {
    "default": DEFAULT_PRESET,
    "smooth3": SMOOTH3,
    "band": BandOutlierPreset(**{**DEFAULT_PRESET.__dict__, "name": "band"}),
    "smooth3+band": BandOutlierPreset(**{**SMOOTH3.__dict__, "name": "smooth3+band"}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("sim", "fleet", "clips"))
    parser.add_argument("preset", choices=sorted(TRIAL_PRESETS))
    parser.add_argument("--seed", type=int, action="append")
    parser.add_argument("--manifest", default="../shared/data/machine-audio/manifest.csv")
    args = parser.parse_args()
    preset = TRIAL_PRESETS[args.preset]
    seeds = args.seed or [0]
    if args.what == "sim":
        from detectors.evaluate_simulated import SimulatedProtocol, evaluate_simulated

        for seed in seeds:
            result = evaluate_simulated(preset, SimulatedProtocol(seed=seed))
            print(json.dumps({"preset": preset.name, "seed": seed, **result.to_dict()}))
    elif args.what == "fleet":
        from detectors.fleet import FleetConfig, evaluate_fleet

        for seed in seeds:
            figures = evaluate_fleet(FleetConfig(machines=5, days=7, seed=seed), preset=preset)
            print(json.dumps({"preset": preset.name, "seed": seed, **figures}, default=str))
    else:
        from detectors.evaluate import evaluate, load_clips

        result = evaluate(load_clips(args.manifest, None), preset)
        groups = [g.summary() for g in result.groups]
        print(
            json.dumps(
                {"preset": preset.name, "mean_auc": result.mean_auc, "groups": groups},
                default=str,
            )
        )


if __name__ == "__main__":
    main()

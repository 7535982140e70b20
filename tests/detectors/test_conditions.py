"""Baselines within an operating condition (detectors.conditions)."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.baseline import KNNBaseline
from detectors.conditions import POOLED, ConditionalBaseline

DIM = 6


def runs(centre: float, n_runs: int, per_run: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n_runs`` runs of windows around ``centre`` in every dimension, with run offsets."""
    rng = np.random.default_rng(seed)
    offsets = 0.3 * rng.standard_normal((n_runs, DIM))
    x = centre + np.repeat(offsets, per_run, axis=0) + rng.standard_normal((n_runs * per_run, DIM))
    return x.astype(np.float32), np.repeat(np.arange(n_runs), per_run)


def two_conditions():
    a, ga = runs(0.0, 6, 10, seed=1)
    b, gb = runs(8.0, 6, 10, seed=2)
    vectors = np.concatenate([a, b])
    groups = np.concatenate([ga, gb + 100])
    conditions = np.array(["a"] * len(a) + ["b"] * len(b))
    return vectors, groups, conditions


def make() -> KNNBaseline:
    return KNNBaseline(k=3, index="exact")


def test_each_condition_gets_its_own_baseline_and_scores_are_ratios():
    vectors, groups, conditions = two_conditions()
    model = ConditionalBaseline(make).fit(vectors, groups, conditions)
    assert set(model.models_) == {"a", "b"} and model.threshold_ == 1.0
    fresh, _ = runs(8.0, 2, 10, seed=3)
    own = model.models_["b"]
    np.testing.assert_allclose(
        model.decision_function(fresh, "b"),
        own.decision_function(fresh) / own.threshold_,
        rtol=1e-6,
    )


def test_a_window_normal_in_another_condition_is_flagged_in_its_own():
    # Condition b's sound played while the machine is in condition a: a pooled baseline finds
    # b's material and calls it normal; the baseline within a does not.
    vectors, groups, conditions = two_conditions()
    conditional = ConditionalBaseline(make).fit(vectors, groups, conditions)
    pooled = make().fit(vectors, groups)
    wrong, _ = runs(8.0, 2, 10, seed=4)
    assert pooled.predict(wrong).mean() < 0.2
    assert conditional.predict(wrong, "a").mean() > 0.9


def test_conditions_with_too_few_runs_and_unseen_ones_fall_back():
    vectors, groups, conditions = two_conditions()
    conditions[groups == 100] = "rare"  # one run of its own: below min_runs
    model = ConditionalBaseline(make, min_runs=4).fit(vectors, groups, conditions)
    assert "rare" not in model.models_ and POOLED in model.models_
    pooled = model.models_[POOLED]
    probe, _ = runs(8.0, 1, 5, seed=5)
    for condition in ("rare", "never seen"):
        np.testing.assert_allclose(
            model.decision_function(probe, condition),
            pooled.decision_function(probe) / pooled.threshold_,
            rtol=1e-6,
        )
    # Every condition with a baseline of its own: an unseen one gets the lowest ratio.
    full = ConditionalBaseline(make).fit(*two_conditions())
    ratios = [m.decision_function(probe) / m.threshold_ for m in full.models_.values()]
    np.testing.assert_allclose(
        full.decision_function(probe, "never seen"), np.min(ratios, axis=0), rtol=1e-6
    )


def test_mismatched_lengths_and_unfitted_use_are_refused():
    vectors, groups, conditions = two_conditions()
    with pytest.raises(ValueError, match="one entry per window"):
        ConditionalBaseline(make).fit(vectors, groups, conditions[:-1])
    with pytest.raises(ValueError, match="not fitted"):
        ConditionalBaseline(make).decision_function(vectors, "a")

"""The block-scaled second space: ``fit_transform(scale_block=...)`` and
``KNNBaseline(block_space=...)`` (two whitened spaces, max of the ratios, recalibrated)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from detectors.baseline import KNNBaseline
from detectors.calibrate import calibrate_threshold
from detectors.conditions import ConditionalBaseline, load_baseline
from detectors.index import ExactIndex
from detectors.presets import (
    DEFAULT_PRESET,
    PER_DIMENSION_PRESET,
    PRESETS,
    PREVIOUS_PRESET,
    REFERENCE_PRESET,
    stat_block,
)
from detectors.transform import MIN_SCALE_FRACTION, fit_transform

DATA = Path(__file__).parent / "data"
BLOCK = 4
DIM = 3 * BLOCK  # three "statistics" of four "bands"


def runs(n_runs: int, per_run: int, seed: int, dim: int = DIM):
    """Runs with their own offsets; the bands of each block differ in loudness (std)."""
    rng = np.random.default_rng(seed)
    loudness = np.tile(np.array([3.0, 1.0, 0.3, 0.05]), dim // BLOCK)[:dim]
    offsets = 0.5 * rng.standard_normal((n_runs, dim))
    vectors = np.repeat(offsets, per_run, axis=0) + rng.standard_normal((n_runs * per_run, dim))
    return (vectors * loudness).astype(np.float32), np.repeat(np.arange(n_runs), per_run)


def fresh(n: int, seed: int) -> np.ndarray:
    vectors, _ = runs(n, 1, seed)
    return vectors


# -- fit_transform(scale_block) ---------------------------------------------------------------


def test_block_scale_is_the_rms_of_the_floored_stds_of_its_block():
    vectors, _ = runs(10, 20, seed=1)
    vectors[:, 5] = 7.0  # a constant dimension: its std is floored before the RMS
    per_dim = fit_transform(vectors, True, 0.99)
    blocked = fit_transform(vectors, True, 0.99, scale_block=BLOCK)
    std = vectors.astype(np.float64).std(axis=0)
    floored = np.maximum(std, MIN_SCALE_FRACTION * std.mean())
    np.testing.assert_allclose(per_dim.scale, floored, rtol=1e-6)
    expected = np.repeat(np.sqrt((floored.reshape(-1, BLOCK) ** 2).mean(axis=1)), BLOCK)
    np.testing.assert_allclose(blocked.scale, expected, rtol=1e-6)
    np.testing.assert_array_equal(blocked.mean, per_dim.mean)
    # Within a block every dimension has the same scale; blocks differ.
    assert np.unique(blocked.scale).size == DIM // BLOCK


def test_block_scaled_transform_whitens_the_baseline():
    vectors, _ = runs(10, 40, seed=2)
    blocked = fit_transform(vectors, True, 0.9999, scale_block=BLOCK)
    z = blocked(vectors).astype(np.float64)
    # The kept components of the baseline itself: zero mean, unit variance, uncorrelated.
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(np.cov(z.T, bias=True), np.eye(z.shape[1]), atol=1e-3)
    # The loud band of a block stays loud relative to its quiet one before the projection.
    scaled = (vectors - blocked.mean) / blocked.scale
    assert scaled[:, 0].std() > 50 * scaled[:, 3].std()


def test_block_scaling_needs_whitening_and_standardisation():
    vectors, _ = runs(10, 20, seed=3)
    for standardize, whiten in ((True, None), (False, 0.99)):
        plain = fit_transform(vectors, standardize, whiten)
        blocked = fit_transform(vectors, standardize, whiten, scale_block=BLOCK)
        np.testing.assert_array_equal(blocked.scale, plain.scale)
        assert (blocked.projection is None) == (plain.projection is None)
        if plain.projection is not None:
            np.testing.assert_array_equal(blocked.projection, plain.projection)


@pytest.mark.parametrize("block", [5, 0, -4, 13])
def test_block_that_does_not_divide_the_dimension_is_a_clear_error(block):
    vectors, _ = runs(10, 20, seed=4)
    with pytest.raises(ValueError, match="scale_block must be a positive divisor"):
        fit_transform(vectors, True, 0.99, scale_block=block)


def test_block_scaled_refit_keeps_a_given_component_count():
    vectors, groups = runs(12, 3, seed=5, dim=64 * 2)
    vectors = vectors * np.linspace(3.0, 0.1, vectors.shape[1]).astype(np.float32)
    full = fit_transform(vectors, True, 0.99, scale_block=64)
    refit = fit_transform(
        vectors[groups != 0], True, 0.99, n_components=full.n_components, scale_block=64
    )
    assert refit.n_components == full.n_components


# -- KNNBaseline(block_space) -------------------------------------------------------------------


def assert_identical(a: KNNBaseline, b: KNNBaseline, queries: np.ndarray) -> None:
    assert a.threshold_ == b.threshold_
    assert a.threshold_method_ == b.threshold_method_
    for name in ("loo_scores_", "loo_groups_", "vectors_", "mean_", "scale_"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and np.array_equal(x, y), name
    sa, sb = a.decision_function(queries), b.decision_function(queries)
    assert sa.dtype == sb.dtype and np.array_equal(sa, sb)


@pytest.mark.parametrize("index", ["exact", "nndescent"])
def test_fewer_runs_than_whiten_min_runs_is_todays_single_space_bit_for_bit(index):
    vectors, groups = runs(6, 30, seed=10)  # 6 runs < whiten_min_runs (8): not whitened
    kw = dict(k=3, whiten=0.99, index=index, false_alarm_rate=0.05)
    single = KNNBaseline(**kw).fit(vectors, groups)
    asked = KNNBaseline(**kw, block_space=BLOCK).fit(vectors, groups)
    assert not asked.whitened_ and not asked.dual_
    assert not hasattr(asked, "block_transform_")
    assert_identical(asked, single, fresh(40, seed=11))
    assert asked.primary_threshold_ == asked.threshold_


def test_block_space_none_is_todays_whitened_single_space():
    vectors, groups = runs(10, 20, seed=12)
    single = KNNBaseline(k=3, whiten=0.99, index="exact").fit(vectors, groups)
    assert single.whitened_ and not single.dual_
    assert single.primary_threshold_ == single.threshold_
    assert "spaces" not in single.threshold_method_


@pytest.fixture(scope="module")
def dual_and_single():
    vectors, groups = runs(12, 25, seed=20)
    kw = dict(k=3, whiten=0.99, index="exact", false_alarm_rate=0.05)
    dual = KNNBaseline(**kw, block_space=BLOCK).fit(vectors, groups)
    single = KNNBaseline(**kw).fit(vectors, groups)
    return dual, single, vectors, groups


def test_primary_space_is_the_single_space_baseline(dual_and_single):
    dual, single, _, _ = dual_and_single
    assert dual.dual_ and dual.whitened_
    # transform_, vectors_, index_ (explanations, review neighbours) are the per-dimension space.
    np.testing.assert_array_equal(dual.vectors_, single.vectors_)
    np.testing.assert_array_equal(dual.transform_.projection, single.transform_.projection)
    assert dual.primary_threshold_ == single.threshold_
    np.testing.assert_array_equal(dual.space_loo_scores_[:, 0], single.loo_scores_)
    np.testing.assert_array_equal(dual.loo_groups_, single.loo_groups_)
    q = fresh(30, seed=21)
    np.testing.assert_array_equal(dual.kneighbors(q)[0], single.kneighbors(q)[0])


def test_block_space_calibration_refits_without_the_held_out_run(dual_and_single):
    dual, _, vectors, groups = dual_and_single
    held = groups == 3
    transform = fit_transform(
        vectors[~held],
        True,
        0.99,
        n_components=dual.block_transform_.n_components,
        scale_block=BLOCK,
    )
    index = ExactIndex(transform(vectors[~held]), "euclidean")
    expected = index.query(transform(vectors[held]), 3)[0].mean(axis=1)
    got = dual.space_loo_scores_[dual.loo_groups_ == 3, 1]
    np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_window_score_is_the_larger_ratio_and_the_threshold_is_recalibrated(dual_and_single):
    dual, single, _, _ = dual_and_single
    q = fresh(50, seed=22)
    q[::3, 3] += 1.0  # a quiet band moves: large for its own std, small for its block's
    primary = single.decision_function(q) / single.threshold_
    z = dual.block_transform_(q)
    block = dual.block_index_.query(z, 3)[0].mean(axis=1) / dual.block_threshold_
    np.testing.assert_allclose(dual.decision_function(q), np.maximum(primary, block), rtol=1e-5)
    ratios = np.maximum(
        dual.space_loo_scores_[:, 0] / dual.primary_threshold_,
        dual.space_loo_scores_[:, 1] / dual.block_threshold_,
    )
    np.testing.assert_allclose(dual.loo_scores_, ratios, rtol=1e-6)
    threshold, method = calibrate_threshold(dual.loo_scores_, dual.loo_groups_, 0.05)
    assert dual.threshold_ == threshold
    # Two spaces, each above its own threshold somewhere: the combined threshold is above 1.
    assert dual.threshold_ > 1.0
    tm = dual.threshold_method_
    assert tm["rule"] == method["rule"] and tm["whitened"] is True
    assert "max" in tm["combine"]
    spaces = {s["space"]: s for s in tm["spaces"]}
    assert set(spaces) == {"per-dimension", "block"}
    assert spaces["block"]["block"] == BLOCK
    assert spaces["per-dimension"]["threshold"] == dual.primary_threshold_
    assert spaces["block"]["threshold"] == dual.block_threshold_
    assert all(s["rule"] in ("group_quantile", "run_effects_t") for s in tm["spaces"])
    assert dual.predict(q).tolist() == (dual.decision_function(q) > dual.threshold_).tolist()


def test_dual_false_alarms_stay_near_the_target_on_new_runs():
    far, rates = 0.05, []
    for seed in range(6):
        vectors, groups = runs(24, 20, seed=300 + seed)
        model = KNNBaseline(k=5, whiten=0.99, false_alarm_rate=far, block_space=BLOCK)
        model.fit(vectors, groups)
        assert model.dual_
        rates.append(model.predict(runs(40, 20, seed=900 + seed)[0]).mean())
    assert 0.3 * far <= float(np.mean(rates)) <= 2.0 * far


def test_approximate_index_flags_exactly_what_exact_search_flags_in_both_spaces():
    vectors, groups = runs(100, 30, seed=30)
    kw = dict(k=5, whiten=0.99, false_alarm_rate=0.05, block_space=BLOCK)
    exact = KNNBaseline(index="exact", **kw).fit(vectors, groups)
    approx = KNNBaseline(index="nndescent", **kw).fit(vectors, groups)
    assert approx.block_index_.kind == "nndescent" and approx.index_.kind == "nndescent"
    assert approx.threshold_ == pytest.approx(exact.threshold_, rel=1e-5)
    q = fresh(1500, seed=31)
    q[::2] *= 1.3
    s_exact, s_approx = exact.decision_function(q), approx.decision_function(q)
    assert np.all(s_approx >= s_exact * (1 - 1e-5))
    above = s_approx > approx.threshold_
    np.testing.assert_allclose(s_approx[above], s_exact[above], rtol=1e-5)
    assert 0.0 < above.mean() < 1.0


def test_block_space_must_divide_the_dimension():
    vectors, groups = runs(10, 20, seed=40)
    with pytest.raises(ValueError, match="block_space must be a positive divisor"):
        KNNBaseline(whiten=0.99, block_space=5).fit(vectors, groups)


def test_identical_vectors_keep_one_space():
    vectors = np.ones((200, DIM), np.float32)
    model = KNNBaseline(whiten=0.99, block_space=BLOCK).fit(vectors, np.repeat(np.arange(10), 20))
    assert not model.dual_ and model.threshold_ == 0.0
    assert model.threshold_method_["rule"] == "degenerate"


# -- persistence ---------------------------------------------------------------------------


def test_dual_round_trip_scores_identically_and_keeps_params(dual_and_single):
    dual, _, _, _ = dual_and_single
    loaded = KNNBaseline.from_bytes(dual.to_bytes())
    assert loaded.get_params() == dual.get_params() and loaded.block_space == BLOCK
    assert loaded.dual_
    q = fresh(40, seed=50)
    np.testing.assert_array_equal(loaded.decision_function(q), dual.decision_function(q))
    assert (loaded.threshold_, loaded.primary_threshold_, loaded.block_threshold_) == (
        dual.threshold_,
        dual.primary_threshold_,
        dual.block_threshold_,
    )
    assert loaded.threshold_method_ == dual.threshold_method_
    np.testing.assert_array_equal(loaded.space_loo_scores_, dual.space_loo_scores_)
    np.testing.assert_array_equal(loaded.loo_scores_, dual.loo_scores_)


def test_single_space_round_trip_stays_single(dual_and_single):
    _, single, _, _ = dual_and_single
    loaded = KNNBaseline.from_bytes(single.to_bytes())
    assert not loaded.dual_ and loaded.primary_threshold_ == single.threshold_
    q = fresh(20, seed=51)
    np.testing.assert_array_equal(loaded.decision_function(q), single.decision_function(q))


def test_version_2_artifact_written_before_block_space_loads_and_scores_as_before():
    # Written by the code of main before block_space (data/make_knn_v2_whitened.py).
    with np.load(DATA / "knn_v2_whitened.npz") as data:
        blob, queries = data["artifact"].tobytes(), data["queries"]
        scores, threshold = data["scores"], float(data["threshold"])
    model = KNNBaseline.from_bytes(blob)
    assert model.whitened_ and not model.dual_ and model.block_space is None
    assert model.threshold_ == threshold == model.primary_threshold_
    # The same computation on the stored arrays; the scores were written on another CPU, whose
    # float32 matrix products may round the last bit differently (1 ulp seen on AMD EPYC).
    now = model.decision_function(queries)
    np.testing.assert_allclose(now, scores, rtol=1e-6, atol=0)
    # Written again, it is a single-space artifact of the current version with the same scores.
    again = KNNBaseline.from_bytes(model.to_bytes())
    np.testing.assert_array_equal(again.decision_function(queries), now)


def test_conditional_baseline_passes_block_space_through():
    vectors, groups = runs(20, 15, seed=60)
    conditions = np.where(groups % 2 == 0, "a", "b")
    model = ConditionalBaseline(
        lambda: KNNBaseline(k=3, whiten=0.99, block_space=BLOCK), min_runs=8
    ).fit(vectors, groups, conditions)
    assert set(model.models_) == {"a", "b"}
    assert all(m.dual_ for m in model.models_.values())
    loaded = load_baseline(model.to_bytes())
    assert all(m.dual_ and m.block_space == BLOCK for m in loaded.models_.values())
    q = fresh(20, seed=61)
    np.testing.assert_array_equal(loaded.decision_function(q, "a"), model.decision_function(q, "a"))
    assert loaded.make_baseline().block_space == BLOCK


# -- presets ------------------------------------------------------------------------------------


def test_default_preset_scores_in_two_spaces_of_its_statistic_blocks():
    spec = DEFAULT_PRESET.embedder
    assert DEFAULT_PRESET.block_space == spec["n_mels"] == stat_block(spec) == 128
    assert DEFAULT_PRESET.baseline().block_space == 128
    # The per-dimension preset is the default of before, otherwise the same.
    assert PER_DIMENSION_PRESET.block_space is None
    assert {**vars(PER_DIMENSION_PRESET), "name": "default", "block_space": 128} == vars(
        DEFAULT_PRESET
    )
    assert PRESETS["per-dimension"] is PER_DIMENSION_PRESET
    assert PREVIOUS_PRESET.block_space is None and REFERENCE_PRESET.block_space is None
    assert stat_block({"name": "aisfx"}) is None

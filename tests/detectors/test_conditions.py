"""Baselines within an operating condition (detectors.conditions)."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.baseline import KNNBaseline
from detectors.conditions import POOLED, ConditionalBaseline, load_baseline
from detectors.errors import ArtifactError

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


def test_unknown_conditions_join_the_pooled_baseline_only():
    vectors, groups, conditions = two_conditions()
    values = [None if g < 2 else str(c) for c, g in zip(conditions, groups, strict=True)]
    model = ConditionalBaseline(make).fit(vectors, groups, values)
    assert set(model.models_) == {"a", "b", POOLED}
    assert model.rows_[POOLED].tolist() == list(range(len(vectors)))
    assert model.rows_["a"].tolist() == [i for i, v in enumerate(values) if v == "a"]
    probe, _ = runs(0.0, 1, 5, seed=6)
    pooled = model.models_[POOLED]
    np.testing.assert_allclose(
        model.decision_function(probe, None),
        pooled.decision_function(probe) / pooled.threshold_,
        rtol=1e-6,
    )
    assert model.model_for(None) is pooled and model.model_for("a") is model.models_["a"]
    assert model.model_for("unseen") is pooled


def test_service_attributes_and_threshold_method_per_condition():
    vectors, groups, conditions = two_conditions()
    model = ConditionalBaseline(make, condition_name="pattern").fit(vectors, groups, conditions)
    assert (model.k, model.metric, model.standardize) == (3, "euclidean", True)
    assert model.n_vectors_ == len(vectors) and model.dim_ == DIM
    method = model.threshold_method_
    assert method["rule"] == "within condition" and method["condition"] == "pattern"
    by_value = {c["value"]: c for c in method["conditions"]}
    assert set(by_value) == {"a", "b"}
    for value in ("a", "b"):
        own = model.models_[value]
        assert by_value[value]["threshold"] == pytest.approx(own.threshold_)
        assert by_value[value]["rule"] == own.threshold_method_["rule"]
        assert by_value[value]["runs"] == 6 and by_value[value]["n_vectors"] == 60
    # An unseen condition without a pooled baseline: the model that finds the probe most normal.
    probe, _ = runs(8.0, 1, 5, seed=7)
    assert model.model_for("unseen", probe) is model.models_["b"]
    assert model.rows_for("unseen", probe).tolist() == list(range(60, 120))


def test_artifact_round_trip_scores_identically_and_loads_by_format():
    vectors, groups, conditions = two_conditions()
    conditions[groups == 100] = "rare"
    spec = {"name": "logmel", "n_mels": 8}

    def make_spec() -> KNNBaseline:
        return KNNBaseline(k=3, index="exact", embedder_spec=spec)

    model = ConditionalBaseline(make_spec, condition_name="domain").fit(vectors, groups, conditions)
    data = model.to_bytes()
    loaded = load_baseline(data, expected_embedder=spec)
    assert isinstance(loaded, ConditionalBaseline) and set(loaded.models_) == set(model.models_)
    assert loaded.condition_name == "domain" and loaded.min_runs == model.min_runs
    assert loaded.threshold_method_ == model.threshold_method_
    probe, _ = runs(4.0, 2, 10, seed=8)
    for condition in ("a", "b", "rare", None):
        np.testing.assert_array_equal(
            loaded.decision_function(probe, condition), model.decision_function(probe, condition)
        )
        np.testing.assert_array_equal(loaded.rows_for(condition), model.rows_for(condition))
    # A plain KNNBaseline artifact still loads through the same function.
    plain = make_spec().fit(vectors, groups)
    again = load_baseline(plain.to_bytes(), expected_embedder=spec)
    assert isinstance(again, KNNBaseline)
    np.testing.assert_array_equal(again.decision_function(probe), plain.decision_function(probe))
    # The refit factory survives the round trip.
    refit = loaded.make_baseline()
    assert isinstance(refit, KNNBaseline) and refit.embedder_spec == spec and refit.k == 3


def test_bad_artifacts_are_refused():
    vectors, groups, conditions = two_conditions()
    spec = {"name": "logmel"}
    model = ConditionalBaseline(lambda: KNNBaseline(k=3, embedder_spec=spec)).fit(
        vectors, groups, conditions
    )
    data = model.to_bytes()
    with pytest.raises(ArtifactError, match="embedder"):
        load_baseline(data, expected_embedder={"name": "hf"})
    with pytest.raises(ArtifactError, match="not a humwatch"):
        load_baseline(b"not an artifact")
    # Flip one byte inside a nested model: the outer checksum catches it.
    import io
    import json

    with np.load(io.BytesIO(data)) as npz:
        arrays = {name: npz[name].copy() for name in npz.files}
    arrays["model_0"][-200] ^= 0xFF
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    with pytest.raises(ArtifactError, match="checksum"):
        load_baseline(buf.getvalue())
    meta = json.loads(arrays["meta"].tobytes())
    meta["format_version"] = 99
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    with pytest.raises(ArtifactError, match="version 99"):
        load_baseline(buf.getvalue())


def test_a_condition_needs_more_windows_than_k_for_its_own_baseline():
    vectors, groups, conditions = two_conditions()
    # Condition "few": four runs of one window each, fewer windows than k = 5.
    few = np.flatnonzero(conditions == "b")[::10][:4]
    conditions = conditions.astype(object)
    conditions[few] = "few"
    model = ConditionalBaseline(lambda: KNNBaseline(k=5, index="exact")).fit(
        vectors, groups, conditions
    )
    assert "few" not in model.models_ and POOLED in model.models_
    assert set(model.models_) == {"a", "b", POOLED}

"""KNNBaseline: estimator conventions, scores, calibrated threshold, persistence, bad input."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from detectors.baseline import ARTIFACT_VERSION, KNNBaseline
from detectors.errors import ArtifactError, NotFittedError
from detectors.index import ExactIndex, NNDescentIndex

DIM = 8
PARAMS = {
    "k": 3,
    "metric": "euclidean",
    "standardize": True,
    "false_alarm_rate": 0.05,
    "index": "exact",
    "random_state": 7,
    "embedder_spec": {"name": "logmel", "n_mels": 64},
    "whiten": None,
    "max_calibration_folds": 20,
    "whiten_min_runs": 10,
    "block_space": None,
}


def gaussian(n: int, seed: int, shift: float = 0.0, dim: int = DIM) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((n, dim)) + shift).astype(np.float32)


def recordings(n_groups: int, per_group: int, seed: int, jitter: float = 0.01):
    """Vectors of ``n_groups`` recordings whose windows are near copies of each other."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_groups, DIM))
    vectors = np.repeat(centres, per_group, axis=0)
    vectors += jitter * rng.standard_normal(vectors.shape)
    return vectors.astype(np.float32), np.repeat(np.arange(n_groups), per_group)


@pytest.fixture(scope="module")
def fitted() -> KNNBaseline:
    return KNNBaseline(**PARAMS).fit(gaussian(1000, seed=0))


# -- estimator conventions --------------------------------------------------------------------


def test_init_stores_parameters_only():
    model = KNNBaseline(**PARAMS)
    assert model.get_params() == PARAMS
    assert not [name for name in vars(model) if name.endswith("_")]


def test_fit_returns_self_and_sets_fitted_attributes_ending_in_underscore():
    model = KNNBaseline(**PARAMS)
    before = set(vars(model))
    assert model.fit(gaussian(300, seed=1)) is model
    added = set(vars(model)) - before
    assert added and all(name.endswith("_") for name in added)
    for name in ("n_vectors_", "dim_", "mean_", "scale_", "vectors_", "index_", "loo_scores_"):
        assert name in added
    assert {"threshold_", "threshold_method_"} <= added
    assert model.get_params() == PARAMS  # fit does not touch the parameters
    assert (model.n_vectors_, model.dim_) == (300, DIM)
    assert model.vectors_.shape == (300, DIM) and model.vectors_.dtype == np.float32
    assert isinstance(model.threshold_, float)


@pytest.mark.parametrize(
    "call",
    [
        lambda m: m.decision_function(gaussian(3, seed=2)),
        lambda m: m.predict(gaussian(3, seed=2)),
        lambda m: m.to_bytes(),
        lambda m: m.save("never-written.npz"),
    ],
)
def test_not_fitted_error_before_fit(call):
    with pytest.raises(NotFittedError, match="fit"):
        call(KNNBaseline())


# -- scores and threshold ---------------------------------------------------------------------


def test_scores_are_higher_for_outliers(fitted):
    normal = gaussian(500, seed=3)
    shifted = gaussian(500, seed=4, shift=2.0)  # mean moved by 2 sd in every dimension
    s_normal = fitted.decision_function(normal)
    s_shifted = fitted.decision_function(shifted)
    assert s_normal.shape == (500,) and s_normal.dtype == np.float32
    assert s_shifted.mean() > 2 * s_normal.mean()
    labels = np.r_[np.zeros(500), np.ones(500)]
    assert roc_auc_score(labels, np.r_[s_normal, s_shifted]) > 0.99  # measured 0.997
    assert fitted.predict(shifted).mean() > 0.9  # measured 0.99


def test_score_is_mean_distance_to_k_nearest_standardised_vectors(fitted):
    queries = gaussian(20, seed=5)
    z = (queries - fitted.mean_) / fitted.scale_
    d = np.linalg.norm(z[:, None, :] - fitted.vectors_[None], axis=2)
    expected = np.sort(d, axis=1)[:, : fitted.k].mean(axis=1)
    np.testing.assert_allclose(fitted.decision_function(queries), expected, rtol=1e-4)


@pytest.mark.parametrize("far", [0.05, 0.01])
def test_threshold_gives_the_requested_false_alarm_rate_on_fresh_normal_data(far):
    # 4,000 baseline and 20,000 fresh vectors from the same distribution. The measured rate
    # varies with the 1 - far quantile of 4,000 leave-one-out scores (binomial sd
    # sqrt(far (1 - far) / 4000): 0.0034 at 5 %, 0.0016 at 1 %) and with the 20,000 fresh
    # draws (0.0015 and 0.0007). The bounds are about +-5 combined sd.
    model = KNNBaseline(k=5, false_alarm_rate=far, index="exact").fit(gaussian(4000, seed=6))
    measured = model.predict(gaussian(20_000, seed=7)).mean()
    sd = np.sqrt(far * (1 - far) / 4000) + np.sqrt(far * (1 - far) / 20_000)
    assert far - 5 * sd <= measured <= far + 5 * sd
    assert model.threshold_method_ == {
        "rule": "group_quantile",
        "false_alarm_rate": far,
        "quantile": 1 - far,
        "calibration_scores": 4000,
        "groups": 4000,
        "held_out": "run",
        "whitened": False,
    }


def test_threshold_is_an_observed_leave_one_out_score(fitted):
    assert fitted.threshold_ in set(fitted.loo_scores_.tolist())
    assert np.mean(fitted.loo_scores_ > fitted.threshold_) <= PARAMS["false_alarm_rate"]


@pytest.mark.parametrize("index", ["exact", "nndescent"])
def test_group_aware_calibration_sees_through_near_duplicate_windows(index):
    vectors, groups = recordings(100, 20, seed=8)
    plain = KNNBaseline(k=5, false_alarm_rate=0.05, index=index).fit(vectors)
    grouped = KNNBaseline(k=5, false_alarm_rate=0.05, index=index).fit(vectors, groups)

    assert plain.threshold_method_["groups"] == 2000
    assert grouped.threshold_method_["groups"] == 100
    assert grouped.threshold_method_["rule"] == "group_quantile"
    # Holding out single windows finds each window's twins from its own recording.
    assert grouped.threshold_ > 10 * plain.threshold_
    # New recordings of the same machine: plain LOO flags nearly all of them, group LOO
    # about the requested share (100 calibration groups: a loose bound).
    fresh, _ = recordings(40, 20, seed=9)
    assert plain.predict(fresh).mean() > 0.9
    assert grouped.predict(fresh).mean() < 0.3


def test_a_single_group_cannot_be_calibrated():
    with pytest.raises(ValueError, match="at least two runs"):
        KNNBaseline(k=3).fit(gaussian(200, seed=10), np.zeros(200, dtype=int))


def test_cosine_metric_scores_directions_not_lengths():
    base = gaussian(500, seed=11, shift=3.0, dim=16)  # all pointing roughly along (1, ..., 1)
    model = KNNBaseline(k=5, metric="cosine", standardize=False).fit(base)
    queries = gaussian(5, seed=12, shift=3.0, dim=16)
    scores = model.decision_function(np.r_[queries, queries * 10.0, -queries])
    np.testing.assert_allclose(scores[5:10], scores[:5], rtol=1e-4, atol=1e-6)
    assert scores[:5].max() < 0.1
    assert scores[10:].min() > 1.5


# -- persistence ------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["exact", "nndescent"])
def fitted_any_index(request) -> KNNBaseline:
    vectors, groups = recordings(100, 30, seed=12, jitter=0.3)  # 3,000 vectors
    params = dict(PARAMS, index=request.param)
    model = KNNBaseline(**params).fit(vectors, groups)
    expected = ExactIndex if request.param == "exact" else NNDescentIndex
    assert isinstance(model.index_, expected)
    return model


def assert_same_model(loaded: KNNBaseline, model: KNNBaseline) -> None:
    queries = np.r_[gaussian(300, seed=13), gaussian(100, seed=14, shift=2.0)]
    assert type(loaded.index_) is type(model.index_)
    assert loaded.get_params() == model.get_params()
    assert loaded.threshold_ == model.threshold_
    assert loaded.threshold_method_ == model.threshold_method_
    np.testing.assert_array_equal(loaded.loo_scores_, model.loo_scores_)
    np.testing.assert_array_equal(loaded.vectors_, model.vectors_)
    np.testing.assert_array_equal(
        loaded.decision_function(queries), model.decision_function(queries)
    )
    np.testing.assert_array_equal(loaded.predict(queries), model.predict(queries))


def test_bytes_round_trip_gives_identical_scores(fitted_any_index):
    blob = fitted_any_index.to_bytes()
    assert_same_model(KNNBaseline.from_bytes(blob), fitted_any_index)


def test_save_load_round_trip_gives_identical_scores(fitted_any_index, tmp_path):
    path = tmp_path / "baseline.npz"
    fitted_any_index.save(path)
    loaded = KNNBaseline.load(path, expected_embedder=PARAMS["embedder_spec"])
    assert_same_model(loaded, fitted_any_index)


def rewrite(blob: bytes, meta_update: dict | None = None, array_update=None) -> bytes:
    """The artifact re-packed with edited metadata or arrays (a consistent zip file)."""
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    meta = json.loads(arrays.pop("meta").tobytes().decode())
    meta.update(meta_update or {})
    if array_update is not None:
        array_update(arrays)
    buf = io.BytesIO()
    np.savez(buf, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
    return buf.getvalue()


def test_rewrite_helper_keeps_a_valid_artifact(fitted):
    assert_same_model(KNNBaseline.from_bytes(rewrite(fitted.to_bytes())), fitted)


@pytest.mark.parametrize(
    "blob",
    [b"", b"definitely not a baseline", b"PK\x03\x04" + b"\x00" * 100],
    ids=["empty", "text", "zip-header-only"],
)
def test_artifact_error_on_garbage(blob):
    with pytest.raises(ArtifactError, match="not a humwatch baseline artifact"):
        KNNBaseline.from_bytes(blob)


def test_artifact_error_on_truncated_bytes(fitted):
    blob = fitted.to_bytes()
    with pytest.raises(ArtifactError):
        KNNBaseline.from_bytes(blob[: len(blob) // 2])


def test_artifact_error_when_one_byte_of_a_stored_array_flips(fitted):
    blob = bytearray(fitted.to_bytes())
    start = bytes(blob).find(fitted.vectors_.tobytes()[:64])
    assert start > 0
    blob[start + 100] ^= 0x01
    # The zip member's CRC catches it first; either way the artifact is refused.
    with pytest.raises(ArtifactError):
        KNNBaseline.from_bytes(bytes(blob))


def test_artifact_error_on_checksum_mismatch(fitted):
    def tamper(arrays):
        arrays["vectors"] = arrays["vectors"].copy()
        arrays["vectors"][10, 3] += 1.0

    with pytest.raises(ArtifactError, match="checksum"):
        KNNBaseline.from_bytes(rewrite(fitted.to_bytes(), array_update=tamper))

    def tamper_threshold_scores(arrays):
        arrays["loo_scores"] = arrays["loo_scores"][::-1].copy()

    with pytest.raises(ArtifactError, match="checksum"):
        KNNBaseline.from_bytes(rewrite(fitted.to_bytes(), array_update=tamper_threshold_scores))


def test_artifact_error_on_missing_array(fitted):
    with pytest.raises(ArtifactError, match="not a humwatch baseline artifact"):
        KNNBaseline.from_bytes(rewrite(fitted.to_bytes(), array_update=lambda a: a.pop("mean")))


@pytest.mark.parametrize("version", [ARTIFACT_VERSION + 1, 0, "1", None])
def test_artifact_error_on_unknown_format_version(fitted, version):
    with pytest.raises(ArtifactError, match="format version"):
        KNNBaseline.from_bytes(rewrite(fitted.to_bytes(), {"format_version": version}))


def test_artifact_error_on_other_format(fitted):
    with pytest.raises(ArtifactError, match="format"):
        KNNBaseline.from_bytes(rewrite(fitted.to_bytes(), {"format": "someone.else"}))


def test_artifact_error_on_mismatched_embedder(fitted):
    blob = fitted.to_bytes()
    other = {"name": "logmel", "n_mels": 128}
    with pytest.raises(ArtifactError, match="embedder"):
        KNNBaseline.from_bytes(blob, expected_embedder=other)
    with pytest.raises(ArtifactError, match="embedder"):
        KNNBaseline.from_bytes(blob, expected_embedder={"name": "hf"})
    loaded = KNNBaseline.from_bytes(blob, expected_embedder=dict(PARAMS["embedder_spec"]))
    assert loaded.embedder_spec == PARAMS["embedder_spec"]


# -- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "vectors",
    [
        np.zeros(10, dtype=np.float32),  # 1-D
        np.zeros((1, DIM), dtype=np.float32),  # a single vector
        np.zeros((0, DIM), dtype=np.float32),
        np.zeros((4, 2, 2), dtype=np.float32),
    ],
    ids=["1d", "one-vector", "empty", "3d"],
)
def test_fit_rejects_bad_shapes(vectors):
    with pytest.raises(ValueError, match="shape"):
        KNNBaseline().fit(vectors)


def test_fit_rejects_non_finite_values():
    vectors = gaussian(50, seed=15)
    vectors[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        KNNBaseline().fit(vectors)
    vectors[3, 2] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        KNNBaseline().fit(vectors)


def test_fit_rejects_bad_k_and_groups():
    with pytest.raises(ValueError, match="k must be"):
        KNNBaseline(k=0).fit(gaussian(50, seed=16))
    with pytest.raises(ValueError, match="groups"):
        KNNBaseline().fit(gaussian(50, seed=16), groups=np.arange(49))


def test_decision_function_rejects_bad_shapes(fitted):
    with pytest.raises(ValueError, match=rf"\(m, {DIM}\)"):
        fitted.decision_function(gaussian(3, seed=17, dim=DIM + 1))
    with pytest.raises(ValueError, match="shape"):
        fitted.decision_function(np.zeros(DIM, dtype=np.float32))
    with pytest.raises(ValueError, match="shape"):
        fitted.decision_function(np.zeros((2, 2, DIM), dtype=np.float32))


def test_decision_function_of_no_vectors_is_empty(fitted):
    scores = fitted.decision_function(np.zeros((0, DIM), dtype=np.float32))
    assert scores.shape == (0,) and scores.dtype == np.float32
    assert fitted.predict(np.zeros((0, DIM), dtype=np.float32)).shape == (0,)


def test_approximate_index_flags_exactly_what_exact_search_flags():
    # 3,000 vectors in 100 recordings; fresh windows from new recordings, half shifted.
    vectors, groups = recordings(100, 30, seed=18, jitter=0.5)
    exact = KNNBaseline(k=5, false_alarm_rate=0.05, index="exact").fit(vectors, groups)
    approx = KNNBaseline(k=5, false_alarm_rate=0.05, index="nndescent").fit(vectors, groups)
    assert isinstance(approx.index_, NNDescentIndex)
    # Calibration is exact for both indexes.
    np.testing.assert_allclose(approx.loo_scores_, exact.loo_scores_, rtol=1e-5)
    assert approx.threshold_ == pytest.approx(exact.threshold_, rel=1e-5)

    fresh, _ = recordings(60, 30, seed=19, jitter=0.5)
    fresh[::2] += 0.7
    s_exact = exact.decision_function(fresh)
    s_approx = approx.decision_function(fresh)
    # Approximate scores are upper bounds, exact wherever they reach the threshold.
    assert np.all(s_approx >= s_exact * (1 - 1e-5))
    above = s_approx > approx.threshold_
    np.testing.assert_allclose(s_approx[above], s_exact[above], rtol=1e-5)
    clear = np.abs(s_exact - exact.threshold_) > 1e-4 * exact.threshold_
    np.testing.assert_array_equal(approx.predict(fresh)[clear], exact.predict(fresh)[clear])
    assert 0.0 < exact.predict(fresh).mean() < 1.0


# -- calibration held out by run -------------------------------------------------------------


def runs_with_effects(n_runs: int, per_run: int, seed: int, effect: float = 1.0):
    """Runs whose windows scatter around a run-specific offset (speed, gain, background)."""
    rng = np.random.default_rng(seed)
    offsets = effect * rng.standard_normal((n_runs, DIM))
    vectors = np.repeat(offsets, per_run, axis=0) + rng.standard_normal((n_runs * per_run, DIM))
    return vectors.astype(np.float32), np.repeat(np.arange(n_runs), per_run)


@pytest.mark.parametrize("whiten", [None, 0.99])
def test_held_out_run_is_left_out_of_the_transform_too(whiten):
    from detectors.index import ExactIndex
    from detectors.transform import fit_transform

    vectors, groups = runs_with_effects(5, 30, seed=20)
    vectors[groups == 0, 0] += 50.0  # one run far out in one dimension
    model = KNNBaseline(k=3, whiten=whiten, whiten_min_runs=2, index="exact").fit(vectors, groups)
    assert model.whitened_ == (whiten is not None)
    held = groups == 0
    # Refit on the other runs alone, keeping the full baseline's number of components.
    transform = fit_transform(
        vectors[~held], True, whiten, n_components=model.transform_.n_components
    )
    assert transform.n_components == model.transform_.n_components
    index = ExactIndex(transform(vectors[~held]), "euclidean")
    expected = index.query(transform(vectors[held]), 3)[0].mean(axis=1)
    np.testing.assert_allclose(model.loo_scores_[model.loo_groups_ == 0], expected, rtol=1e-4)


def test_calibration_refits_keep_the_full_baselines_component_count():
    from detectors.transform import fit_transform

    # Fewer vectors (12 runs of 3) than dimensions, as real baselines of 512-d vectors are.
    rng = np.random.default_rng(21)
    vectors = (rng.standard_normal((36, 64)) * np.linspace(3.0, 0.1, 64)).astype(np.float32)
    groups = np.repeat(np.arange(12), 3)
    full = fit_transform(vectors, True, 0.99)
    own = fit_transform(vectors[groups != 0], True, 0.99)
    fixed = fit_transform(vectors[groups != 0], True, 0.99, n_components=full.n_components)
    # With fewer vectors the variance share picks fewer components; the refit must not.
    assert own.n_components < full.n_components
    assert fixed.n_components == full.n_components

    from detectors.index import ExactIndex

    model = KNNBaseline(k=3, whiten=0.99, whiten_min_runs=2, index="exact").fit(vectors, groups)
    held = groups == 0
    for transform, matches in ((fixed, True), (own, False)):
        index = ExactIndex(transform(vectors[~held]), "euclidean")
        scores = index.query(transform(vectors[held]), 3)[0].mean(axis=1)
        same = np.allclose(model.loo_scores_[model.loo_groups_ == 0], scores, rtol=1e-4)
        assert same == matches


@pytest.mark.parametrize("n_runs", [6, 12, 24])
def test_run_effects_rule_meets_its_target_on_new_runs(n_runs):
    # Fewer runs than 1 / false_alarm_rate: the tail model decides. Averaged over 30
    # baselines (each scored on 60 new runs), the false-alarm rate of new runs must lie in
    # [0.5x, 2x] of the target (the acceptance band of the evaluation) from 12 runs on; with
    # 6 runs the t tail is wide and the rule errs on the safe side (measured 0.32x).
    far, rates = 0.02, []
    for seed in range(30):
        vectors, groups = runs_with_effects(n_runs, 20, seed=100 + seed)
        model = KNNBaseline(k=5, false_alarm_rate=far, index="exact").fit(vectors, groups)
        assert model.threshold_method_["rule"] == "run_effects_t"
        assert model.threshold_method_["groups"] == n_runs
        fresh, _ = runs_with_effects(60, 20, seed=10_000 + seed)
        rates.append(model.predict(fresh).mean())
    low = 0.5 * far if n_runs >= 12 else 0.1 * far
    assert low <= float(np.mean(rates)) <= 2.0 * far


def test_whitening_keeps_the_principal_subspace_and_the_residual_option_the_rest():
    from detectors.transform import fit_transform

    rng = np.random.default_rng(30)
    t = rng.standard_normal((600, 1))
    base = np.hstack([t, t + 0.05 * rng.standard_normal((600, 1))]).astype(np.float32)
    along = np.array([[1.5, 1.5]], dtype=np.float32)  # the way normal operation varies
    across = np.array([[1.5, -1.5]], dtype=np.float32)  # never seen: bands moving apart
    centre = base.mean(axis=0, keepdims=True)

    def size(transform, x):
        return float(np.linalg.norm(transform(x) - transform(centre)))

    kept = fit_transform(base, True, 0.999)
    assert kept.projection.shape == (2, 1)  # 99.9 % of the variance lies along t
    # Within the kept subspace a step is measured in units of normal variation; what lies
    # outside it is not seen at all (the weakness the residual option removes).
    assert size(kept, along) > 1.0 and size(kept, across) < 0.1 * size(kept, along)
    residual = fit_transform(base, True, 0.999, residual=True)
    assert size(residual, across) > 10 * size(residual, along)
    groups = np.repeat(np.arange(30), 20)
    white = KNNBaseline(k=5, whiten=0.999).fit(base, groups)
    few_runs = KNNBaseline(k=5, whiten=0.999).fit(base[:100], groups[:100])  # 5 runs
    assert white.whitened_ and not few_runs.whitened_
    assert white.threshold_method_["whitened"] and not few_runs.threshold_method_["whitened"]


def test_version_1_artifacts_still_load_and_score_as_before():
    vectors, groups = runs_with_effects(4, 25, seed=40)
    mean, scale = vectors.mean(axis=0), vectors.std(axis=0)
    z = ((vectors - mean) / scale).astype(np.float32)
    arrays = {"vectors": z, "mean": mean, "scale": scale, "loo_scores": np.ones(4, np.float32)}
    import hashlib

    h = hashlib.sha256()
    for name in ("vectors", "mean", "scale", "loo_scores"):
        arr = np.ascontiguousarray(arrays[name])
        h.update(name.encode() + str(arr.dtype).encode() + str(arr.shape).encode())
        h.update(arr.tobytes())
    meta = {
        "format": "humwatch.knn-baseline",
        "format_version": 1,
        "params": {
            "k": 3,
            "metric": "euclidean",
            "standardize": True,
            "false_alarm_rate": 0.01,
            "index": "exact",
            "random_state": 0,
            "embedder_spec": None,
        },
        "threshold": 2.5,
        "threshold_method": {"rule": "leave_one_group_out_quantile"},
        "index_kind": "exact",
        "checksum": h.hexdigest(),
    }
    buf = io.BytesIO()
    np.savez(buf, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
    model = KNNBaseline.from_bytes(buf.getvalue())
    queries = vectors[:7] + 0.1
    d = np.linalg.norm(((queries - mean) / scale)[:, None, :] - z[None], axis=2)
    np.testing.assert_allclose(
        model.decision_function(queries), np.sort(d, axis=1)[:, :3].mean(axis=1), rtol=1e-4
    )
    assert model.threshold_ == 2.5 and model.whiten is None

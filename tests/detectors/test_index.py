"""Neighbour index: approximate vs exact recall, exact vs scikit-learn, the size rule."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.neighbors import NearestNeighbors

from detectors import index as index_module
from detectors.index import ExactIndex, NNDescentIndex, build_index, warm_up_nndescent


def clustered(n: int, dim: int, seed: int, n_modes: int = 12) -> np.ndarray:
    """Standardised vectors shaped like window embeddings: modes, recordings, windows.

    Operating modes of unequal weight in a latent space with a decaying spectrum, recordings
    around a mode, windows around a recording, a linear map to ``dim`` dimensions plus a little
    noise (benchmarks/knn.py checks a richer version of this against real log-mel vectors).
    Calls with different ``seed`` draw from the same distribution.
    """
    world = np.random.default_rng(12345)
    latent = 48
    spectrum = (1.0 + np.arange(latent)) ** -0.8
    basis = world.standard_normal((latent, dim)) / np.sqrt(latent)
    centres = world.standard_normal((n_modes, latent)) * spectrum * 1.5
    weights = world.dirichlet(np.full(n_modes, 2.0))
    rng = np.random.default_rng(seed)
    n_rec = -(-n // 20)
    mode = rng.choice(n_modes, n_rec, p=weights)
    rec = centres[mode] + 0.4 * spectrum * rng.standard_normal((n_rec, latent))
    z = np.repeat(rec, 20, axis=0)[:n] + 0.8 * spectrum * rng.standard_normal((n, latent))
    x = z @ basis + 0.05 * rng.standard_normal((n, dim))
    return ((x - x.mean(axis=0)) / x.std(axis=0)).astype(np.float32)


def recall(approx_idx: np.ndarray, exact_idx: np.ndarray) -> float:
    k = exact_idx.shape[1]
    hits = [len(np.intersect1d(a, e)) for a, e in zip(approx_idx, exact_idx, strict=True)]
    return float(np.mean(hits)) / k


# -- approximate vs exact ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def baseline_and_queries() -> tuple[np.ndarray, np.ndarray]:
    data = clustered(10_500, 128, seed=1)
    return data[:10_000], data[10_000:]  # queries: 25 recordings the index has not seen


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_nndescent_recall_against_exact(baseline_and_queries, metric):
    base, queries = baseline_and_queries
    k = 5
    exact_dist, exact_idx = ExactIndex(base, metric).query(queries, k)
    approx_dist, approx_idx = NNDescentIndex(base, metric).query(queries, k)

    assert approx_idx.shape == exact_idx.shape == (len(queries), k)
    assert recall(approx_idx, exact_idx) >= 0.95
    # Approximate neighbours are never closer than the true ones, and the anomaly score
    # (mean distance to the k neighbours) stays close on average.
    assert np.all(approx_dist[:, 0] >= exact_dist[:, 0] - 1e-4)
    ratio = approx_dist.mean(axis=1) / exact_dist.mean(axis=1)
    assert ratio.mean() < 1.02


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_nndescent_distances_are_true_distances(baseline_and_queries, metric):
    base, queries = baseline_and_queries
    dist, idx = NNDescentIndex(base[:2000], metric).query(queries[:50], 5)
    if metric == "cosine":
        a = queries[:50, None, :] / np.linalg.norm(queries[:50], axis=1)[:, None, None]
        b = base[idx] / np.linalg.norm(base[idx], axis=2, keepdims=True)
        expected = 1.0 - np.einsum("qkd,qkd->qk", np.broadcast_to(a, b.shape), b)
    else:
        expected = np.linalg.norm(queries[:50, None, :] - base[idx], axis=2)
    np.testing.assert_allclose(dist, expected, rtol=1e-4, atol=1e-5)
    assert np.all(np.diff(dist, axis=1) >= 0)
    assert dist.dtype == np.float32 and idx.dtype == np.int64


def test_nndescent_is_deterministic_for_a_seed(baseline_and_queries):
    base, queries = baseline_and_queries
    base = base[:3000]
    a = NNDescentIndex(base, "euclidean", random_state=3).query(queries, 5)
    b = NNDescentIndex(base.copy(), "euclidean", random_state=3).query(queries, 5)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_nndescent_build_leaves_the_openmp_thread_count_alone():
    # torch and numba share the OpenMP runtime: a build used to turn torch's one intra-op
    # thread (the service's HUMWATCH_TORCH_THREADS=1) back into numba's default.
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        NNDescentIndex(clustered(600, 16, seed=11))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_warm_up_nndescent_runs():
    # Only that it exists and works: how fast a query is after it is a timing question for
    # benchmarks/knn.py --startup, never an assertion here.
    assert warm_up_nndescent() is None


# -- exact vs scikit-learn --------------------------------------------------------------------


def float64_distances(queries, base, idx, metric):
    q = queries.astype(np.float64)[:, None, :]
    b = base.astype(np.float64)[idx]
    if metric == "cosine":
        q = q / np.linalg.norm(q, axis=2, keepdims=True)
        b = b / np.linalg.norm(b, axis=2, keepdims=True)
        return 1.0 - np.sum(q * b, axis=2)
    return np.linalg.norm(q - b, axis=2)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("n", [7, 3000, 20_000])
def test_exact_matches_sklearn_brute_force(metric, n):
    data = clustered(n + 200, 64, seed=2)
    base, queries = data[:n], data[n:]
    k = min(7, n)
    dist, idx = ExactIndex(base, metric).query(queries, k)
    nn = NearestNeighbors(n_neighbors=k, algorithm="brute", metric=metric)
    ref_dist, ref_idx = nn.fit(base.astype(np.float64)).kneighbors(queries.astype(np.float64))

    assert dist.shape == idx.shape == (len(queries), k)
    assert dist.dtype == np.float32 and idx.dtype == np.int64
    # float32 products against a float64 reference: equal up to float32 rounding.
    atol = 1e-3 * float(np.median(ref_dist))
    np.testing.assert_allclose(dist, ref_dist, rtol=1e-4, atol=atol)
    # Indices match up to ties: the neighbours found are exactly as close (in float64) as
    # the reference's, rank by rank, and almost all are the very same vectors.
    np.testing.assert_allclose(float64_distances(queries, base, idx, metric), ref_dist, atol=atol)
    assert np.mean(idx == ref_idx) > 0.99


def test_exact_ties_go_to_the_lower_index():
    base = np.repeat(np.eye(4, dtype=np.float32), 3, axis=0)  # each row three times
    dist, idx = ExactIndex(base).query(np.eye(4, dtype=np.float32)[[2]], 4)
    np.testing.assert_array_equal(idx[0, :3], [6, 7, 8])
    np.testing.assert_allclose(dist[0, :3], 0.0, atol=1e-6)


def test_exact_k_larger_than_the_baseline_returns_every_vector():
    base = clustered(5, 16, seed=3)
    dist, idx = ExactIndex(base).query(base[:2], 10)
    assert dist.shape == idx.shape == (2, 5)
    assert sorted(idx[0]) == list(range(5))
    assert idx[0, 0] == 0 and idx[1, 0] == 1


def test_exact_exclusion_hides_vectors_from_each_query():
    base = clustered(3000, 32, seed=4)
    index = ExactIndex(base)

    def exclude(rows: slice) -> np.ndarray:
        mask = np.zeros((rows.stop - rows.start, len(base)), dtype=bool)
        mask[np.arange(mask.shape[0]), np.arange(rows.start, rows.stop)] = True  # itself
        return mask

    _, idx = index.query(base[:100], 3, exclude_fn=exclude)
    assert not np.any(idx == np.arange(100)[:, None])
    _, with_self = index.query(base[:100], 3)
    np.testing.assert_array_equal(with_self[:, 0], np.arange(100))


def test_exact_splits_large_problems_into_blocks(monkeypatch):
    base = clustered(2000, 32, seed=5)
    queries = clustered(300, 32, seed=6)
    expected = ExactIndex(base).query(queries, 5)
    monkeypatch.setattr(index_module, "MAX_BLOCK_ELEMENTS", 2000 * 7)  # 7 queries per block
    got = ExactIndex(base).query(queries, 5)
    np.testing.assert_array_equal(got[1], expected[1])
    # Blocks of 7 queries take other float32 matrix-product kernels than one block of 300:
    # the distances agree to float32 rounding of the squared-norm expansion (2.9e-6 seen).
    np.testing.assert_allclose(got[0], expected[0], rtol=1e-5)


def test_exact_nan_query_does_not_break_the_others():
    base = clustered(5000, 16, seed=7)
    queries = base[:3].copy()
    queries[1] = np.nan
    dist, idx = ExactIndex(base).query(queries, 4)
    assert idx[0, 0] == 0 and idx[2, 0] == 2
    assert np.isnan(dist[1]).all()


# -- choosing the index -----------------------------------------------------------------------


def test_build_index_is_exact_below_the_threshold_and_nndescent_from_it(monkeypatch):
    monkeypatch.setattr(index_module, "APPROXIMATE_MIN_SIZE", 200)
    data = clustered(260, 16, seed=8)
    assert isinstance(build_index(data[:199]), ExactIndex)
    assert isinstance(build_index(data[:200]), NNDescentIndex)
    assert isinstance(build_index(data, "cosine"), NNDescentIndex)
    assert build_index(data[:199]).kind == "exact"
    assert build_index(data).kind == "nndescent"


def test_build_index_forced_methods_ignore_the_size(monkeypatch):
    monkeypatch.setattr(index_module, "APPROXIMATE_MIN_SIZE", 200)
    data = clustered(260, 16, seed=9)
    assert isinstance(build_index(data, method="exact"), ExactIndex)
    assert isinstance(build_index(data[:50], method="nndescent"), NNDescentIndex)


def test_build_index_rejects_unknown_method_and_metric():
    data = clustered(20, 8, seed=10)
    with pytest.raises(ValueError, match="index method"):
        build_index(data, method="annoy")
    with pytest.raises(ValueError, match="metric"):
        build_index(data, "manhattan")
    with pytest.raises(ValueError, match="metric"):
        NNDescentIndex(data, "manhattan")

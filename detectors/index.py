"""Nearest-neighbour search over a baseline, exact or approximate behind one interface.

``build_index(vectors, metric)`` returns an ``ExactIndex`` (blocked matrix products) below
``APPROXIMATE_MIN_SIZE`` vectors and an ``NNDescentIndex`` (pynndescent) above. Both answer
``query(queries, k) -> (distances, indices)`` with shapes ``(n_queries, k)``, nearest first.

Metrics: ``"euclidean"`` and ``"cosine"`` (1 - cosine similarity). For cosine the index
normalises rows itself, so callers pass raw vectors.
"""

from __future__ import annotations

import numpy as np

# Measured with benchmarks/knn.py (docs/benchmarks.md): below this size one exact blocked
# matmul pass beats an approximate graph search including its build time.
APPROXIMATE_MIN_SIZE = 50_000
METRICS = ("euclidean", "cosine")


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, not {metric!r}")


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, ``(n, dim)`` float32 (zero rows stay zero)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


class ExactIndex:
    """Brute-force search with blocked matrix products.

    Parameters
    ----------
    vectors : np.ndarray, shape (n, dim)
    metric : "euclidean" or "cosine"
    block_size : int
        Queries per block; bounds memory to ``block_size * n`` floats.
    """

    kind = "exact"

    def __init__(self, vectors: np.ndarray, metric: str = "euclidean", block_size: int = 1024):
        _check_metric(metric)
        self.metric = metric
        self.block_size = block_size
        data = np.ascontiguousarray(vectors, dtype=np.float32)
        self._data = l2_normalize(data) if metric == "cosine" else data
        self._sq_norms = np.einsum("ij,ij->i", self._data, self._data)

    def __len__(self) -> int:
        return self._data.shape[0]

    def _distances(self, block: np.ndarray) -> np.ndarray:
        dots = block @ self._data.T
        if self.metric == "cosine":
            return np.maximum(1.0 - dots, 0.0)
        sq = np.einsum("ij,ij->i", block, block)[:, None] + self._sq_norms[None, :] - 2.0 * dots
        return np.sqrt(np.maximum(sq, 0.0))

    def query(self, queries: np.ndarray, k: int, exclude_fn=None) -> tuple[np.ndarray, np.ndarray]:
        """k nearest baseline vectors of each query.

        Parameters
        ----------
        queries : np.ndarray, shape (m, dim)
        k : int
        exclude_fn : callable, optional
            ``exclude_fn(rows: slice) -> (rows, n) bool``: True where a baseline vector must
            not count as a neighbour of that query (leave-one-out calibration).

        Returns
        -------
        distances : np.ndarray, shape (m, k), float32, ascending
        indices : np.ndarray, shape (m, k), int64
        """
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if self.metric == "cosine":
            q = l2_normalize(q)
        n = len(self)
        k_eff = min(k, n)
        dists = np.empty((q.shape[0], k_eff), dtype=np.float32)
        idx = np.empty((q.shape[0], k_eff), dtype=np.int64)
        for start in range(0, q.shape[0], self.block_size):
            rows = slice(start, min(start + self.block_size, q.shape[0]))
            d = self._distances(q[rows])
            if exclude_fn is not None:
                d = np.where(exclude_fn(rows), np.inf, d)
            part = (
                np.argpartition(d, k_eff - 1, axis=1)[:, :k_eff]
                if k_eff < n
                else (np.broadcast_to(np.arange(n), d.shape).copy())
            )
            pd = np.take_along_axis(d, part, axis=1)
            order = np.argsort(pd, axis=1, kind="stable")
            idx[rows] = np.take_along_axis(part, order, axis=1)
            dists[rows] = np.take_along_axis(pd, order, axis=1)
        return dists, idx


class NNDescentIndex:
    """Approximate search with pynndescent's NN-descent graph.

    Deterministic for a given ``random_state`` (single-threaded build), so a baseline
    rebuilt from saved vectors answers exactly as the original did.
    """

    kind = "nndescent"

    def __init__(
        self,
        vectors: np.ndarray,
        metric: str = "euclidean",
        n_neighbors: int = 30,
        random_state: int = 0,
        epsilon: float = 0.2,
    ):
        from pynndescent import NNDescent

        _check_metric(metric)
        self.metric = metric
        self.epsilon = epsilon
        data = np.ascontiguousarray(vectors, dtype=np.float32)
        self._data = l2_normalize(data) if metric == "cosine" else data
        self._index = NNDescent(
            self._data,
            metric="euclidean",
            n_neighbors=n_neighbors,
            random_state=random_state,
            n_jobs=1,
            low_memory=True,
            compressed=False,
        )
        self._index.prepare()

    def __len__(self) -> int:
        return self._data.shape[0]

    def query(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """k approximate nearest neighbours; shapes (m, k) as ``ExactIndex.query``."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if self.metric == "cosine":
            q = l2_normalize(q)
        k_eff = min(k, len(self))
        idx, dist = self._index.query(q, k=k_eff, epsilon=self.epsilon)
        dist = dist.astype(np.float32)
        if self.metric == "cosine":
            # Unit vectors: |a - b|^2 = 2 - 2 cos, so cosine distance = |a - b|^2 / 2.
            dist = (dist * dist) / 2.0
        return dist, idx.astype(np.int64)


def build_index(
    vectors: np.ndarray, metric: str = "euclidean", method: str = "auto", random_state: int = 0
) -> ExactIndex | NNDescentIndex:
    """Exact below ``APPROXIMATE_MIN_SIZE`` vectors, NN-descent above (``method="auto"``)."""
    if method == "auto":
        method = "exact" if vectors.shape[0] < APPROXIMATE_MIN_SIZE else "nndescent"
    if method == "exact":
        return ExactIndex(vectors, metric)
    if method == "nndescent":
        return NNDescentIndex(vectors, metric, random_state=random_state)
    raise ValueError(f"index method must be 'auto', 'exact' or 'nndescent', not {method!r}")


def warm_up_nndescent() -> None:
    """Compile pynndescent's numba kernels now (cached on disk via NUMBA_CACHE_DIR)."""
    rng = np.random.default_rng(0)
    data = rng.standard_normal((300, 8)).astype(np.float32)
    NNDescentIndex(data, "euclidean", n_neighbors=10).query(data[:5], 3)

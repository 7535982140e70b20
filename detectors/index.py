"""Nearest-neighbour search over a baseline, exact or approximate behind one interface.

``build_index(vectors, metric)`` returns an ``ExactIndex`` (blocked matrix products) below
``APPROXIMATE_MIN_SIZE`` vectors and an ``NNDescentIndex`` (pynndescent) above. Both answer
``query(queries, k) -> (distances, indices)`` with shapes ``(n_queries, k)``, nearest first.

Metrics: ``"euclidean"`` and ``"cosine"`` (1 - cosine similarity). For cosine the index
normalises rows itself, so callers pass raw vectors.
"""

from __future__ import annotations

import numpy as np

# Measured with benchmarks/knn.py and benchmarks/end_to_end.py (docs/benchmarks.md, 2 shared
# cores). Run as the service runs uploads (one torch and one BLAS thread each), exact search
# costs as much per window as decoding and embedding it (the front end) at about 30k vectors,
# for 1 s windows of 256-d (0.37 vs 0.39 ms) and for the default preset's 5 s windows of 512-d
# (2.1 vs 2.2 ms). It grows linearly (50k, 5 s windows: 3.4 ms); NN-descent does not (0.19
# and 0.70 ms at 30k, 0.44 ms at 50k). Below this size exact search costs less than the
# front end, answers exactly, needs no numba (about 25 s of compiling per process, see
# warm_up_nndescent) and is rebuilt in 0.1 s when a baseline loads. From it on NN-descent's
# build (2-4 s at 30k-50k, 160 s at 1M, paid at every fit and load) is paid back after about
# 15k windows at any size, and KNNBaseline re-checks its answers above the threshold exactly.
APPROXIMATE_MIN_SIZE = 30_000
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

    Each block of queries costs one matrix product against the baseline and one cheap pass
    to find the k smallest distances per row (see ``_smallest_k``); the square roots are
    taken for the k winners only.

    Parameters
    ----------
    vectors : np.ndarray, shape (n, dim)
    metric : "euclidean" or "cosine"
    block_size : int
        Most queries per block; blocks are also capped so that one block's distance matrix
        holds at most ``MAX_BLOCK_ELEMENTS`` floats (32 queries per block at 1M vectors).
    """

    kind = "exact"

    def __init__(self, vectors: np.ndarray, metric: str = "euclidean", block_size: int = 1024):
        _check_metric(metric)
        self.metric = metric
        self.block_size = block_size
        data = np.asarray(vectors, dtype=np.float32)
        if metric == "cosine":
            data = l2_normalize(data)
        self._sq_norms = np.einsum("ij,ij->i", data, data)
        # Stored transposed, (dim, n) C-contiguous: the block products ``q @ data.T`` run
        # up to 1.5x faster from this layout (OpenBLAS, small query blocks).
        self._data_t = np.ascontiguousarray(data.T)

    @classmethod
    def _over_rows(cls, rows: np.ndarray, metric: str) -> ExactIndex:
        """An exact index reading ``rows`` ``(n, dim)`` float32 in place (no copy).

        For cosine the rows must already have unit length. Products run from the transposed
        view, a little slower than from the layout ``__init__`` makes.
        """
        self = cls.__new__(cls)
        self.metric = metric
        self.block_size = 1024
        self._sq_norms = np.einsum("ij,ij->i", rows, rows)
        self._data_t = rows.T
        return self

    def __len__(self) -> int:
        return self._data_t.shape[1]

    def _ranking_keys(self, block: np.ndarray) -> np.ndarray:
        """``(b, n)`` float32 keys that order each row like its distances.

        euclidean: ``|x|^2 - 2 q.x`` (the squared distance less the row constant ``|q|^2``);
        cosine: ``-q.x`` (the distance less 1).
        """
        keys = block @ self._data_t
        if self.metric == "cosine":
            np.negative(keys, out=keys)
        else:
            keys *= -2.0
            keys += self._sq_norms
        return keys

    def _keys_to_distances(self, block: np.ndarray, keys: np.ndarray) -> np.ndarray:
        if self.metric == "cosine":
            return np.maximum(keys + 1.0, 0.0)
        q_sq = np.einsum("ij,ij->i", block, block)[:, None]
        return np.sqrt(np.maximum(keys + q_sq, 0.0))

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
        distances : np.ndarray, shape (m, k), float32, ascending (ties: lower index first)
        indices : np.ndarray, shape (m, k), int64
        """
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if self.metric == "cosine":
            q = l2_normalize(q)
        n = len(self)
        k_eff = min(k, n)
        dists = np.empty((q.shape[0], k_eff), dtype=np.float32)
        idx = np.empty((q.shape[0], k_eff), dtype=np.int64)
        step = max(1, min(self.block_size, MAX_BLOCK_ELEMENTS // max(n, 1)))
        for start in range(0, q.shape[0], step):
            rows = slice(start, min(start + step, q.shape[0]))
            keys = self._ranking_keys(q[rows])
            if exclude_fn is not None:
                keys[exclude_fn(rows)] = np.inf
            best_keys, best_idx = _smallest_k(keys, k_eff)
            idx[rows] = best_idx
            dists[rows] = self._keys_to_distances(q[rows], best_keys)
        return dists, idx


# One block's distance matrix holds at most this many float32 (128 MiB).
MAX_BLOCK_ELEMENTS = 1 << 25


def _smallest_k(keys: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` smallest entries of each row of ``keys`` ``(b, n)``, ascending.

    Ties go to the lower column index. Returns ``(values, columns)``, each ``(b, k)``.

    Each row gets a bound ``t`` at or above its k-th smallest entry; the entries ``<= t``
    (about ``k`` of them) are then sorted exactly. For long rows a full partition costs
    about as much as the matrix product that made the keys, so the bound comes from one
    vectorised pass instead: the columns are split into ``m`` interleaved groups (column
    ``j`` is in group ``j % m``) and ``t`` is the k-th smallest of the ``m`` group minima
    (k distinct entries are ``<= t``). Only groups whose minimum is ``<= t``, plus the
    columns past ``m * group_size``, can hold an entry ``<= t``.
    """
    b, n = keys.shape
    if k == 0:
        return np.empty((b, 0), dtype=keys.dtype), np.empty((b, 0), dtype=np.int64)
    group_size = max(1, int(np.sqrt(n / k)))
    m = n // group_size
    if m >= k:  # always true for k <= n; the else branch is a safety net
        main = m * group_size
        mins = keys[:, :main].reshape(b, group_size, m).min(axis=1)
        bound = np.partition(mins, k - 1, axis=1)[:, k - 1]
        rows, groups = np.nonzero(mins <= bound[:, None])
        cols = (groups[:, None] + m * np.arange(group_size)).ravel()
        rows = np.repeat(rows, group_size)
        if main < n:
            tail_rows, tail_cols = np.divmod(np.arange(b * (n - main)), n - main)
            rows = np.concatenate([rows, tail_rows])
            cols = np.concatenate([cols, tail_cols + main])
        vals = keys[rows, cols]
        keep = vals <= bound[rows]
        rows, cols, vals = rows[keep], cols[keep], vals[keep]
    else:
        bound = np.partition(keys, k - 1, axis=1)[:, k - 1]
        rows, cols = np.nonzero(keys <= bound[:, None])
        vals = keys[rows, cols]
    counts = np.bincount(rows, minlength=b)
    if (counts < k).any():  # a NaN row: no entry compares <= NaN
        return _smallest_k_partition(keys, k)
    order = np.lexsort((cols, vals, rows))
    first = np.concatenate(([0], np.cumsum(counts)[:-1]))
    take = order[first[:, None] + np.arange(k)]
    return vals[take], cols[take].astype(np.int64)


def _smallest_k_partition(keys: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``_smallest_k`` by full partition (any ties; used for rows holding NaN)."""
    n = keys.shape[1]
    part = (
        np.argpartition(keys, k - 1, axis=1)[:, :k]
        if k < n
        else np.broadcast_to(np.arange(n), keys.shape).copy()
    )
    vals = np.take_along_axis(keys, part, axis=1)
    order = np.argsort(vals, axis=1, kind="stable")
    return np.take_along_axis(vals, order, axis=1), np.take_along_axis(part, order, axis=1)


class NNDescentIndex:
    """Approximate search with pynndescent's NN-descent graph.

    Deterministic for a given ``random_state`` (single-threaded build: pynndescent's
    multi-threaded build gives a different graph), so a baseline rebuilt from saved vectors
    answers exactly as the original did.

    Approximate neighbours are never nearer than the true ones, so approximate distances
    (and mean-distance scores) are upper bounds of the exact ones; ``_exact()`` gives an exact
    index over the same vectors to re-check the few answers that matter (``KNNBaseline``).
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
        # pynndescent sets numba's thread count for the build and then restores numba's own
        # default; under numba's OpenMP threading layer that is omp_set_num_threads in this
        # thread, which also resets torch's intra-op threads (torch.set_num_threads(1) came
        # back as 2 after a build). Every OpenMP runtime gets its setting back afterwards.
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=None, user_api="openmp"):
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

    def _exact(self) -> ExactIndex:
        """An exact index over the same vectors and metric, sharing their memory."""
        exact = getattr(self, "_exact_index", None)
        if exact is None:
            exact = self._exact_index = ExactIndex._over_rows(self._data, self.metric)
        return exact

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
    """Compile pynndescent's numba kernels now (cached on disk via NUMBA_CACHE_DIR).

    The warm-up index must be large enough to take every code path a real baseline takes:
    pynndescent builds its search tree level by level only for data over 1 MiB
    (``hub_tree.LOCAL_SUBTREE_BYTES``), and with smaller data (the 300 x 8 this used to be)
    those kernels were left to compile during the first real build or load, 15-30 s on the
    request path. 3000 x 128 float32 (1.5 MiB) covers them. Some kernels are never cached
    (pynndescent compiles them with ``cache=False``), so every process pays about 20 s here
    even with a warm cache (benchmarks/knn.py --startup).
    """
    rng = np.random.default_rng(0)
    data = rng.standard_normal((3000, 128)).astype(np.float32)
    index = NNDescentIndex(data, "euclidean", n_neighbors=10)
    index.query(data[:5], 3)
    index.query(data[:1], 3)

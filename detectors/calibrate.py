"""Thresholds from a baseline's own scores.

A baseline vector scored against the rest of the baseline (leave-one-out) behaves like a new
normal window. Overlapping windows of one recording are near copies of each other, so the
vectors of the same group (clip, recording) are left out too: otherwise every normal window
has a twin in the baseline, its leave-one-out score is far too low, and the threshold
flags most new normal audio.
"""

from __future__ import annotations

import numpy as np

from detectors.index import ExactIndex, NNDescentIndex

MAX_CALIBRATION_QUERIES = 5000


def leave_one_out_scores(
    index: ExactIndex | NNDescentIndex,
    vectors: np.ndarray,
    k: int,
    groups: np.ndarray | None = None,
    random_state: int = 0,
) -> np.ndarray:
    """Mean distance of baseline vectors to their k nearest others, excluding their own group.

    Parameters
    ----------
    index : the index built over ``vectors``
    vectors : np.ndarray, shape (n, dim), the indexed vectors in index order
    k : int
    groups : np.ndarray, shape (n,), optional
        Group label per vector; vectors sharing a label never neighbour each other. Without
        groups each vector only leaves itself out.

    Returns
    -------
    np.ndarray, shape (n_queries,), float32 with ``n_queries = min(n, MAX_CALIBRATION_QUERIES)``
    (a seeded random subset for larger baselines).
    """
    n = vectors.shape[0]
    group_ids = (
        np.arange(n) if groups is None else np.unique(np.asarray(groups), return_inverse=True)[1]
    )
    queries = np.arange(n)
    if n > MAX_CALIBRATION_QUERIES:
        queries = np.sort(
            np.random.default_rng(random_state).choice(n, MAX_CALIBRATION_QUERIES, replace=False)
        )
    others = n - np.bincount(group_ids)[group_ids[queries]]
    if (others <= 0).any():
        raise ValueError("leave-one-out needs at least two groups (recordings) in the baseline")

    if isinstance(index, NNDescentIndex):
        # Calibration is exact whatever the index, for two reasons. (1) NN-descent misses the
        # true neighbours of a few queries altogether (benchmarks/knn.py: 1-3 % of fresh
        # queries on multi-mode data, with scores up to 1.5x too high), which would inflate
        # the upper tail the threshold is taken from. (2) With groups it has to fetch
        # k + the largest group neighbours per query, thousands when a single recording is
        # cut into a few segments: 50k vectors, 5 groups took 41 s, the exact search 2.9 s.
        # Exact costs about 5000 queries x n (2 s at 100k vectors, 20-40 s at 1M).
        index = index._exact()

    def exclude(rows: slice) -> np.ndarray:
        return group_ids[queries[rows]][:, None] == group_ids[None, :]

    dist, _ = index.query(vectors[queries], k, exclude_fn=exclude)
    return _mean_finite(dist)


def _mean_finite(dist: np.ndarray) -> np.ndarray:
    finite = np.isfinite(dist)
    total = np.where(finite, dist, 0.0).sum(axis=1)
    return (total / np.maximum(finite.sum(axis=1), 1)).astype(np.float32)


def quantile_threshold(scores: np.ndarray, false_alarm_rate: float) -> float:
    """Score above which a fraction ``false_alarm_rate`` of normal windows would lie.

    Uses the ``1 - false_alarm_rate`` quantile of the leave-one-out scores (``"higher"``
    interpolation, so the threshold is an observed score).
    """
    if not 0.0 < false_alarm_rate < 1.0:
        raise ValueError(f"false_alarm_rate must be in (0, 1), got {false_alarm_rate}")
    if scores.size == 0:
        raise ValueError("cannot calibrate a threshold from zero scores")
    return float(np.quantile(scores, 1.0 - false_alarm_rate, method="higher"))

"""Thresholds from a baseline's own scores, held out by run.

A new window of a healthy machine usually comes from a *new run* (another start, another
day: a little other speed, load, gain and background), so the threshold is chosen from scores
of baseline windows whose whole run was held out of **everything** fitted on the baseline:
the neighbours, the z-scoring and any whitening (``leave_group_out_scores``). Overlapping
windows and consecutive uploads of one run are near copies of each other; leaving out less
than the run makes every held-out window find its twin and the threshold far too low.

The threshold is then taken from those scores by one of two stated rules
(``calibrate_threshold``):

- ``group_quantile``: with at least ``1 / false_alarm_rate`` held-out groups, the
  ``1 - false_alarm_rate`` quantile of the pooled scores;
- ``run_effects_t``: with fewer groups the pooled quantile is decided by one or two runs, so
  a tail model is fitted instead. On the log scale a held-out window's score is its run's
  effect (the median of the run's log scores) plus a within-run residual; a new run's effect
  is predicted by Student's t with ``G - 1`` degrees of freedom from the ``G`` observed run
  effects (``mean + t * sd * sqrt(1 + 1 / G)``), and the threshold is the score a fraction
  ``false_alarm_rate`` of new windows (new run effect plus an observed residual) exceeds.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy import stats

MAX_CALIBRATION_QUERIES = 5000
MAX_CALIBRATION_FOLDS = 20
RULES = ("group_quantile", "run_effects_t")
# With two or three runs Student's t has so heavy a tail that the threshold can exceed any
# score; it is capped here (a float32 score never gets there) rather than overflowing.
MAX_LOG_THRESHOLD = 80.0


def group_folds(groups: np.ndarray, max_folds: int, random_state: int = 0) -> list[np.ndarray]:
    """Partition the distinct groups into at most ``max_folds`` folds of whole groups.

    Returns a list of arrays of group labels (one array per fold). With no more groups than
    ``max_folds`` each fold is one group (leave-one-group-out).
    """
    labels = np.unique(groups)
    if labels.size <= max_folds:
        return [labels[i : i + 1] for i in range(labels.size)]
    order = np.random.default_rng(random_state).permutation(labels.size)
    return [np.sort(labels[part]) for part in np.array_split(order, max_folds)]


def leave_group_out_scores(
    vectors: np.ndarray,
    groups: np.ndarray,
    fit: Callable[[np.ndarray], Callable[[np.ndarray], np.ndarray]],
    max_queries: int = MAX_CALIBRATION_QUERIES,
    max_folds: int = MAX_CALIBRATION_FOLDS,
    random_state: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Scores of baseline vectors by a model fitted without their group.

    Parameters
    ----------
    vectors : np.ndarray, shape (n, dim), the raw (untransformed) baseline vectors
    groups : np.ndarray, shape (n,), the run (or recording) of each vector
    fit : callable
        ``fit(train_mask)`` with a boolean ``(n,)`` mask fits everything on those vectors and
        returns ``score(queries (m, dim)) -> (m,)``.
    max_queries : int
        At most this many vectors are scored (a seeded random subset, every fold kept).
    max_folds : int
        More groups than this are held out in that many folds of whole groups.

    Returns
    -------
    scores : np.ndarray, shape (n_queries,), float32
    score_groups : np.ndarray, shape (n_queries,), the group of each score
    """
    groups = np.asarray(groups)
    n = vectors.shape[0]
    if np.unique(groups).size < 2:
        raise ValueError("leave-group-out calibration needs at least two groups (runs)")
    queried = np.ones(n, dtype=bool)
    if n > max_queries:
        queried[:] = False
        queried[np.random.default_rng(random_state).choice(n, max_queries, replace=False)] = True
    scores, score_groups = [], []
    for fold in group_folds(groups, max_folds, random_state):
        held = np.isin(groups, fold)
        rows = np.flatnonzero(held & queried)
        if rows.size == 0:
            continue
        score = fit(~held)
        scores.append(np.asarray(score(vectors[rows]), dtype=np.float32))
        score_groups.append(groups[rows])
    return np.concatenate(scores), np.concatenate(score_groups)


def quantile_threshold(scores: np.ndarray, false_alarm_rate: float) -> float:
    """The ``1 - false_alarm_rate`` quantile of ``scores`` (an observed score)."""
    _check_rate(false_alarm_rate)
    if scores.size == 0:
        raise ValueError("cannot calibrate a threshold from zero scores")
    return float(np.quantile(scores, 1.0 - false_alarm_rate, method="higher"))


def run_effects_threshold(
    scores: np.ndarray, score_groups: np.ndarray, false_alarm_rate: float
) -> tuple[float, dict[str, float]]:
    """Threshold of the run-effects tail model (module docstring), and its fitted parameters.

    Parameters
    ----------
    scores : np.ndarray, shape (n,), positive held-out scores
    score_groups : np.ndarray, shape (n,), their runs (at least two distinct)
    """
    _check_rate(false_alarm_rate)
    logs = np.log(np.maximum(np.asarray(scores, dtype=np.float64), 1e-12))
    labels, inverse = np.unique(score_groups, return_inverse=True)
    n_groups = labels.size
    if n_groups < 2:
        raise ValueError("the run-effects rule needs held-out scores of at least two runs")
    effects = np.array([np.median(logs[inverse == g]) for g in range(n_groups)])
    residuals = logs - effects[inverse]
    centre = float(effects.mean())
    spread = float(effects.std(ddof=1)) * math.sqrt(1.0 + 1.0 / n_groups)
    spread = max(spread, 1e-6 * max(abs(centre), 1.0))
    dof = n_groups - 1

    def exceedance(log_threshold: float) -> float:
        return float(stats.t.sf((log_threshold - residuals - centre) / spread, df=dof).mean())

    # exceedance() falls from 1 to 0 as the threshold grows: bisect on the log scale.
    low = centre + residuals.min() - 1.0
    high = centre + residuals.max() + spread
    while exceedance(high) > false_alarm_rate and high < MAX_LOG_THRESHOLD:
        high = min(high + 2.0 * (high - low), MAX_LOG_THRESHOLD)
    for _ in range(80):
        mid = 0.5 * (low + high)
        if exceedance(mid) > false_alarm_rate:
            low = mid
        else:
            high = mid
    return float(np.exp(high)), {
        "run_effect_mean": round(centre, 6),
        "run_effect_sd": round(float(effects.std(ddof=1)), 6),
        "residual_sd": round(float(residuals.std()), 6),
        "dof": dof,
    }


def calibrate_threshold(
    scores: np.ndarray, score_groups: np.ndarray, false_alarm_rate: float
) -> tuple[float, dict]:
    """Threshold for ``false_alarm_rate`` from held-out scores, and how it was chosen.

    Returns ``(threshold, method)`` where ``method`` names the rule (``RULES``), the number
    of groups and scores it used and the target.
    """
    _check_rate(false_alarm_rate)
    n_groups = int(np.unique(score_groups).size)
    method: dict = {
        "false_alarm_rate": false_alarm_rate,
        "groups": n_groups,
        "calibration_scores": int(scores.size),
        "held_out": "run",
    }
    if not np.any(scores > 0):
        # Identical vectors (a silent microphone): no spread to calibrate on.
        method.update(rule="degenerate")
        return 0.0, method
    if n_groups >= math.ceil(1.0 / false_alarm_rate - 1e-9):
        method.update(rule="group_quantile", quantile=1.0 - false_alarm_rate)
        return quantile_threshold(scores, false_alarm_rate), method
    threshold, params = run_effects_threshold(scores, score_groups, false_alarm_rate)
    method.update(rule="run_effects_t", **params)
    return threshold, method


def _check_rate(false_alarm_rate: float) -> None:
    if not 0.0 < false_alarm_rate < 1.0:
        raise ValueError(f"false_alarm_rate must be in (0, 1), got {false_alarm_rate}")

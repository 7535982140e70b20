"""EnsembleBaseline: several kNN baselines over parts of one vector, their scores combined.

Each member scores its own columns of the window vector (e.g. log-mel statistics and aisfx
embeddings of the same window, concatenated); member scores live on different scales, so each
is normalised by its own leave-one-out calibration before averaging:

- ``"threshold"``: divided by the member's calibrated threshold (its ratio, 1.0 = its own
  false-alarm boundary);
- ``"zscore"``: standardised by the mean and standard deviation of its leave-one-out scores.

The normalised scores are combined by their ``"mean"`` or their ``"max"`` (a window is as
anomalous as its most surprised member). The ensemble's threshold is calibrated like a
member's: the ``1 - false_alarm_rate`` quantile of the members' normalised leave-one-out
scores combined per calibration vector (the members share the baseline vectors, groups and
seed, so their calibration queries are the same).
Same interface as ``KNNBaseline``: ``fit`` returns self, ``decision_function``, ``threshold_``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from detectors.baseline import KNNBaseline
from detectors.calibrate import quantile_threshold
from detectors.errors import NotFittedError

NORMALIZATIONS = ("threshold", "zscore")
COMBINATIONS = ("mean", "max")


class EnsembleBaseline:
    """Mean (or maximum) of normalised member scores.

    Parameters
    ----------
    members : sequence of KNNBaseline (unfitted)
    dims : sequence of int
        Columns of the input vector each member takes, in order (they sum to the vector length).
    normalize : "threshold" or "zscore"
    combine : "mean" or "max"
    false_alarm_rate : float
        Target fraction of normal windows above the ensemble's ``threshold_``.

    Attributes
    ----------
    offsets_ : np.ndarray, shape (n_members + 1,), column boundaries
    centers_, scales_ : np.ndarray, shape (n_members,), per-member normalisation
    loo_scores_ : np.ndarray, shape (n_calibration,), combined leave-one-out scores
    threshold_ : float
    threshold_method_ : dict, how ``threshold_`` was chosen (and the members' own rules)
    """

    def __init__(
        self,
        members: Sequence[KNNBaseline],
        dims: Sequence[int],
        normalize: str = "threshold",
        combine: str = "mean",
        false_alarm_rate: float = 0.01,
    ) -> None:
        if len(members) != len(dims) or not members:
            raise ValueError(f"need one dims entry per member, got {len(dims)} for {len(members)}")
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {', '.join(NORMALIZATIONS)}")
        if combine not in COMBINATIONS:
            raise ValueError(f"combine must be one of {', '.join(COMBINATIONS)}")
        self.members = list(members)
        self.dims = [int(d) for d in dims]
        self.normalize = normalize
        self.combine = combine
        self.false_alarm_rate = false_alarm_rate

    def fit(self, vectors: np.ndarray, groups: np.ndarray | None = None) -> EnsembleBaseline:
        """Fit every member on its columns of ``(n, sum(dims))`` normal vectors."""
        vectors = np.asarray(vectors, dtype=np.float32)
        self.offsets_ = np.concatenate([[0], np.cumsum(self.dims)])
        if vectors.ndim != 2 or vectors.shape[1] != self.offsets_[-1]:
            raise ValueError(
                f"expected vectors of shape (n, {self.offsets_[-1]}), got {vectors.shape}"
            )
        centers, scales, loo = [], [], []
        for i, member in enumerate(self.members):
            member.fit(self._columns(vectors, i), groups=groups)
            if self.normalize == "threshold":
                center, scale = 0.0, float(member.threshold_)
            else:
                center = float(member.loo_scores_.mean())
                scale = float(member.loo_scores_.std())
            centers.append(center)
            scales.append(max(scale, 1e-12))
            loo.append(member.loo_scores_)
        if len({len(s) for s in loo}) != 1:
            raise ValueError("members calibrated on different numbers of vectors")
        self.centers_ = np.asarray(centers, dtype=np.float64)
        self.scales_ = np.asarray(scales, dtype=np.float64)
        self.loo_scores_ = self._combine(loo)
        self.threshold_ = quantile_threshold(self.loo_scores_, self.false_alarm_rate)
        self.threshold_method_ = {
            "rule": "ensemble_quantile",
            "false_alarm_rate": self.false_alarm_rate,
            "normalize": self.normalize,
            "combine": self.combine,
            "calibration_scores": int(self.loo_scores_.size),
            "members": [dict(getattr(m, "threshold_method_", {})) for m in self.members],
        }
        return self

    def _columns(self, vectors: np.ndarray, i: int) -> np.ndarray:
        return vectors[:, self.offsets_[i] : self.offsets_[i + 1]]

    def _combine(self, member_scores: list[np.ndarray]) -> np.ndarray:
        normalised = [
            (np.asarray(s, dtype=np.float64) - c) / d
            for s, c, d in zip(member_scores, self.centers_, self.scales_, strict=True)
        ]
        combine = np.max if self.combine == "max" else np.mean
        return combine(normalised, axis=0).astype(np.float32)

    def decision_function(self, vectors: np.ndarray) -> np.ndarray:
        """Combined score of each ``(m, sum(dims))`` vector, shape ``(m,)``."""
        if not hasattr(self, "threshold_"):
            raise NotFittedError("this EnsembleBaseline is not fitted yet; call fit(vectors) first")
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.offsets_[-1]:
            raise ValueError(
                f"expected vectors of shape (m, {self.offsets_[-1]}), got {vectors.shape}"
            )
        return self._combine(
            [m.decision_function(self._columns(vectors, i)) for i, m in enumerate(self.members)]
        )

    def predict(self, vectors: np.ndarray) -> np.ndarray:
        """True where a vector's combined score is above ``threshold_``, shape ``(m,)``."""
        return self.decision_function(vectors) > self.threshold_

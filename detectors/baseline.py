"""KNNBaseline: scores windows by their distance to a baseline of normal vectors.

scikit-learn conventions: ``__init__`` stores parameters, ``fit`` returns self, fitted
attributes end in ``_``. Higher scores mean more anomalous.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from detectors.calibrate import leave_one_out_scores, quantile_threshold
from detectors.errors import ArtifactError, NotFittedError
from detectors.index import NNDescentIndex, build_index

ARTIFACT_FORMAT = "humwatch.knn-baseline"
ARTIFACT_VERSION = 1
_ARRAYS = ("vectors", "mean", "scale", "loo_scores")


def _library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for lib in ("humwatch", "numpy", "pynndescent", "scikit-learn"):
        try:
            out[lib] = version(lib)
        except PackageNotFoundError:
            out[lib] = "unknown"
    return out


class KNNBaseline:
    """k-nearest-neighbour anomaly scorer with a calibrated threshold.

    Parameters
    ----------
    k : int
        Neighbours averaged into each score.
    metric : "euclidean" or "cosine"
    standardize : bool
        z-score every dimension with the baseline's mean and standard deviation before search.
    false_alarm_rate : float
        Target fraction of normal windows above ``threshold_``.
    index : "auto", "exact" or "nndescent"
    random_state : int
    embedder_spec : dict, optional
        Spec of the embedder that made the vectors; saved with the model and checked on load.

    Attributes
    ----------
    n_vectors_, dim_ : int
    mean_, scale_ : np.ndarray, shape (dim,)
    vectors_ : np.ndarray, shape (n_vectors, dim), the standardised baseline
    index_ : ExactIndex or NNDescentIndex
    loo_scores_ : np.ndarray, shape (n_calibration,), leave-one-(group-)out scores
    threshold_ : float
    threshold_method_ : dict, how ``threshold_`` was chosen
    """

    def __init__(
        self,
        k: int = 5,
        metric: str = "euclidean",
        standardize: bool = True,
        false_alarm_rate: float = 0.01,
        index: str = "auto",
        random_state: int = 0,
        embedder_spec: dict[str, Any] | None = None,
    ) -> None:
        self.k = k
        self.metric = metric
        self.standardize = standardize
        self.false_alarm_rate = false_alarm_rate
        self.index = index
        self.random_state = random_state
        self.embedder_spec = embedder_spec

    def get_params(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "metric": self.metric,
            "standardize": self.standardize,
            "false_alarm_rate": self.false_alarm_rate,
            "index": self.index,
            "random_state": self.random_state,
            "embedder_spec": self.embedder_spec,
        }

    def fit(self, vectors: np.ndarray, groups: np.ndarray | None = None) -> KNNBaseline:
        """Build the baseline from ``(n, dim)`` normal vectors.

        ``groups`` (shape ``(n,)``) names the recording each vector came from, so that
        calibration leaves out a vector's whole recording, not just the vector itself.
        """
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] < 2:
            raise ValueError(
                f"need at least 2 baseline vectors of shape (n, dim), got {vectors.shape}"
            )
        if not np.isfinite(vectors).all():
            raise ValueError("baseline vectors contain NaN or infinite values")
        if self.k < 1:
            raise ValueError(f"k must be at least 1, got {self.k}")
        if groups is not None and len(groups) != vectors.shape[0]:
            raise ValueError(f"groups has {len(groups)} entries for {vectors.shape[0]} vectors")
        if self.standardize:
            self.mean_ = vectors.mean(axis=0)
            std = vectors.std(axis=0)
            self.scale_ = np.maximum(std, 1e-3 * max(float(std.mean()), 1e-12)).astype(np.float32)
        else:
            self.mean_ = np.zeros(vectors.shape[1], dtype=np.float32)
            self.scale_ = np.ones(vectors.shape[1], dtype=np.float32)
        self.vectors_ = self._standardized(vectors)
        self.n_vectors_, self.dim_ = self.vectors_.shape
        self.index_ = build_index(self.vectors_, self.metric, self.index, self.random_state)
        if groups is None or len(np.unique(groups)) < 2:
            groups = None
        self.loo_scores_ = leave_one_out_scores(
            self.index_, self.vectors_, self.k, groups, self.random_state
        )
        self.threshold_ = quantile_threshold(self.loo_scores_, self.false_alarm_rate)
        self.threshold_method_ = {
            "rule": "leave_one_group_out_quantile"
            if groups is not None
            else "leave_one_out_quantile",
            "false_alarm_rate": self.false_alarm_rate,
            "quantile": 1.0 - self.false_alarm_rate,
            "calibration_scores": int(self.loo_scores_.size),
        }
        return self

    def _standardized(self, vectors: np.ndarray) -> np.ndarray:
        return ((np.asarray(vectors, dtype=np.float32) - self.mean_) / self.scale_).astype(
            np.float32
        )

    def _check_fitted(self) -> None:
        if not hasattr(self, "index_"):
            raise NotFittedError("this KNNBaseline is not fitted yet; call fit(vectors) first")

    def decision_function(self, vectors: np.ndarray) -> np.ndarray:
        """Mean distance of each ``(m, dim)`` vector to its k nearest baseline vectors, ``(m,)``.

        With an approximate index, scores above ``threshold_`` are exact and the others are
        upper bounds of the exact ones (still below the threshold).
        """
        self._check_fitted()
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim_:
            raise ValueError(f"expected vectors of shape (m, {self.dim_}), got {vectors.shape}")
        if vectors.shape[0] == 0:
            return np.zeros(0, dtype=np.float32)
        z = self._standardized(vectors)
        dist, _ = self.index_.query(z, self.k)
        scores = dist.mean(axis=1).astype(np.float32)
        if isinstance(self.index_, NNDescentIndex):
            # Approximate neighbours are never nearer than the true ones, so an approximate
            # score is an upper bound of the exact score: only windows above the threshold can
            # be wrong about it. Those (about the false-alarm rate, plus true outliers) are
            # re-scored exactly, so a window is flagged exactly when exact search flags it;
            # NN-descent misses all true neighbours of 1-3 % of windows (benchmarks/knn.py).
            check = scores > self.threshold_
            if check.any():
                exact, _ = self.index_._exact().query(z[check], self.k)
                scores[check] = exact.mean(axis=1)
        return scores

    def predict(self, vectors: np.ndarray) -> np.ndarray:
        """True where a ``(m, dim)`` vector scores above ``threshold_``, shape ``(m,)``."""
        return self.decision_function(vectors) > self.threshold_

    # -- persistence ------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """Serialise to a versioned envelope (npz, no pickle) with a sha256 checksum."""
        self._check_fitted()
        arrays = {
            "vectors": self.vectors_,
            "mean": self.mean_.astype(np.float32),
            "scale": self.scale_.astype(np.float32),
            "loo_scores": self.loo_scores_,
        }
        meta = {
            "format": ARTIFACT_FORMAT,
            "format_version": ARTIFACT_VERSION,
            "libraries": _library_versions(),
            "params": self.get_params(),
            "threshold": self.threshold_,
            "threshold_method": self.threshold_method_,
            "index_kind": self.index_.kind,
            "checksum": _checksum(arrays),
        }
        buf = io.BytesIO()
        np.savez(buf, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
        return buf.getvalue()

    def save(self, path: str | Path) -> None:
        Path(path).write_bytes(self.to_bytes())

    @classmethod
    def from_bytes(
        cls, data: bytes, expected_embedder: dict[str, Any] | None = None
    ) -> KNNBaseline:
        """Load an envelope written by ``to_bytes``.

        Raises ``ArtifactError`` when the bytes are corrupt, the format version is unknown,
        the checksum does not match, or the embedder differs from ``expected_embedder``.
        """
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                meta = json.loads(npz["meta"].tobytes().decode())
                arrays = {name: npz[name] for name in _ARRAYS}
        except Exception as exc:  # noqa: BLE001 - any parse failure means a bad artifact
            raise ArtifactError(f"not a humwatch baseline artifact ({exc})") from exc
        if meta.get("format") != ARTIFACT_FORMAT:
            raise ArtifactError(f"not a humwatch baseline artifact (format {meta.get('format')!r})")
        if meta.get("format_version") != ARTIFACT_VERSION:
            raise ArtifactError(
                f"baseline artifact format version {meta.get('format_version')} is not supported "
                f"by this humwatch (reads version {ARTIFACT_VERSION}); rebuild the baseline"
            )
        if meta.get("checksum") != _checksum(arrays):
            raise ArtifactError(
                "baseline artifact checksum mismatch: the file is corrupt or altered"
            )
        params = meta["params"]
        if expected_embedder is not None and params.get("embedder_spec") != expected_embedder:
            raise ArtifactError(
                f"baseline was built with embedder {params.get('embedder_spec')}, "
                f"not {expected_embedder}; rebuild the baseline for this embedder"
            )
        model = cls(**params)
        model.mean_, model.scale_ = arrays["mean"], arrays["scale"]
        model.vectors_ = arrays["vectors"]
        model.n_vectors_, model.dim_ = model.vectors_.shape
        model.loo_scores_ = arrays["loo_scores"]
        model.threshold_ = float(meta["threshold"])
        model.threshold_method_ = meta["threshold_method"]
        model.index_ = build_index(
            model.vectors_, model.metric, meta["index_kind"], model.random_state
        )
        return model

    @classmethod
    def load(cls, path: str | Path, expected_embedder: dict[str, Any] | None = None) -> KNNBaseline:
        return cls.from_bytes(Path(path).read_bytes(), expected_embedder)


def _checksum(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in _ARRAYS:
        arr = np.ascontiguousarray(arrays[name])
        h.update(name.encode())
        h.update(str(arr.dtype).encode())
        h.update(str(arr.shape).encode())
        h.update(arr.tobytes())
    return h.hexdigest()

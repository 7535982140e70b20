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

from detectors.calibrate import (
    MAX_CALIBRATION_FOLDS,
    MAX_CALIBRATION_QUERIES,
    calibrate_threshold,
    leave_group_out_scores,
)
from detectors.errors import ArtifactError, NotFittedError
from detectors.index import ExactIndex, NNDescentIndex, build_index
from detectors.transform import FeatureTransform, fit_transform

ARTIFACT_FORMAT = "humwatch.knn-baseline"
# Version 2 adds the whitening projection and the run of each calibration score; version 1
# artifacts (z-scoring only, thresholds from the older leave-one-recording-out rule) load
# and score exactly as before.
ARTIFACT_VERSION = 2
READABLE_VERSIONS = (1, 2)
_ARRAYS = {
    1: ("vectors", "mean", "scale", "loo_scores"),
    2: ("vectors", "mean", "scale", "projection", "loo_scores", "loo_groups"),
}


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
    whiten : float in (0, 1) or None
        Also whiten by the principal components holding this fraction of the z-scored
        variance (``detectors.transform``); None: z-scoring only.
    false_alarm_rate : float
        Target fraction of normal windows (of a new run) above ``threshold_``.
    index : "auto", "exact" or "nndescent"
    random_state : int
    embedder_spec : dict, optional
        Spec of the embedder that made the vectors; saved with the model and checked on load.
    max_calibration_folds : int
        Runs are held out one at a time up to this many, in folds of whole runs beyond.
    whiten_min_runs : int
        Whiten only when the material holds at least this many runs (groups): with fewer, the
        correlations of normal operation are not known well enough and whitening hurt on the
        small dev groups (4-5 clips). From 8 runs, the service's enrollment, it lowered the
        simulated new-run false alarms 5-50x with detection up (docs/evaluation.md).

    Attributes
    ----------
    n_vectors_, dim_ : int, baseline size and input dimension
    transform_ : FeatureTransform, the fitted z-scoring (and whitening)
    mean_, scale_ : np.ndarray, shape (dim,)
    vectors_ : np.ndarray, shape (n_vectors, n_components), the transformed baseline
    index_ : ExactIndex or NNDescentIndex
    loo_scores_ : np.ndarray, shape (n_calibration,), held-out-run scores
    loo_groups_ : np.ndarray, shape (n_calibration,), int64 index of each score's run
    threshold_ : float
    threshold_method_ : dict, how ``threshold_`` was chosen (``calibrate_threshold``)
    whitened_ : bool, whether the transform whitens
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
        whiten: float | None = None,
        max_calibration_folds: int = MAX_CALIBRATION_FOLDS,
        whiten_min_runs: int = 8,
    ) -> None:
        self.k = k
        self.metric = metric
        self.standardize = standardize
        self.false_alarm_rate = false_alarm_rate
        self.index = index
        self.random_state = random_state
        self.embedder_spec = embedder_spec
        self.whiten = whiten
        self.max_calibration_folds = max_calibration_folds
        self.whiten_min_runs = whiten_min_runs

    def get_params(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "metric": self.metric,
            "standardize": self.standardize,
            "false_alarm_rate": self.false_alarm_rate,
            "index": self.index,
            "random_state": self.random_state,
            "embedder_spec": self.embedder_spec,
            "whiten": self.whiten,
            "max_calibration_folds": self.max_calibration_folds,
            "whiten_min_runs": self.whiten_min_runs,
        }

    def fit(self, vectors: np.ndarray, groups: np.ndarray | None = None) -> KNNBaseline:
        """Build the baseline from ``(n, dim)`` normal vectors.

        ``groups`` (shape ``(n,)``) names the run each vector came from; calibration holds
        out whole runs, refitting the transform without them. It needs at least two runs;
        without ``groups`` every vector is its own run (only right for independent vectors).
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
        if self.whiten is not None and not 0.0 < self.whiten < 1.0:
            raise ValueError(f"whiten must be in (0, 1) or None, got {self.whiten}")
        if groups is not None and len(groups) != vectors.shape[0]:
            raise ValueError(f"groups has {len(groups)} entries for {vectors.shape[0]} vectors")
        group_ids = (
            np.arange(vectors.shape[0])
            if groups is None
            else np.unique(np.asarray(groups), return_inverse=True)[1]
        ).astype(np.int64)
        if np.unique(group_ids).size < 2:
            raise ValueError("calibration needs material from at least two runs (groups)")

        n_groups = int(np.unique(group_ids).size)
        whiten = self.whiten if n_groups >= self.whiten_min_runs else None
        self.whitened_ = whiten is not None
        self.transform_ = fit_transform(vectors, self.standardize, whiten, self.random_state)
        self.mean_, self.scale_ = self.transform_.mean, self.transform_.scale
        self.vectors_ = self.transform_(vectors)
        self.n_vectors_, self.dim_ = vectors.shape
        self.index_ = build_index(self.vectors_, self.metric, self.index, self.random_state)

        n_components = self.transform_.n_components

        def fit_without(train: np.ndarray):
            transform = fit_transform(
                vectors[train],
                self.standardize,
                whiten,
                self.random_state,
                n_components=n_components,
            )
            # Calibration is exact whatever the index: NN-descent misses the true neighbours
            # of a few queries (benchmarks/knn.py), which would inflate the tail.
            index = ExactIndex(transform(vectors[train]), self.metric)
            k = min(self.k, int(train.sum()))

            def score(queries: np.ndarray) -> np.ndarray:
                dist, _ = index.query(transform(queries), k)
                return dist.mean(axis=1)

            return score

        self.loo_scores_, self.loo_groups_ = leave_group_out_scores(
            vectors,
            group_ids,
            fit_without,
            MAX_CALIBRATION_QUERIES,
            self.max_calibration_folds,
            self.random_state,
        )
        self.threshold_, self.threshold_method_ = calibrate_threshold(
            self.loo_scores_, self.loo_groups_, self.false_alarm_rate
        )
        self.threshold_method_["whitened"] = self.whitened_
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "index_"):
            raise NotFittedError("this KNNBaseline is not fitted yet; call fit(vectors) first")

    def transform(self, vectors: np.ndarray) -> np.ndarray:
        """``(m, dim)`` raw vectors -> ``(m, dim)`` in the baseline's distance space."""
        self._check_fitted()
        return self.transform_(vectors)

    def kneighbors(self, vectors: np.ndarray, k: int | None = None):
        """Distances and baseline row indices of the ``k`` nearest, each ``(m, k)``."""
        self._check_fitted()
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim_:
            raise ValueError(f"expected vectors of shape (m, {self.dim_}), got {vectors.shape}")
        return self.index_.query(self.transform_(vectors), k or self.k)

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
        z = self.transform_(vectors)
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
        projection = self.transform_.projection
        arrays = {
            "vectors": self.vectors_,
            "mean": self.mean_.astype(np.float32),
            "scale": self.scale_.astype(np.float32),
            "projection": np.zeros((0, 0), np.float32) if projection is None else projection,
            "loo_scores": self.loo_scores_,
            "loo_groups": self.loo_groups_.astype(np.int64),
        }
        meta = {
            "format": ARTIFACT_FORMAT,
            "format_version": ARTIFACT_VERSION,
            "libraries": _library_versions(),
            "params": self.get_params(),
            "threshold": self.threshold_,
            "threshold_method": self.threshold_method_,
            "index_kind": self.index_.kind,
            "checksum": _checksum(arrays, ARTIFACT_VERSION),
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
        """Load an envelope written by ``to_bytes`` (this version or an older readable one).

        Raises ``ArtifactError`` when the bytes are corrupt, the format version is unknown,
        the checksum does not match, or the embedder differs from ``expected_embedder``.
        """
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                meta = json.loads(npz["meta"].tobytes().decode())
                version = meta.get("format_version")
                names = _ARRAYS.get(version, ())
                arrays = {name: npz[name] for name in names}
        except Exception as exc:  # noqa: BLE001 - any parse failure means a bad artifact
            raise ArtifactError(f"not a humwatch baseline artifact ({exc})") from exc
        if meta.get("format") != ARTIFACT_FORMAT:
            raise ArtifactError(f"not a humwatch baseline artifact (format {meta.get('format')!r})")
        if version not in READABLE_VERSIONS:
            raise ArtifactError(
                f"baseline artifact format version {version} is not supported by this "
                f"humwatch (reads versions {', '.join(map(str, READABLE_VERSIONS))}); "
                "rebuild the baseline"
            )
        if meta.get("checksum") != _checksum(arrays, version):
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
        projection = arrays.get("projection")
        model.whitened_ = projection is not None and projection.size > 0
        model.transform_ = FeatureTransform(
            arrays["mean"],
            arrays["scale"],
            projection if projection is not None and projection.size else None,
        )
        model.mean_, model.scale_ = arrays["mean"], arrays["scale"]
        model.vectors_ = arrays["vectors"]
        model.n_vectors_, model.dim_ = model.vectors_.shape[0], model.mean_.shape[0]
        model.loo_scores_ = arrays["loo_scores"]
        model.loo_groups_ = arrays.get(
            "loo_groups", np.full(model.loo_scores_.shape, -1, dtype=np.int64)
        )
        model.threshold_ = float(meta["threshold"])
        model.threshold_method_ = meta["threshold_method"]
        model.index_ = build_index(
            model.vectors_, model.metric, meta["index_kind"], model.random_state
        )
        return model

    @classmethod
    def load(cls, path: str | Path, expected_embedder: dict[str, Any] | None = None) -> KNNBaseline:
        return cls.from_bytes(Path(path).read_bytes(), expected_embedder)


def _checksum(arrays: dict[str, np.ndarray], version: int) -> str:
    return arrays_checksum(arrays, _ARRAYS[version])


def arrays_checksum(arrays: dict[str, np.ndarray], names) -> str:
    """sha256 over the named arrays' names, dtypes, shapes and bytes, in that order."""
    h = hashlib.sha256()
    for name in names:
        arr = np.ascontiguousarray(arrays[name])
        h.update(name.encode())
        h.update(str(arr.dtype).encode())
        h.update(str(arr.shape).encode())
        h.update(arr.tobytes())
    return h.hexdigest()

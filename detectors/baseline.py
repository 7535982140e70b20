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
# and score exactly as before. Version 3 adds the block-scaled second space (``block_space``;
# empty arrays when the baseline has none) and each space's own calibration scores; version
# 2 artifacts load and score as before (one space).
ARTIFACT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
_ARRAYS = {
    1: ("vectors", "mean", "scale", "loo_scores"),
    2: ("vectors", "mean", "scale", "projection", "loo_scores", "loo_groups"),
    3: (
        "vectors",
        "mean",
        "scale",
        "projection",
        "loo_scores",
        "loo_groups",
        "block_vectors",
        "block_mean",
        "block_scale",
        "block_projection",
        "space_loo_scores",
    ),
}
PRIMARY_SPACE = "per-dimension"
BLOCK_SPACE = "block"


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
    block_space : int, optional
        When the baseline whitens, also score in a second whitened space in which every
        dimension is scaled by the RMS standard deviation of its block of ``block_space``
        consecutive dimensions (``fit_transform(scale_block=...)``; for log-mel vectors
        ``n_mels``: the bands of one statistic) instead of its own. Each space is calibrated
        by leave-run-out as a single space is (the same held-out runs); a window's score is
        the larger of its two ratios ``score / space threshold``, and ``threshold_`` is
        calibrated on those combined held-out scores. The per-dimension space catches tonal
        faults in quiet bands, the block space the real faults of the dev groups
        (docs/evaluation.md). None, or a baseline that does not whiten: one space.

    Attributes
    ----------
    n_vectors_, dim_ : int, baseline size and input dimension
    transform_ : FeatureTransform, the fitted z-scoring (and whitening): the per-dimension
        (primary) space, in which ``kneighbors``, ``transform`` and explanations work
    mean_, scale_ : np.ndarray, shape (dim,), of ``transform_``
    vectors_ : np.ndarray, shape (n_vectors, n_components), the baseline in ``transform_``
    index_ : ExactIndex or NNDescentIndex, over ``vectors_``
    loo_scores_ : np.ndarray, shape (n_calibration,), held-out-run scores, in the units of
        ``decision_function`` (combined ratios with two spaces)
    loo_groups_ : np.ndarray, shape (n_calibration,), int64 index of each score's run
    threshold_ : float, for ``decision_function``
    threshold_method_ : dict, how ``threshold_`` was chosen (``calibrate_threshold``); with
        two spaces also ``combine`` and ``spaces`` (each space's threshold and rule)
    whitened_ : bool, whether the transform whitens
    primary_threshold_ : float, the threshold of a mean k-neighbour distance in ``transform_``
        (``threshold_`` itself with one space)
    dual_ : bool, whether the baseline scores in the block-scaled second space too
    block_transform_, block_vectors_, block_index_, block_threshold_ : the second space
        (only when ``dual_``)
    space_loo_scores_ : np.ndarray, shape (n_calibration, 2), each space's held-out scores
        (only when ``dual_``)
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
        block_space: int | None = None,
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
        self.block_space = block_space

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
            "block_space": self.block_space,
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
        if self.block_space is not None and (
            self.block_space < 1 or vectors.shape[1] % self.block_space
        ):
            raise ValueError(
                f"block_space must be a positive divisor of the vectors' dimension "
                f"{vectors.shape[1]}, got {self.block_space}"
            )
        self.whitened_ = whiten is not None
        dual = self.whitened_ and self.standardize and self.block_space is not None
        self.transform_ = fit_transform(vectors, self.standardize, whiten, self.random_state)
        self.mean_, self.scale_ = self.transform_.mean, self.transform_.scale
        self.vectors_ = self.transform_(vectors)
        self.n_vectors_, self.dim_ = vectors.shape
        self.index_ = build_index(self.vectors_, self.metric, self.index, self.random_state)
        blocks, fitted = [None], [self.transform_]
        if dual:
            self.block_transform_ = fit_transform(
                vectors, self.standardize, whiten, self.random_state, scale_block=self.block_space
            )
            self.block_vectors_ = self.block_transform_(vectors)
            self.block_index_ = build_index(
                self.block_vectors_, self.metric, self.index, self.random_state
            )
            blocks.append(self.block_space)
            fitted.append(self.block_transform_)
        n_components = [transform.n_components for transform in fitted]

        def fit_without(train: np.ndarray):
            # Every space is refitted without the held-out runs, keeping its full-baseline
            # component count; with two spaces a score is the row of both spaces' scores.
            scorers = []
            for block, count in zip(blocks, n_components, strict=True):
                transform = fit_transform(
                    vectors[train],
                    self.standardize,
                    whiten,
                    self.random_state,
                    n_components=count,
                    scale_block=block,
                )
                # Calibration is exact whatever the index: NN-descent misses the true
                # neighbours of a few queries (benchmarks/knn.py), which would inflate the tail.
                index = ExactIndex(transform(vectors[train]), self.metric)
                scorers.append((transform, index))
            k = min(self.k, int(train.sum()))

            def score(queries: np.ndarray) -> np.ndarray:
                out = []
                for transform, index in scorers:
                    dist, _ = index.query(transform(queries), k)
                    out.append(dist.mean(axis=1))
                return out[0] if len(out) == 1 else np.stack(out, axis=1)

            return score

        loo_scores, self.loo_groups_ = leave_group_out_scores(
            vectors,
            group_ids,
            fit_without,
            MAX_CALIBRATION_QUERIES,
            self.max_calibration_folds,
            self.random_state,
        )
        if not dual:
            self.dual_ = False
            self.loo_scores_ = loo_scores
            self.threshold_, self.threshold_method_ = calibrate_threshold(
                self.loo_scores_, self.loo_groups_, self.false_alarm_rate
            )
            self.primary_threshold_ = self.threshold_
            self.threshold_method_["whitened"] = self.whitened_
            return self
        spaces = []
        for column, name in enumerate((PRIMARY_SPACE, BLOCK_SPACE)):
            threshold, method = calibrate_threshold(
                loo_scores[:, column], self.loo_groups_, self.false_alarm_rate
            )
            spaces.append((float(threshold), method, name))
        if not all(np.isfinite(t) and t > 0 for t, _, _ in spaces):
            # A space without spread (identical vectors): no ratio to take; keep one space.
            self._drop_block_space()
            self.loo_scores_ = loo_scores[:, 0].copy()
            self.threshold_, self.threshold_method_ = spaces[0][0], spaces[0][1]
            self.primary_threshold_ = self.threshold_
            self.threshold_method_.update(whitened=True, block_space="dropped: no spread")
            return self
        self.dual_ = True
        self.space_loo_scores_ = loo_scores.astype(np.float32)
        self.primary_threshold_, self.block_threshold_ = spaces[0][0], spaces[1][0]
        self.loo_scores_ = self._combine(loo_scores[:, 0], loo_scores[:, 1])
        self.threshold_, self.threshold_method_ = calibrate_threshold(
            self.loo_scores_, self.loo_groups_, self.false_alarm_rate
        )
        self.threshold_method_.update(
            whitened=True,
            combine="max of the spaces' ratios to their thresholds",
            spaces=[
                {
                    "space": name,
                    **({"block": self.block_space} if name == BLOCK_SPACE else {}),
                    "threshold": threshold,
                    "n_components": count,
                    **method,
                }
                for (threshold, method, name), count in zip(spaces, n_components, strict=True)
            ],
        )
        return self

    def _drop_block_space(self) -> None:
        self.dual_ = False
        for name in ("block_transform_", "block_vectors_", "block_index_"):
            self.__dict__.pop(name, None)

    def _combine(self, primary: np.ndarray, block: np.ndarray) -> np.ndarray:
        """The window score of two spaces' scores: the larger ratio to its space's threshold."""
        return np.maximum(
            np.asarray(primary, np.float32) / np.float32(self.primary_threshold_),
            np.asarray(block, np.float32) / np.float32(self.block_threshold_),
        ).astype(np.float32)

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
        """Mean distance of each ``(m, dim)`` vector to its k nearest baseline vectors, ``(m,)``;
        with two spaces (``dual_``) the larger of its two ratios to the spaces' thresholds.

        With an approximate index, scores above ``threshold_`` are exact and the others are
        upper bounds of the exact ones (still below the threshold).
        """
        self._check_fitted()
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim_:
            raise ValueError(f"expected vectors of shape (m, {self.dim_}), got {vectors.shape}")
        if vectors.shape[0] == 0:
            return np.zeros(0, dtype=np.float32)
        if not getattr(self, "dual_", False):
            return self._space_scores(self.transform_, self.index_, vectors, self.threshold_)
        # A window is flagged when either ratio is above threshold_: each space re-scores
        # exactly the windows whose approximate ratio is above it (see _space_scores), so the
        # combined score is exact wherever it is above threshold_, an upper bound elsewhere.
        # (A hair below, so float32 rounding of the ratio never leaves a window unchecked.)
        above = self.threshold_ * (1.0 - 1e-5)
        primary = self._space_scores(
            self.transform_, self.index_, vectors, above * self.primary_threshold_
        )
        block = self._space_scores(
            self.block_transform_, self.block_index_, vectors, above * self.block_threshold_
        )
        return self._combine(primary, block)

    def _space_scores(
        self, transform: FeatureTransform, index, vectors: np.ndarray, exact_above: float
    ) -> np.ndarray:
        """Mean k-neighbour distances ``(m,)`` in one space, exact above ``exact_above``."""
        z = transform(vectors)
        dist, _ = index.query(z, self.k)
        scores = dist.mean(axis=1).astype(np.float32)
        if isinstance(index, NNDescentIndex):
            # Approximate neighbours are never nearer than the true ones, so an approximate
            # score is an upper bound of the exact score: only windows above the threshold can
            # be wrong about it. Those (about the false-alarm rate, plus true outliers) are
            # re-scored exactly, so a window is flagged exactly when exact search flags it;
            # NN-descent misses all true neighbours of 1-3 % of windows (benchmarks/knn.py).
            check = scores > exact_above
            if check.any():
                exact, _ = index._exact().query(z[check], self.k)
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
        empty = np.zeros((0, 0), np.float32)
        dual = getattr(self, "dual_", False)
        block = self.block_transform_ if dual else None
        arrays = {
            "vectors": self.vectors_,
            "mean": self.mean_.astype(np.float32),
            "scale": self.scale_.astype(np.float32),
            "projection": empty if projection is None else projection,
            "loo_scores": self.loo_scores_,
            "loo_groups": self.loo_groups_.astype(np.int64),
            "block_vectors": self.block_vectors_ if dual else empty,
            "block_mean": block.mean.astype(np.float32) if dual else empty,
            "block_scale": block.scale.astype(np.float32) if dual else empty,
            "block_projection": block.projection if dual else empty,
            "space_loo_scores": self.space_loo_scores_ if dual else empty,
        }
        spaces = {}
        if dual:
            spaces = {
                "primary_threshold": self.primary_threshold_,
                "block_threshold": self.block_threshold_,
                "block_index_kind": self.block_index_.kind,
            }
        meta = {
            "format": ARTIFACT_FORMAT,
            "format_version": ARTIFACT_VERSION,
            "libraries": _library_versions(),
            "params": self.get_params(),
            "threshold": self.threshold_,
            "threshold_method": self.threshold_method_,
            "index_kind": self.index_.kind,
            **spaces,
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
        block_vectors = arrays.get("block_vectors")
        model.dual_ = block_vectors is not None and block_vectors.size > 0
        if not model.dual_:
            model.primary_threshold_ = model.threshold_
            return model
        model.block_transform_ = FeatureTransform(
            arrays["block_mean"], arrays["block_scale"], arrays["block_projection"]
        )
        model.block_vectors_ = block_vectors
        model.space_loo_scores_ = arrays["space_loo_scores"]
        model.primary_threshold_ = float(meta["primary_threshold"])
        model.block_threshold_ = float(meta["block_threshold"])
        model.block_index_ = build_index(
            model.block_vectors_, model.metric, meta["block_index_kind"], model.random_state
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

"""The per-baseline feature transform: z-scoring and optional shrinkage whitening.

A baseline measures distances in a space fitted on its own vectors: each dimension z-scored
with the baseline's mean and standard deviation, then (optionally) whitened by principal
components: projected on the eigenvectors of the baseline's correlation matrix that hold a
fraction ``whiten`` of its variance, each divided by its standard deviation. The distance is
then a Mahalanobis distance within the directions normal operation varies in: a change that
normal operation never shows (correlated bands moving apart) counts for more than the same
change along a direction normal operation wanders in, and the weakest directions (mostly
estimation noise with a few hundred vectors of 512 dimensions) are left out.

Calibration refits this transform without the held-out run (``detectors.calibrate``), keeping
as many components as the full baseline's transform (``n_components``): the kept count grows
with the number of vectors, and a distance over more whitened components is larger, so refits
that chose their own count on fewer vectors scored held-out runs lower than the deployed
baseline scores a new run (on DCASE 2023 valve the held-out normals' window false-alarm rate
fell from 3.4 % to 2.4 % with the count fixed; docs/evaluation.md).

A second space scales each dimension, before the whitening, by the RMS standard deviation of
its statistic block instead of its own (``scale_block``): a quiet band keeps its small size
relative to the loud bands of its statistic, where per-dimension z-scoring blows it up to
the size of every other. ``detectors.baseline.KNNBaseline(block_space=...)`` scores in both
spaces and takes the larger ratio to each space's threshold.

The principal components come from an SVD of at most ``MAX_PCA_ROWS`` vectors (a seeded
sample beyond), so a refit costs about ``min(n, 4096) * dim**2`` operations whatever the baseline's
size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_SCALE_FRACTION = 1e-3  # scale floor relative to the mean scale (constant dimensions)
MIN_EIGENVALUE = 1e-6
MAX_PCA_ROWS = 4096


@dataclass
class FeatureTransform:
    """``x -> ((x - mean) / scale) @ projection``; ``projection`` None means identity.

    Attributes
    ----------
    mean, scale : np.ndarray, shape (dim,), float32
    projection : np.ndarray, shape (dim, n_components), float32, or None
    """

    mean: np.ndarray
    scale: np.ndarray
    projection: np.ndarray | None = None

    def __call__(self, vectors: np.ndarray) -> np.ndarray:
        """``(n, dim)`` -> ``(n, n_components)`` float32 in the baseline's distance space."""
        z = (np.asarray(vectors, dtype=np.float32) - self.mean) / self.scale
        if self.projection is not None:
            z = z @ self.projection
        return z.astype(np.float32, copy=False)

    @property
    def n_components(self) -> int | None:
        """Number of whitened components, None when the transform does not whiten."""
        return None if self.projection is None else int(self.projection.shape[1])

    @classmethod
    def identity(cls, dim: int) -> FeatureTransform:
        return cls(np.zeros(dim, np.float32), np.ones(dim, np.float32))


def fit_transform(
    vectors: np.ndarray,
    standardize: bool,
    whiten: float | None,
    random_state: int = 0,
    residual: bool = False,
    n_components: int | None = None,
    scale_block: int | None = None,
) -> FeatureTransform:
    """The transform of a baseline of these ``(n, dim)`` vectors.

    Parameters
    ----------
    vectors : np.ndarray, shape (n, dim)
    standardize : bool, z-score every dimension
    whiten : float in (0, 1) or None
        Fraction of the z-scored variance the kept principal components hold; None leaves
        the z-scored space as it is.
    random_state : int, seeds the row sample of large baselines
    n_components : int, optional
        With ``whiten``, keep exactly this many components (fewer only when the vectors span
        fewer) instead of the count that holds the ``whiten`` share: calibration refits use
        the full baseline's count.
    scale_block : int, optional
        With ``standardize`` and ``whiten``, scale each dimension before the whitening not by
        its own (floored) standard deviation but by the RMS of those over its block of
        ``scale_block`` consecutive dimensions (for log-mel vectors: the bands of one
        statistic), so a dimension keeps its size relative to the others of its statistic.
        ``dim`` must be a multiple of it. Ignored without whitening or standardisation.
    """
    x = np.asarray(vectors, dtype=np.float64)
    n, dim = x.shape
    if scale_block is not None and (scale_block < 1 or dim % scale_block):
        raise ValueError(
            f"scale_block must be a positive divisor of the vectors' dimension {dim}, "
            f"got {scale_block}"
        )
    if not standardize and whiten is None:
        return FeatureTransform.identity(dim)
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    if standardize:
        scale = np.maximum(std, MIN_SCALE_FRACTION * max(float(std.mean()), 1e-12))
        if scale_block is not None and whiten is not None:
            block_rms = np.sqrt(np.mean(scale.reshape(-1, scale_block) ** 2, axis=1))
            scale = np.repeat(block_rms, scale_block)
    else:
        scale = np.ones(dim)
    projection = None
    if whiten is not None:
        rows = x
        if n > MAX_PCA_ROWS:
            pick = np.random.default_rng(random_state).choice(n, MAX_PCA_ROWS, replace=False)
            rows = x[np.sort(pick)]
        eigenvalues, components = _principal_components((rows - mean) / scale)
        share = np.cumsum(eigenvalues) / max(float(eigenvalues.sum()), 1e-12)
        wanted = int(np.searchsorted(share, whiten) + 1) if n_components is None else n_components
        keep = max(1, min(wanted, eigenvalues.size))
        floor = MIN_EIGENVALUE * max(float(eigenvalues[0]), 1e-12)
        std_components = np.sqrt(np.maximum(eigenvalues[:keep], floor))
        projection = components[:, :keep] / std_components
        if residual and keep < eigenvalues.size:
            # The directions left out are not ignored: what a vector has outside the kept
            # subspace counts at the mean variance of the left-out components (probabilistic
            # PCA), so a change that normal operation never shows stays visible.
            rest = max(float(eigenvalues[keep:].mean()), floor)
            basis = components[:, :keep]
            projection = np.hstack([projection, (np.eye(dim) - basis @ basis.T) / np.sqrt(rest)])
        projection = projection.astype(np.float32)
    return FeatureTransform(mean.astype(np.float32), scale.astype(np.float32), projection)


def _principal_components(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (descending, ``(r,)``) and unit eigenvectors (``(dim, r)``) of the
    covariance ``z.T @ z / n`` of centred ``(n, dim)`` rows, through the smaller of the Gram
    matrix ``z @ z.T`` and the covariance itself."""
    n, dim = z.shape
    if n < dim:
        gram_values, gram_vectors = np.linalg.eigh(z @ z.T)
        order = np.argsort(gram_values)[::-1]
        gram_values = np.maximum(gram_values[order], 0.0)
        positive = gram_values > MIN_EIGENVALUE * max(float(gram_values[0]), 1e-12)
        vectors = z.T @ gram_vectors[:, order][:, positive] / np.sqrt(gram_values[positive])
        return gram_values[positive] / n, vectors
    values, vectors = np.linalg.eigh(z.T @ z / n)
    order = np.argsort(values)[::-1]
    return np.maximum(values[order], 0.0), vectors[:, order]

"""The per-baseline feature transform: z-scoring and optional shrinkage whitening.

A baseline measures distances in a space fitted on its own vectors: each dimension z-scored
with the baseline's mean and standard deviation, then (optionally) whitened by principal
components: projected on the eigenvectors of the baseline's correlation matrix that hold a
fraction ``whiten`` of its variance, each divided by its standard deviation. The distance is
then a Mahalanobis distance within the directions normal operation varies in: a change that
normal operation never shows (correlated bands moving apart) counts for more than the same
change along a direction normal operation wanders in, and the weakest directions (mostly
estimation noise with a few hundred vectors of 512 dimensions) are left out.

Calibration refits this transform without the held-out run (``detectors.calibrate``), so it
is fitted from ``MomentSums``: the sums over a run are subtracted from the sums over all
vectors instead of passing over the data again.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_SCALE_FRACTION = 1e-3  # scale floor relative to the mean scale (constant dimensions)
MIN_EIGENVALUE = 1e-6


@dataclass
class MomentSums:
    """Count, sum and (optionally) sum of outer products of a set of ``(n, dim)`` vectors."""

    n: int
    total: np.ndarray  # (dim,) float64
    squares: np.ndarray  # (dim,) float64
    outer: np.ndarray | None  # (dim, dim) float64, only when whitening

    @classmethod
    def of(cls, vectors: np.ndarray, with_outer: bool) -> MomentSums:
        x = np.asarray(vectors, dtype=np.float64)
        return cls(
            n=x.shape[0],
            total=x.sum(axis=0),
            squares=np.einsum("ij,ij->j", x, x),
            outer=x.T @ x if with_outer else None,
        )

    def __sub__(self, other: MomentSums) -> MomentSums:
        return MomentSums(
            n=self.n - other.n,
            total=self.total - other.total,
            squares=self.squares - other.squares,
            outer=None if self.outer is None else self.outer - other.outer,
        )


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

    @classmethod
    def identity(cls, dim: int) -> FeatureTransform:
        return cls(np.zeros(dim, np.float32), np.ones(dim, np.float32))


def fit_transform(sums: MomentSums, standardize: bool, whiten: float | None) -> FeatureTransform:
    """The transform of a baseline whose vectors have these moment sums.

    Parameters
    ----------
    sums : MomentSums (with ``outer`` when ``whiten`` is set)
    standardize : bool, z-score every dimension
    whiten : float in (0, 1) or None
        Fraction of the z-scored variance the kept principal components hold; None leaves
        the z-scored space as it is.
    """
    dim = sums.total.shape[0]
    if not standardize and whiten is None:
        return FeatureTransform.identity(dim)
    n = max(sums.n, 1)
    mean = sums.total / n
    var = np.maximum(sums.squares / n - mean * mean, 0.0)
    std = np.sqrt(var)
    if standardize:
        scale = np.maximum(std, MIN_SCALE_FRACTION * max(float(std.mean()), 1e-12))
    else:
        scale = np.ones(dim)
    projection = None
    if whiten is not None:
        cov = sums.outer / n - np.outer(mean, mean)
        corr = cov / np.outer(scale, scale)
        eigenvalues, eigenvectors = np.linalg.eigh(corr)
        eigenvalues, eigenvectors = eigenvalues[::-1], eigenvectors[:, ::-1]
        eigenvalues = np.maximum(eigenvalues, 0.0)
        share = np.cumsum(eigenvalues) / max(float(eigenvalues.sum()), 1e-12)
        keep = int(np.searchsorted(share, whiten) + 1)
        keep = max(1, min(keep, max(sums.n - 1, 1), dim))
        floor = MIN_EIGENVALUE * max(float(eigenvalues[0]), 1e-12)
        std_components = np.sqrt(np.maximum(eigenvalues[:keep], floor))
        projection = (eigenvectors[:, :keep] / std_components).astype(np.float32)
    return FeatureTransform(mean.astype(np.float32), scale.astype(np.float32), projection)

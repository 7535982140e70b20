"""The Embedder protocol every window embedder follows."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Embedder(Protocol):
    """Turns windows of audio into vectors.

    Attributes
    ----------
    name : str
        Registry name ("logmel", "hf").
    sample_rate : int
        Rate the windows must have.
    dim : int
        Length of each vector.
    metric : str
        Distance the vectors are meant to be compared with ("cosine" or "euclidean").
    spec : dict
        JSON-serialisable parameters that rebuild an identical embedder via ``build_embedder``.
    """

    name: str
    sample_rate: int
    dim: int
    metric: str

    @property
    def spec(self) -> dict[str, Any]: ...

    def embed(self, windows: np.ndarray) -> np.ndarray:
        """``(n_windows, window_samples)`` float32 -> ``(n_windows, dim)`` float32."""
        ...

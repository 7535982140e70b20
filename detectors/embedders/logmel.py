"""Log-mel spectrogram statistics: the default embedder (no weights, deterministic).

Each window becomes a log-mel spectrogram ``(n_mels, n_frames)``; the frames are pooled by a
list of statistics, each giving ``n_mels`` values, which are concatenated:

- ``mean``, ``std``, ``max``, ``min``: per band over the window's frames;
- ``pNN`` (e.g. ``p90``): the NN-th percentile per band;
- ``dstd``: standard deviation of the frame-to-frame difference per band (transient energy:
  valve clicks and bearing impacts raise it while leaving the mean almost unchanged).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from detectors.errors import EmbedderError

_BASE_STATS = ("mean", "std", "max", "min", "dstd")


def _check_stat(stat: str) -> None:
    if stat in _BASE_STATS:
        return
    if stat.startswith("p") and stat[1:].isdigit() and 0 <= int(stat[1:]) <= 100:
        return
    raise EmbedderError(
        f"unknown pooling statistic {stat!r}; use {', '.join(_BASE_STATS)} or pNN (0..100)"
    )


class LogMelEmbedder:
    """Pooled log-mel statistics per window.

    Parameters
    ----------
    sample_rate : int
    n_fft, hop_length, n_mels : int
        STFT and mel filterbank sizes.
    f_min, f_max : float
        Mel band edges in Hz (``f_max`` None means Nyquist).
    pooling : sequence of str
        Statistics over frames (see the module docstring).
    metric : str
        Distance the vectors are meant for; recorded in baselines built from them.
    batch_size : int
        Windows per STFT batch (bounds memory).
    """

    name = "logmel"

    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 1024,
        hop_length: int = 256,
        n_mels: int = 128,
        f_min: float = 0.0,
        f_max: float | None = None,
        pooling: tuple[str, ...] | list[str] = ("mean", "std"),
        metric: str = "euclidean",
        batch_size: int = 256,
    ) -> None:
        import torchaudio

        pooling = tuple(pooling)
        if not pooling:
            raise EmbedderError("pooling needs at least one statistic")
        for stat in pooling:
            _check_stat(stat)
        if metric not in ("cosine", "euclidean"):
            raise EmbedderError(f"metric must be 'cosine' or 'euclidean', not {metric!r}")
        self.sample_rate = int(sample_rate)
        self.n_fft = int(n_fft)
        self.hop_length = int(hop_length)
        self.n_mels = int(n_mels)
        self.f_min = float(f_min)
        self.f_max = None if f_max is None else float(f_max)
        self.pooling = pooling
        self.metric = metric
        self.batch_size = int(batch_size)
        self.dim = self.n_mels * len(pooling)
        self._mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=self.sample_rate,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            n_mels=self.n_mels,
            f_min=self.f_min,
            f_max=self.f_max,
            power=2.0,
        )

    @property
    def spec(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sample_rate": self.sample_rate,
            "n_fft": self.n_fft,
            "hop_length": self.hop_length,
            "n_mels": self.n_mels,
            "f_min": self.f_min,
            "f_max": self.f_max,
            "pooling": list(self.pooling),
            "metric": self.metric,
        }

    def log_mel(self, windows: np.ndarray) -> torch.Tensor:
        """``(n, window_samples)`` -> log-mel ``(n, n_mels, n_frames)`` in dB-like units."""
        x = torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32))
        with torch.no_grad():
            return 10.0 * torch.log10(self._mel(x) + 1e-10)

    def _pool(self, logmel: torch.Tensor) -> torch.Tensor:
        parts = []
        for stat in self.pooling:
            if stat == "mean":
                parts.append(logmel.mean(dim=-1))
            elif stat == "std":
                parts.append(logmel.std(dim=-1, unbiased=False))
            elif stat == "max":
                parts.append(logmel.amax(dim=-1))
            elif stat == "min":
                parts.append(logmel.amin(dim=-1))
            elif stat == "dstd":
                diff = logmel[..., 1:] - logmel[..., :-1]
                parts.append(
                    diff.std(dim=-1, unbiased=False)
                    if diff.shape[-1] > 1
                    else torch.zeros_like(logmel[..., 0])
                )
            else:
                parts.append(torch.quantile(logmel, int(stat[1:]) / 100.0, dim=-1))
        return torch.cat(parts, dim=-1)

    def embed(self, windows: np.ndarray) -> np.ndarray:
        """``(n_windows, window_samples)`` float32 -> ``(n_windows, dim)`` float32."""
        if windows.ndim != 2:
            raise EmbedderError(f"windows must be (n_windows, window_samples), got {windows.shape}")
        if windows.shape[1] < self.n_fft:
            raise EmbedderError(
                f"windows of {windows.shape[1]} samples are shorter than n_fft={self.n_fft}"
            )
        out = np.empty((windows.shape[0], self.dim), dtype=np.float32)
        with torch.no_grad():
            for start in range(0, windows.shape[0], self.batch_size):
                batch = windows[start : start + self.batch_size]
                out[start : start + len(batch)] = self._pool(self.log_mel(batch)).numpy()
        return out

"""Log-mel spectrogram statistics: the default embedder (no weights, deterministic).

Each window becomes a log-mel spectrogram ``(n_mels, n_frames)``; the frames are pooled by a
list of statistics, each giving ``n_mels`` values, which are concatenated:

- ``mean``, ``std``, ``max``, ``min``: per band over the window's frames;
- ``pNN`` (e.g. ``p90``): the NN-th percentile per band;
- ``dstd``: standard deviation of the frame-to-frame difference per band (transient energy:
  valve clicks and bearing impacts raise it while leaving the mean almost unchanged).

Framing. ``framing="window"`` computes a spectrogram per window (what baselines built before
recording framing use; their specs carry no ``framing`` and keep it). ``framing="recording"``
(``embed_recording``) computes the spectrogram once per recording and pools each window's
frames from it: with 5 s windows every 1 s that is 5x less spectrogram work, and the mel
filterbank (98 % zeros) is applied as a sparse product. The window and window hop must then
be whole numbers of frame hops (320 samples at 16 kHz: 20 ms); a window's frames are the
``window / hop + 1`` frames centred on its samples, as per-window framing gives, except that
its edge frames see the neighbouring audio instead of a reflection.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from detectors.errors import EmbedderError

_BASE_STATS = ("mean", "std", "max", "min", "dstd")
FRAMINGS = ("window", "recording")


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
        framing: str = "window",
    ) -> None:
        import torchaudio

        pooling = tuple(pooling)
        if not pooling:
            raise EmbedderError("pooling needs at least one statistic")
        for stat in pooling:
            _check_stat(stat)
        if metric not in ("cosine", "euclidean"):
            raise EmbedderError(f"metric must be 'cosine' or 'euclidean', not {metric!r}")
        if framing not in FRAMINGS:
            raise EmbedderError(f"framing must be one of {', '.join(FRAMINGS)}, not {framing!r}")
        self.framing = framing
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
            **({"framing": self.framing} if self.framing != "window" else {}),
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

    def frames_per(self, samples: int) -> int | None:
        """Frame hops in ``samples``, or None when it is not a whole number of them."""
        return samples // self.hop_length if samples % self.hop_length == 0 else None

    def log_mel_recording(self, waveform: np.ndarray) -> np.ndarray:
        """``(n_samples,)`` -> log-mel ``(n_mels, n_frames)`` of the whole recording (sparse
        mel product; frame ``j`` is centred on sample ``j * hop_length``)."""
        x = torch.from_numpy(np.ascontiguousarray(waveform, dtype=np.float32))
        with torch.no_grad():
            power = self._mel.spectrogram(x).numpy()  # (n_freq, n_frames)
        mel = self._sparse_filterbank() @ power
        return (10.0 * np.log10(mel + 1e-10)).astype(np.float32)

    def _sparse_filterbank(self):
        if not hasattr(self, "_fb_sparse"):
            from scipy import sparse

            fb = self._mel.mel_scale.fb.numpy()  # (n_freq, n_mels)
            self._fb_sparse = sparse.csr_matrix(fb.T.astype(np.float32))
        return self._fb_sparse

    def embed_recording(self, waveform: np.ndarray, windows) -> np.ndarray:
        """Vectors ``(n_windows, dim)`` of ``windows`` (``detectors.windows.Windows``) cut from
        ``waveform`` ``(n_samples,)``; per window unless the spec says ``framing="recording"``
        and the windows lie on the frame grid."""
        starts = np.asarray(windows.start_samples)
        window_samples = windows.window_samples
        win_frames = self.frames_per(window_samples)
        on_grid = starts.size > 0 and bool(np.all(starts % self.hop_length == 0))
        if self.framing != "recording" or win_frames is None or not on_grid:
            return self.embed(windows.samples)
        if window_samples < self.n_fft:
            raise EmbedderError(
                f"windows of {window_samples} samples are shorter than n_fft={self.n_fft}"
            )
        logmel = torch.from_numpy(self.log_mel_recording(waveform))
        first = starts // self.hop_length
        index = first[:, None] + np.arange(win_frames + 1)[None, :]
        out = np.empty((starts.size, self.dim), dtype=np.float32)
        with torch.no_grad():
            for start in range(0, starts.size, self.batch_size):
                rows = index[start : start + self.batch_size]
                block = logmel[:, torch.from_numpy(rows)].permute(1, 0, 2)  # (b, mels, frames)
                out[start : start + rows.shape[0]] = self._pool(block).numpy()
        return out

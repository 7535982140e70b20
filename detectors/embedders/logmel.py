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
        band_smoothing: int = 1,
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
        if int(band_smoothing) != band_smoothing or not 1 <= band_smoothing <= 15:
            raise EmbedderError(
                f"band_smoothing must be a whole number 1..15, not {band_smoothing}"
            )
        self.band_smoothing = int(band_smoothing)
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
            **({"band_smoothing": self.band_smoothing} if self.band_smoothing != 1 else {}),
        }

    def _smooth(self, logmel: np.ndarray) -> np.ndarray:
        """Average ``(..., n_mels, n_frames)`` log-mel over ``band_smoothing`` adjacent bands
        (centred, edge bands repeated): a harmonic that a speed change of a few percent moves
        into the next band changes the smoothed value little."""
        if self.band_smoothing == 1:
            return logmel
        from scipy.ndimage import uniform_filter1d

        return uniform_filter1d(logmel, self.band_smoothing, axis=-2, mode="nearest")

    def log_mel(self, windows: np.ndarray) -> torch.Tensor:
        """``(n, window_samples)`` -> log-mel ``(n, n_mels, n_frames)`` in dB-like units."""
        x = torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32))
        with torch.no_grad():
            logmel = 10.0 * torch.log10(self._mel(x) + 1e-10)
        return (
            logmel if self.band_smoothing == 1 else torch.from_numpy(self._smooth(logmel.numpy()))
        )

    def _power(self, x: np.ndarray) -> np.ndarray:
        """Power spectrogram ``(..., n_frames, n_freq)`` float32 of ``x`` ``(..., n_samples)``.

        The STFT torchaudio's ``Spectrogram`` takes (same window, centring and reflection),
        with ``|z|**2`` as ``re**2 + im**2`` on the frames-major array torch returns: a
        quarter of the cost of ``abs().pow(2)``, equal to it within float32 rounding.
        """
        spec = self._mel.spectrogram
        with torch.no_grad():
            z = torch.stft(
                torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
                n_fft=spec.n_fft,
                hop_length=spec.hop_length,
                win_length=spec.win_length,
                window=spec.window,
                center=spec.center,
                pad_mode=spec.pad_mode,
                normalized=False,
                onesided=True,
                return_complex=True,
            )
        ri = torch.view_as_real(z.transpose(-1, -2)).numpy()  # (..., frames, freq, 2), a view
        return np.square(ri[..., 0]) + np.square(ri[..., 1])

    def _pool(self, logmel: torch.Tensor) -> torch.Tensor:
        """Reference pooling of ``(..., n_mels, n_frames)`` in torch (kept for comparison;
        the embedding paths use ``_pool_frames``, which gives the same values)."""
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

    def _pool_frames(self, frames: np.ndarray, diffs: np.ndarray | None) -> np.ndarray:
        """Pooled statistics ``(n, dim)`` float32 of ``frames`` ``(n, n_mels, n_frames)``
        float32 (``diffs``: their frame-to-frame differences, or None to take them here).

        Means and standard deviations in float64, two passes (torch's ``std`` accumulates in
        double too), rounded to float32: the values of ``_pool`` within float32 rounding, at
        a fraction of its cost on strided blocks.
        """
        parts = []
        wide = None
        for stat in self.pooling:
            if stat in ("mean", "std"):
                if wide is None:
                    wide = frames.astype(np.float64)
                    mean = wide.mean(axis=-1)
                parts.append(mean if stat == "mean" else _std(wide, mean))
            elif stat == "max":
                parts.append(frames.max(axis=-1))
            elif stat == "min":
                parts.append(frames.min(axis=-1))
            elif stat == "dstd":
                if diffs is None:
                    diffs = frames[..., 1:] - frames[..., :-1]
                if diffs.shape[-1] > 1:
                    d = diffs.astype(np.float64)
                    parts.append(_std(d, d.mean(axis=-1)))
                else:
                    parts.append(np.zeros(frames.shape[:-1], np.float32))
            else:
                q = torch.quantile(torch.from_numpy(frames), int(stat[1:]) / 100.0, dim=-1)
                parts.append(q.numpy())
        return np.concatenate([p.astype(np.float32, copy=False) for p in parts], axis=-1)

    def embed(self, windows: np.ndarray) -> np.ndarray:
        """``(n_windows, window_samples)`` float32 -> ``(n_windows, dim)`` float32."""
        if windows.ndim != 2:
            raise EmbedderError(f"windows must be (n_windows, window_samples), got {windows.shape}")
        if windows.shape[1] < self.n_fft:
            raise EmbedderError(
                f"windows of {windows.shape[1]} samples are shorter than n_fft={self.n_fft}"
            )
        out = np.empty((windows.shape[0], self.dim), dtype=np.float32)
        fb = self._mel.mel_scale.fb
        with torch.no_grad():
            for start in range(0, windows.shape[0], self.batch_size):
                batch = windows[start : start + self.batch_size]
                power = torch.from_numpy(self._power(batch))  # (b, frames, freq)
                # torchaudio's MelScale: the same dense product, then log as in log_mel.
                logmel = 10.0 * torch.log10(torch.matmul(power, fb).transpose(-1, -2) + 1e-10)
                out[start : start + len(batch)] = self._pool_frames(
                    self._smooth(logmel.numpy()), None
                )
        return out

    def frames_per(self, samples: int) -> int | None:
        """Frame hops in ``samples``, or None when it is not a whole number of them."""
        return samples // self.hop_length if samples % self.hop_length == 0 else None

    def log_mel_recording(self, waveform: np.ndarray) -> np.ndarray:
        """``(n_samples,)`` -> log-mel ``(n_mels, n_frames)`` of the whole recording (sparse
        mel product; frame ``j`` is centred on sample ``j * hop_length``)."""
        power = self._power(waveform)  # (n_frames, n_freq)
        mel = self._sparse_filterbank() @ power.T
        return self._smooth((10.0 * np.log10(mel + 1e-10)).astype(np.float32))

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
        logmel = self.log_mel_recording(waveform)  # (n_mels, n_frames)
        first = starts // self.hop_length
        out = np.empty((starts.size, self.dim), dtype=np.float32)
        for start in range(0, starts.size, self.batch_size):
            rows = first[start : start + self.batch_size]
            f0 = int(rows.min())  # each batch reads only its own stretch of frames
            out[start : start + rows.size] = self._pool_windows(
                logmel[:, f0:], rows - f0, win_frames
            )
        return out

    def _pool_windows(self, logmel: np.ndarray, first: np.ndarray, hops: int) -> np.ndarray:
        """Pooled statistics ``(n, dim)`` of the windows of ``logmel`` ``(n_mels, n_frames)``
        whose frames are ``first[i] .. first[i] + hops`` (``hops + 1`` frames each).

        The windows overlap (5 s every 1 s: each frame is in five), so the statistics are
        built from blocks of ``b`` frames (``b``: the largest that tiles every window's first
        ``hops`` frames, 50 for the default preset) plus each window's last frame: block sums,
        means and squared deviations in float64, combined per window without cancellation
        (``M2 = sum(M2_b + n_b (mean_b - mean)^2)``), block maxima and minima. The same values
        as ``_pool_frames`` on each window's frames (within float32 rounding), at the cost of
        one pass over the recording's frames instead of one per window. Percentile statistics
        take the windows' frames themselves.
        """
        b = int(np.gcd.reduce(np.append(first, hops)))
        k = hops // b
        blocks = first // b
        index = blocks[:, None] + np.arange(k)[None, :]  # (n, k) block numbers per window
        n_used = int(blocks.max()) + k
        last = logmel[:, first + hops]  # (n_mels, n) the frame after each window's blocks
        cache: dict[str, np.ndarray] = {}

        def block_stats(x32: np.ndarray, tail: np.ndarray | None):
            # mean and population std per window of x32's blocks (and ``tail`` frames).
            x = x32[:, : n_used * b].astype(np.float64).reshape(x32.shape[0], n_used, b)
            bmean = x.mean(axis=-1)
            dev = x - bmean[..., None]
            bm2 = np.einsum("mjf,mjf->mj", dev, dev)
            n = k * b
            total = bmean[:, index].sum(axis=-1) * b
            if tail is not None:
                total = total + tail
                n += 1
            mean = total / n
            spread = bmean[:, index] - mean[..., None]
            m2 = bm2[:, index].sum(axis=-1) + b * np.einsum("mwk,mwk->mw", spread, spread)
            if tail is not None:
                m2 = m2 + np.square(tail - mean)
            return mean, np.sqrt(m2 / n)

        def stats():
            if "mean" not in cache:
                cache["mean"], cache["std"] = block_stats(logmel, last.astype(np.float64))
            return cache["mean"], cache["std"]

        parts = []
        for stat in self.pooling:
            if stat == "mean":
                parts.append(stats()[0].T)
            elif stat == "std":
                parts.append(stats()[1].T)
            elif stat in ("max", "min"):
                reduce = np.maximum if stat == "max" else np.minimum
                tiles = logmel[:, : n_used * b].reshape(logmel.shape[0], n_used, b)
                per_block = reduce.reduce(tiles, axis=-1)
                parts.append(reduce(reduce.reduce(per_block[:, index], axis=-1), last).T)
            elif stat == "dstd":
                if hops > 1:
                    diffs = np.diff(logmel[:, : n_used * b + 1], axis=1)  # float32, as torch
                    parts.append(block_stats(diffs, None)[1].T)
                else:
                    parts.append(np.zeros((first.size, self.n_mels), np.float32))
            else:
                frames = np.lib.stride_tricks.sliding_window_view(logmel, hops + 1, axis=1)
                block = np.ascontiguousarray(frames[:, first].transpose(1, 0, 2))
                q = torch.quantile(torch.from_numpy(block), int(stat[1:]) / 100.0, dim=-1)
                parts.append(q.numpy())
        return np.concatenate([p.astype(np.float32, copy=False) for p in parts], axis=-1)


def _std(x: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Population standard deviation over the last axis, given its mean (two passes)."""
    dev = x - mean[..., None]
    return np.sqrt(np.einsum("...i,...i->...", dev, dev) / x.shape[-1])

"""Cut a waveform into overlapping windows with start and end times.

Windows start every ``hop`` samples and are ``window`` samples long; only whole windows are
produced, so the tail shorter than one window is left out (it is scored with the next
recording of a stream). Times are offsets in seconds from the first sample, and absolute
UTC datetimes when the recording's start time is known.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from detectors.errors import AudioTooShortError


@dataclass(frozen=True)
class Windows:
    """Windows of one waveform.

    Attributes
    ----------
    samples : np.ndarray, shape (n_windows, window_samples), float32
        A read-only strided view of the waveform (no copy).
    start_samples : np.ndarray, shape (n_windows,), int64
    sample_rate : int
    window_samples : int
    """

    samples: np.ndarray
    start_samples: np.ndarray
    sample_rate: int
    window_samples: int

    def __len__(self) -> int:
        return int(self.samples.shape[0])

    @property
    def start_offsets(self) -> np.ndarray:
        """Seconds from the first sample to each window's first sample, shape (n_windows,)."""
        return self.start_samples / self.sample_rate

    @property
    def end_offsets(self) -> np.ndarray:
        """Seconds from the first sample to each window's end (exclusive), shape (n_windows,)."""
        return (self.start_samples + self.window_samples) / self.sample_rate

    def absolute_times(self, started_at: datetime) -> list[tuple[datetime, datetime]]:
        """``(start_at, end_at)`` for each window given the time of the recording's first sample."""
        return [
            (started_at + timedelta(seconds=float(s)), started_at + timedelta(seconds=float(e)))
            for s, e in zip(self.start_offsets, self.end_offsets, strict=True)
        ]


def window_lengths(sample_rate: int, window_seconds: float, hop_seconds: float) -> tuple[int, int]:
    """Window and hop in samples; both at least one sample."""
    if window_seconds <= 0 or hop_seconds <= 0:
        raise ValueError(
            f"window and hop must be positive seconds, got {window_seconds} and {hop_seconds}"
        )
    window = max(1, round(window_seconds * sample_rate))
    hop = max(1, round(hop_seconds * sample_rate))
    return window, hop


def count_windows(n_samples: int, window: int, hop: int) -> int:
    """Number of whole windows of ``window`` samples every ``hop`` samples in ``n_samples``."""
    return 0 if n_samples < window else 1 + (n_samples - window) // hop


def frame(
    waveform: np.ndarray, sample_rate: int, window_seconds: float, hop_seconds: float
) -> Windows:
    """Cut ``(n_samples,)`` into ``(n_windows, window_samples)``.

    Raises
    ------
    AudioTooShortError when the waveform is shorter than one window.
    """
    if waveform.ndim != 1:
        raise ValueError(f"waveform must be 1-D (n_samples,), got shape {waveform.shape}")
    window, hop = window_lengths(sample_rate, window_seconds, hop_seconds)
    n = count_windows(waveform.shape[0], window, hop)
    if n == 0:
        raise AudioTooShortError(
            f"audio lasts {waveform.shape[0] / sample_rate:.3f} s, shorter than one window "
            f"({window_seconds:g} s); send longer recordings"
        )
    waveform = np.ascontiguousarray(waveform, dtype=np.float32)
    samples = np.lib.stride_tricks.sliding_window_view(waveform, window)[::hop]
    starts = np.arange(n, dtype=np.int64) * hop
    return Windows(
        samples=samples[:n], start_samples=starts, sample_rate=sample_rate, window_samples=window
    )

"""Microphone health per window: silence, clipping and dropouts, judged on the audio itself.

A window the microphone did not hear properly says nothing about the machine: the event
logic (``detectors.events``) keeps such windows out of the anomaly evidence and reports them
as sensor faults instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SILENCE_RMS = 10 ** (-60 / 20)  # -60 dBFS: a dead, muted or unplugged microphone
CLIP_LEVEL = 0.99  # |sample| at or above this is at full scale
CLIPPED_FRACTION = 0.001  # 0.1% of a window's samples at full scale: the window is clipped
DROPOUT_BLOCK_SECONDS = 0.1  # a block this long below SILENCE_RMS inside a heard window


@dataclass(frozen=True)
class WindowFlags:
    """Per-window sensor flags, each ``(n_windows,)`` bool."""

    silent: np.ndarray
    clipped: np.ndarray
    dropout: np.ndarray


def window_flags(
    waveform: np.ndarray, start_samples: np.ndarray, window_samples: int, sample_rate: int
) -> WindowFlags:
    """Silent, clipped and dropout windows of a recording.

    Parameters
    ----------
    waveform : np.ndarray, shape (n_samples,), float in [-1, 1]
    start_samples : np.ndarray, shape (n_windows,)
    window_samples : int
    sample_rate : int

    Returns
    -------
    WindowFlags
        ``silent``: RMS below ``SILENCE_RMS``; ``clipped``: at least ``CLIPPED_FRACTION`` of
        the samples at ``CLIP_LEVEL`` or above; ``dropout``: not silent, but some block of
        ``DROPOUT_BLOCK_SECONDS`` is (the signal vanished for a moment).
    """
    x = np.asarray(waveform, dtype=np.float64)
    starts = np.asarray(start_samples, dtype=np.int64)
    n = starts.size
    silent = np.zeros(n, bool)
    clipped = np.zeros(n, bool)
    dropout = np.zeros(n, bool)
    block = max(1, int(round(DROPOUT_BLOCK_SECONDS * sample_rate)))
    for i, start in enumerate(starts):
        w = x[int(start) : int(start) + window_samples]
        if w.size == 0:
            continue
        silent[i] = float(np.linalg.norm(w)) / math.sqrt(w.size) < SILENCE_RMS
        clipped[i] = np.count_nonzero(np.abs(w) >= CLIP_LEVEL) >= CLIPPED_FRACTION * w.size
        usable = (w.size // block) * block
        if not silent[i] and usable >= 2 * block:
            blocks = w[:usable].reshape(-1, block)
            dropout[i] = bool((np.sqrt(np.mean(blocks**2, axis=1)) < SILENCE_RMS).any())
    return WindowFlags(silent=silent, clipped=clipped, dropout=dropout)

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
    block = max(1, int(round(DROPOUT_BLOCK_SECONDS * sample_rate)))
    inside = (
        starts.size > 0
        and bool(np.all(starts >= 0))
        and (int(starts.max()) + window_samples <= x.size)
    )
    if inside and window_samples % block == 0 and bool(np.all(starts % block == 0)):
        return _block_flags(x, starts, window_samples, block)
    n = starts.size
    silent = np.zeros(n, bool)
    clipped = np.zeros(n, bool)
    dropout = np.zeros(n, bool)
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


def _block_flags(x: np.ndarray, starts: np.ndarray, window_samples: int, block: int) -> WindowFlags:
    """``window_flags`` for windows made of whole dropout blocks (the default windows: 5 s of
    0.1 s blocks every 1 s): every block's energy and full-scale count once, summed per
    window, instead of one pass over each (overlapping) window's samples."""
    n_blocks = int(starts.max()) // block + window_samples // block
    tiles = x[: n_blocks * block].reshape(n_blocks, block)
    power = np.mean(tiles**2, axis=1)  # per block, exactly as the per-window loop has it
    if float(np.max(np.abs(tiles))) >= CLIP_LEVEL:
        loud = np.count_nonzero(np.abs(tiles) >= CLIP_LEVEL, axis=1)
    else:  # nothing at full scale (nearly always): no per-block count to make
        loud = np.zeros(n_blocks, np.int64)
    quiet = np.sqrt(power) < SILENCE_RMS  # the dropout test of each block
    per_window = window_samples // block
    index = (starts // block)[:, None] + np.arange(per_window)[None, :]
    silent = np.sqrt(power[index].mean(axis=1)) < SILENCE_RMS
    clipped = loud[index].sum(axis=1) >= CLIPPED_FRACTION * window_samples
    dropout = ~silent & quiet[index].any(axis=1) if per_window >= 2 else np.zeros_like(silent)
    return WindowFlags(silent=silent, clipped=clipped, dropout=dropout)

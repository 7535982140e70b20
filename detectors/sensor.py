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
    x = np.asarray(waveform)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)
    starts = np.asarray(start_samples, dtype=np.int64)
    block = max(1, int(round(DROPOUT_BLOCK_SECONDS * sample_rate)))
    inside = (
        starts.size > 0
        and bool(np.all(starts >= 0))
        and (int(starts.max()) + window_samples <= x.size)
    )
    if inside and window_samples % block == 0 and bool(np.all(starts % block == 0)):
        return _block_flags(x, starts, window_samples, block)
    x = np.asarray(x, dtype=np.float64)
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
    window, instead of one pass over each (overlapping) window's samples.

    ``x`` is float32 or float64. The silence and dropout tests compare block energies with
    ``SILENCE_RMS``: they are first estimated with one dot product per block in the samples'
    own precision (within ``_ESTIMATE_TOLERANCE`` of the float64 mean of squares the
    per-window loop computes, whatever the order of the sums); only blocks and windows whose
    estimate is that close to the threshold are computed exactly (``_block_power``), so the
    booleans are those of the exact computation. The peak is the max and min of the samples
    as they are (exact); the full-scale count, when there is a full-scale sample at all,
    compares their float64 values."""
    n_blocks = int(starts.max()) // block + window_samples // block
    tiles = x[: n_blocks * block].reshape(n_blocks, block)
    per_window = window_samples // block
    index = (starts // block)[:, None] + np.arange(per_window)[None, :]
    power = _estimated_power(tiles)
    window_power = power[index].mean(axis=1)
    exact = _undecided(power)  # blocks whose dropout test the estimate cannot settle
    exact[index[_undecided(window_power)].ravel()] = True  # and all blocks of such windows
    if exact.any():
        power[exact] = _block_power(tiles[exact])
        window_power = power[index].mean(axis=1)
    silent = np.sqrt(window_power) < SILENCE_RMS
    # max |x| >= CLIP_LEVEL, without |x|: False when a NaN is there, as np.max(np.abs(x)) has it
    if float(tiles.max()) >= CLIP_LEVEL or -float(tiles.min()) >= CLIP_LEVEL:
        loud = np.count_nonzero(np.abs(tiles.astype(np.float64)) >= CLIP_LEVEL, axis=1)
        clipped = loud[index].sum(axis=1) >= CLIPPED_FRACTION * window_samples
    else:  # nothing at full scale (nearly always): no per-block count to make
        clipped = np.zeros(starts.size, bool)
    quiet = np.sqrt(power) < SILENCE_RMS  # the dropout test of each block
    if per_window >= 2 and quiet.any():
        dropout = ~silent & quiet[index].any(axis=1)
    else:
        dropout = np.zeros_like(silent)
    return WindowFlags(silent=silent, clipped=clipped, dropout=dropout)


# A sum of n non-negative products in float32 is within about n * 2**-24 (relative) of the
# exact sum, in any order: 1e-4 for 0.1 s blocks at 16 kHz, 1e-3 at the longest block
# estimated (_MAX_ESTIMATED_BLOCK); underflow adds at most n * 2**-150 (absolute), nothing
# beside 1e-6. Estimates within 1 % of the threshold are computed exactly: nearly never, as
# real blocks are far from -60 dBFS or digital silence.
_ESTIMATE_TOLERANCE = 1e-2
_SILENCE_POWER = SILENCE_RMS**2
_MAX_ESTIMATED_BLOCK = 16_384  # samples per block (0.1 s up to 163 kHz)


def _estimated_power(tiles: np.ndarray) -> np.ndarray:
    """``(n_blocks,)`` float64 block energies, each within ``_ESTIMATE_TOLERANCE`` of
    ``_block_power``'s (exact ones for blocks too long for the bound)."""
    if tiles.shape[1] > _MAX_ESTIMATED_BLOCK:
        return _block_power(tiles)
    dot = getattr(np, "vecdot", None)  # numpy >= 2
    sums = dot(tiles, tiles) if dot is not None else np.einsum("ij,ij->i", tiles, tiles)
    return sums.astype(np.float64) / tiles.shape[1]


def _undecided(power: np.ndarray) -> np.ndarray:
    """True where an estimated energy is within ``_ESTIMATE_TOLERANCE`` of the silence
    threshold (or NaN): there the estimate does not settle ``sqrt(power) < SILENCE_RMS``."""
    below = power < _SILENCE_POWER * (1 - _ESTIMATE_TOLERANCE)
    above = power > _SILENCE_POWER * (1 + _ESTIMATE_TOLERANCE)
    return ~(below | above)


_BLOCK_ROWS = 64  # blocks squared at a time (6.4 s at 16 kHz: a scratch of 820 kB)


def _block_power(tiles: np.ndarray) -> np.ndarray:
    """``(n_blocks, block)`` -> ``(n_blocks,)`` float64 ``mean(tiles.astype(float64) ** 2,
    axis=1)``, bit for bit (the same squares, the same row reductions)."""
    n_blocks, block = tiles.shape
    power = np.empty(n_blocks, dtype=np.float64)
    scratch = np.empty((min(_BLOCK_ROWS, n_blocks), block), dtype=np.float64)
    for at in range(0, n_blocks, _BLOCK_ROWS):
        rows = tiles[at : at + _BLOCK_ROWS]
        squares = scratch[: rows.shape[0]]
        np.square(rows, out=squares, dtype=np.float64)
        np.mean(squares, axis=1, out=power[at : at + rows.shape[0]])
    return power

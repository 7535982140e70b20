"""The block-wise sensor flags (default windows) equal the per-window definition."""

import functools
import math

import numpy as np
import pytest

from detectors import sensor
from detectors.simulate import MACHINE_KINDS, simulate
from detectors.windows import frame

RATE = 16000


def per_window_flags(x, starts, window_samples, rate):
    """The definition, window by window (what ``window_flags`` computed before blocks)."""
    x = np.asarray(x, dtype=np.float64)
    block = round(sensor.DROPOUT_BLOCK_SECONDS * rate)
    out = np.zeros((3, len(starts)), bool)
    for i, start in enumerate(starts):
        w = x[start : start + window_samples]
        out[0, i] = float(np.linalg.norm(w)) / math.sqrt(w.size) < sensor.SILENCE_RMS
        at_full_scale = np.count_nonzero(np.abs(w) >= sensor.CLIP_LEVEL)
        out[1, i] = at_full_scale >= sensor.CLIPPED_FRACTION * w.size
        usable = (w.size // block) * block
        if not out[0, i] and usable >= 2 * block:
            rms = np.sqrt(np.mean(w[:usable].reshape(-1, block) ** 2, axis=1))
            out[2, i] = bool((rms < sensor.SILENCE_RMS).any())
    return out


@functools.cache
def clips():
    """Machine sound at many levels (some clipping), with dead and near-silent stretches."""
    rng = np.random.default_rng(7)
    out = []
    for trial in range(15):
        gain = rng.uniform(5, 200) if trial % 3 == 0 else rng.uniform(0.0005, 3)
        kind = MACHINE_KINDS[trial % len(MACHINE_KINDS)]
        x = np.clip(simulate(kind, 12.0, RATE, seed=trial) * gain, -1, 1).astype(np.float32)
        for _ in range(rng.integers(0, 4)):
            a = int(rng.integers(0, x.size - 4000))
            b = a + int(rng.integers(100, 60000))
            x[a:b] = 0.0 if rng.random() < 0.7 else x[a:b] * 1e-4
        out.append(x)
    return out


@pytest.mark.parametrize(("window", "hop"), [(5.0, 1.0), (1.0, 0.5), (2.0, 0.3), (0.25, 0.125)])
def test_flags_equal_the_per_window_definition(window, hop):
    seen = np.zeros(3, int)
    for x in clips():
        w = frame(x, RATE, window, hop)
        got = sensor.window_flags(x, w.start_samples, w.window_samples, RATE)
        want = per_window_flags(x, w.start_samples, w.window_samples, RATE)
        np.testing.assert_array_equal(np.stack([got.silent, got.clipped, got.dropout]), want)
        seen += want.sum(axis=1)
    assert (seen > 0).all()  # every flag was raised somewhere: the comparison meant something

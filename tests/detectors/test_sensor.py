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


def block_flags_before(x, starts, window_samples, rate):
    """The block-wise flags as computed before the float32 path (a float64 copy of the
    recording, its squares, ``max(abs(x))``): the new path must give the same booleans."""
    x = np.asarray(x, dtype=np.float64)
    block = round(sensor.DROPOUT_BLOCK_SECONDS * rate)
    n_blocks = int(starts.max()) // block + window_samples // block
    tiles = x[: n_blocks * block].reshape(n_blocks, block)
    power = np.mean(tiles**2, axis=1)
    if float(np.max(np.abs(tiles))) >= sensor.CLIP_LEVEL:
        loud = np.count_nonzero(np.abs(tiles) >= sensor.CLIP_LEVEL, axis=1)
    else:
        loud = np.zeros(n_blocks, np.int64)
    quiet = np.sqrt(power) < sensor.SILENCE_RMS
    per_window = window_samples // block
    index = (starts // block)[:, None] + np.arange(per_window)[None, :]
    silent = np.sqrt(power[index].mean(axis=1)) < sensor.SILENCE_RMS
    clipped = loud[index].sum(axis=1) >= sensor.CLIPPED_FRACTION * window_samples
    dropout = ~silent & quiet[index].any(axis=1) if per_window >= 2 else np.zeros_like(silent)
    return np.stack([silent, clipped, dropout])


def crafted(seconds: float, seed: int) -> list[np.ndarray]:
    """Signals at the flags' edges (float64; the test also runs them as float32): full
    scale at exactly CLIP_LEVEL, at its float32 value and just below both, negative full
    scale, the clipped fraction one sample either side, dead and near-dead stretches at the
    dropout block's edges, silence at the silence level."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    hum = 0.1 * np.sin(2 * np.pi * 120 * np.arange(n) / RATE)
    level32 = float(np.float32(sensor.CLIP_LEVEL))
    levels = [sensor.CLIP_LEVEL, np.nextafter(sensor.CLIP_LEVEL, 0), level32]
    levels += [float(np.nextafter(np.float32(level32), np.float32(0))), 1.0]
    needed = math.ceil(sensor.CLIPPED_FRACTION * 5 * RATE)  # full-scale samples a 5 s window needs
    out = []
    for value in levels + [-v for v in levels]:
        for count in (needed - 1, needed, needed + 1):
            x = hum.copy()
            x[rng.choice(np.arange(2 * RATE, 3 * RATE), count, replace=False)] = value
            out.append(x)
    x = hum.copy()
    x[RATE : RATE + 1600] = 0.0  # exactly one dropout block, aligned
    x[4 * RATE + 800 : 4 * RATE + 2400] = 0.0  # one block's length across two blocks
    x[7 * RATE : 7 * RATE + 1599] = 0.0  # one sample short of a block
    out.append(x)
    for level in (sensor.SILENCE_RMS, np.nextafter(sensor.SILENCE_RMS, 0), 1.0001e-3, 0.9999e-3):
        out.append(np.full(n, level))  # a constant at the silence level
        x = hum.copy()
        x[3 * RATE : 3 * RATE + 3200] = level
        out.append(x)
    out.append(np.zeros(n))
    out.append(rng.standard_normal(n) * 1e-3)  # RMS about the silence level
    return out


@pytest.mark.parametrize("seconds", [10.0, 12.0, 37.3])
def test_block_flags_equal_the_computation_before(seconds):
    seen = np.zeros(3, int)
    for x in crafted(seconds, seed=int(seconds * 10)) + clips():
        for dtype in (np.float32, np.float64):
            signal = x.astype(dtype)
            w = frame(signal, RATE, 5.0, 1.0)
            got = sensor.window_flags(signal, w.start_samples, w.window_samples, RATE)
            want = block_flags_before(signal, w.start_samples, w.window_samples, RATE)
            np.testing.assert_array_equal(np.stack([got.silent, got.clipped, got.dropout]), want)
            seen += want.sum(axis=1)
    assert (seen > 0).all()


def test_block_power_is_the_float64_mean_of_squares_bit_for_bit():
    rng = np.random.default_rng(3)
    for n_blocks in (1, 63, 64, 65, 200, 6000):
        tiles = (rng.standard_normal((n_blocks, 1600)) * 0.3).astype(np.float32)
        want = np.mean(tiles.astype(np.float64) ** 2, axis=1)
        assert np.array_equal(sensor._block_power(tiles), want)
        assert np.array_equal(sensor._block_power(tiles.astype(np.float64)), want)


def test_a_nan_hides_full_scale_as_before():
    x = np.full(10 * RATE, 0.1, np.float32)
    x[100:400] = 1.0
    x[5000] = np.nan
    w = frame(x, RATE, 5.0, 1.0)
    got = sensor.window_flags(x, w.start_samples, w.window_samples, RATE)
    want = block_flags_before(x, w.start_samples, w.window_samples, RATE)
    np.testing.assert_array_equal(np.stack([got.silent, got.clipped, got.dropout]), want)
    x[5000] = 0.1
    assert sensor.window_flags(x, w.start_samples, w.window_samples, RATE).clipped[0]


def test_only_blocks_near_the_threshold_are_computed_exactly(monkeypatch):
    """The float32 estimates settle ordinary audio; blocks at the silence level (and the
    windows holding them) take the exact float64 path, and agree with the computation
    before."""
    exact_rows = []
    original = sensor._block_power

    def counting(tiles):
        exact_rows.append(tiles.shape[0])
        return original(tiles)

    monkeypatch.setattr(sensor, "_block_power", counting)
    hum = (0.1 * np.sin(2 * np.pi * 120 * np.arange(10 * RATE) / RATE)).astype(np.float32)
    hum[RATE : 2 * RATE] = 0.0  # digital silence: far below the threshold, no exact path
    w = frame(hum, RATE, 5.0, 1.0)
    sensor.window_flags(hum, w.start_samples, w.window_samples, RATE)
    assert exact_rows == []
    for level in (sensor.SILENCE_RMS, np.nextafter(sensor.SILENCE_RMS, 0)):
        x = np.full(10 * RATE, level)  # float64: the estimate cannot tell these apart
        x[: 3 * RATE] = 0.1
        got = sensor.window_flags(x, w.start_samples, w.window_samples, RATE)
        want = block_flags_before(x, w.start_samples, w.window_samples, RATE)
        np.testing.assert_array_equal(np.stack([got.silent, got.clipped, got.dropout]), want)
    assert sum(exact_rows) >= 2 * 70  # the 70 blocks at the level, in both signals
    assert not want[0].all() and want[2].any()  # windows across the edge: heard, dropouts

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.errors import AudioTooShortError
from detectors.windows import count_windows, frame, window_lengths


@settings(max_examples=200, deadline=None)
@given(
    n_samples=st.integers(1, 5000),
    rate=st.sampled_from([100, 1000, 16000]),
    window_s=st.floats(0.01, 2.0),
    hop_fraction=st.floats(0.1, 1.5),
)
def test_windows_cover_count_and_bounds(n_samples, rate, window_s, hop_fraction):
    window, hop = window_lengths(rate, window_s, window_s * hop_fraction)
    waveform = np.arange(n_samples, dtype=np.float32)
    expected = count_windows(n_samples, window, hop)
    if expected == 0:
        with pytest.raises(AudioTooShortError):
            frame(waveform, rate, window_s, window_s * hop_fraction)
        return
    w = frame(waveform, rate, window_s, window_s * hop_fraction)
    assert len(w) == expected == 1 + (n_samples - window) // hop
    assert w.samples.shape == (expected, window)
    # Every window is the exact slice of the waveform it claims to be.
    for i in (0, expected - 1):
        start = w.start_samples[i]
        np.testing.assert_array_equal(w.samples[i], waveform[start : start + window])
    # Bounds: inside the waveform, evenly spaced, the tail left over is shorter than a hop.
    assert w.start_samples[0] == 0
    assert w.start_samples[-1] + window <= n_samples
    assert np.all(np.diff(w.start_samples) == hop)
    assert n_samples - (w.start_samples[-1] + window) < hop
    # With hop <= window, consecutive windows leave no gap: the covered span is contiguous.
    if hop <= window:
        covered = np.zeros(n_samples, bool)
        for s in w.start_samples:
            covered[s : s + window] = True
        assert covered[: w.start_samples[-1] + window].all()
    np.testing.assert_allclose(w.end_offsets - w.start_offsets, window / rate)


@settings(max_examples=50, deadline=None)
@given(seconds=st.floats(1.0, 30.0), offset_s=st.integers(0, 10**8))
def test_absolute_times(seconds, offset_s):
    rate = 1000
    started = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=offset_s)
    w = frame(np.zeros(int(seconds * rate), np.float32), rate, 1.0, 0.25)
    times = w.absolute_times(started)
    assert len(times) == len(w)
    assert times[0][0] == started
    for (start, end), off in zip(times, w.start_offsets, strict=True):
        assert end - start == timedelta(seconds=1.0)
        assert start == started + timedelta(seconds=float(off))
        assert end <= started + timedelta(seconds=seconds)


def test_rejects_bad_parameters():
    with pytest.raises(ValueError, match="positive"):
        frame(np.zeros(100, np.float32), 100, 0.0, 0.5)
    with pytest.raises(ValueError, match="1-D"):
        frame(np.zeros((100, 2), np.float32), 100, 0.5, 0.5)

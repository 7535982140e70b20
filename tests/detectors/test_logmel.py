import numpy as np
import pytest

from detectors.embedders import build_embedder
from detectors.embedders.base import Embedder
from detectors.errors import EmbedderError

RATE = 16000


def windows(n=4, seconds=1.0, seed=0):
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal((n, int(seconds * RATE)))).astype(np.float32)


def test_shape_dtype_and_protocol():
    emb = build_embedder({"name": "logmel", "pooling": ["mean", "std", "max", "dstd", "p90"]})
    assert isinstance(emb, Embedder)
    out = emb.embed(windows())
    assert out.shape == (4, 128 * 5) == (4, emb.dim)
    assert out.dtype == np.float32
    assert np.isfinite(out).all()


def test_deterministic_and_spec_round_trip():
    emb = build_embedder({"name": "logmel", "n_mels": 64, "pooling": ["mean", "dstd"]})
    x = windows()
    again = build_embedder(emb.spec)
    np.testing.assert_array_equal(emb.embed(x), again.embed(x))
    assert again.spec == emb.spec


def test_batching_does_not_change_results():
    x = windows(n=7)
    a = build_embedder({"name": "logmel", "batch_size": 2}).embed(x)
    b = build_embedder({"name": "logmel", "batch_size": 64}).embed(x)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)


def test_mean_tracks_level_and_dstd_tracks_transients():
    emb = build_embedder({"name": "logmel", "pooling": ["mean", "dstd"]})
    steady = 0.1 * windows(n=1)
    louder = steady * 4
    clicks = steady.copy()
    for start in range(0, RATE, 4000):  # four 4 ms clicks
        clicks[0, start : start + 64] += 0.5
    mean_steady, dstd_steady = np.split(emb.embed(steady)[0], 2)
    mean_loud, _ = np.split(emb.embed(louder)[0], 2)
    _, dstd_clicks = np.split(emb.embed(clicks)[0], 2)
    # 4x amplitude = +12 dB in every band.
    np.testing.assert_allclose(mean_loud - mean_steady, 20 * np.log10(4), atol=0.5)
    assert dstd_clicks.mean() > dstd_steady.mean() + 1.0


@pytest.mark.parametrize(
    "spec",
    [
        {"name": "logmel", "pooling": ["median"]},
        {"name": "logmel", "pooling": []},
        {"name": "logmel", "metric": "manhattan"},
        {"name": "logmel", "bogus": 1},
        {"name": "nope"},
    ],
)
def test_bad_specs_raise_clear_errors(spec):
    with pytest.raises(EmbedderError):
        build_embedder(spec)


def test_rejects_windows_shorter_than_fft():
    with pytest.raises(EmbedderError, match="n_fft"):
        build_embedder("logmel").embed(np.zeros((2, 512), np.float32))


# -- recording framing: one spectrogram per recording ------------------------------------------


def recording_spec(**overrides):
    return {
        "name": "logmel",
        "hop_length": 320,
        "pooling": ["mean", "std", "max", "dstd"],
        "framing": "recording",
        **overrides,
    }


def test_recording_framing_matches_per_window_framing_away_from_the_edges():
    from detectors.embedders import embed_windows
    from detectors.windows import frame

    rng = np.random.default_rng(3)
    waveform = (0.1 * rng.standard_normal(12 * RATE)).astype(np.float32)
    windows = frame(waveform, RATE, 2.0, 1.0)
    per_window = build_embedder(recording_spec(framing="window", pooling=["mean"]))
    per_recording = build_embedder(recording_spec(pooling=["mean"]))
    a = per_window.embed(windows.samples)
    b = embed_windows(per_recording, waveform, windows)
    assert a.shape == b.shape == (11, 128)
    # Only the two edge frames of each window (of 101) differ: the means agree closely
    # (measured: median 0.03 dB, worst 0.6 dB in the lowest band).
    assert np.median(np.abs(a - b)) < 0.1
    np.testing.assert_allclose(a, b, atol=1.0)
    # The spectrogram itself (sparse filterbank) equals torchaudio's dense one.
    dense = per_window.log_mel(waveform[None, : 2 * RATE])[0].numpy()
    sparse = per_recording.log_mel_recording(waveform[: 2 * RATE])
    np.testing.assert_allclose(dense, sparse, atol=1e-3)


def test_recording_framing_falls_back_per_window_off_the_frame_grid():
    from detectors.embedders import embed_windows
    from detectors.windows import frame

    waveform = windows(n=1, seconds=6.0)[0]
    emb = build_embedder(recording_spec())
    off_grid = frame(waveform, RATE, 2.0, 0.51)  # 8160-sample hops: not multiples of 320
    np.testing.assert_array_equal(
        embed_windows(emb, waveform, off_grid), emb.embed(off_grid.samples)
    )


def test_framing_is_in_the_spec_only_when_not_the_old_default():
    assert "framing" not in build_embedder({"name": "logmel"}).spec
    spec = build_embedder(recording_spec()).spec
    assert spec["framing"] == "recording" and build_embedder(spec).spec == spec
    with pytest.raises(EmbedderError, match="framing"):
        build_embedder({"name": "logmel", "framing": "sometimes"})

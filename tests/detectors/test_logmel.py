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


# -- the fast paths give the values of the plain torch computation ----------------------------


def _torch_reference_logmel(emb, x):
    """The log-mel spectrogram as torchaudio computes it: ``abs().pow(2)`` of its STFT."""
    import torch

    with torch.no_grad():
        return emb._mel.spectrogram(torch.from_numpy(x)).numpy()


def _sound_with_faults(seconds=14.0, seed=5):
    """Noise and tones, a digital-silence stretch (constant bands) and a clipped burst."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    x = 0.05 * rng.standard_normal(n) + 0.2 * np.sin(2 * np.pi * 440 * t)
    x[2 * RATE : 10 * RATE] = 0.0
    x[11 * RATE : 11 * RATE + 4000] = np.clip(8 * x[11 * RATE : 11 * RATE + 4000], -1, 1)
    return x.astype(np.float32)


@pytest.mark.parametrize(("window", "hop"), [(5.0, 1.0), (2.0, 0.5), (1.0, 0.02)])
def test_recording_framing_equals_torch_pooling_of_each_windows_frames(window, hop):
    import torch

    from detectors.embedders import embed_windows
    from detectors.windows import frame

    emb = build_embedder(recording_spec(pooling=["mean", "std", "max", "min", "dstd", "p90"]))
    waveform = _sound_with_faults()
    windows = frame(waveform, RATE, window, hop)
    got = embed_windows(emb, waveform, windows)
    # The previous implementation: torchaudio's power, the sparse filterbank, and torch's
    # statistics over each window's own frames.
    power = _torch_reference_logmel(emb, waveform)
    logmel = torch.from_numpy(
        (10.0 * np.log10(emb._sparse_filterbank() @ power + 1e-10)).astype(np.float32)
    )
    n = windows.window_samples // emb.hop_length + 1
    first = windows.start_samples // emb.hop_length
    blocks = torch.stack([logmel[:, f : f + n] for f in first])
    want = emb._pool(blocks).numpy()
    assert got.shape == want.shape == (len(windows), emb.dim)
    # float32 rounding of dB values of magnitude up to ~100: 1e-5 of the largest value.
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    # Windows whose every frame (n_fft samples around its centre) lies in the silence.
    margin = emb.n_fft // 2
    silent = (windows.start_samples >= 2 * RATE + margin) & (
        windows.start_samples + windows.window_samples <= 10 * RATE - margin
    )
    assert silent.any()
    std = got[:, 128:256]
    assert np.all(std[silent] == 0.0) and np.all(want[silent, 128:256] == 0.0)


def test_window_framing_equals_torchaudio_and_torch_pooling():
    import torch

    emb = build_embedder(
        {"name": "logmel", "pooling": ["mean", "std", "max", "min", "dstd", "p10"], "batch_size": 3}
    )
    x = np.lib.stride_tricks.sliding_window_view(_sound_with_faults(), RATE)[:: RATE // 2]
    got = emb.embed(x)
    with torch.no_grad():
        want = emb._pool(emb.log_mel(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_power_spectrogram_equals_torchaudio():
    emb = build_embedder(recording_spec())
    x = _sound_with_faults(seconds=3.0)
    want = _torch_reference_logmel(emb, x)
    got = emb._power(x).T
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-12 * want.max())


def test_recording_framing_batches_give_the_same_vectors():
    from detectors.embedders import embed_windows
    from detectors.windows import frame

    waveform = _sound_with_faults()
    windows = frame(waveform, RATE, 5.0, 1.0)
    one = build_embedder(recording_spec(batch_size=256))
    small = build_embedder(recording_spec(batch_size=3))
    np.testing.assert_allclose(
        embed_windows(small, waveform, windows),
        embed_windows(one, waveform, windows),
        rtol=1e-6,
        atol=1e-6,
    )


def test_band_smoothing_tolerates_a_small_speed_change():
    from detectors.windows import frame

    rate = 16000
    t = np.arange(5 * rate) / rate

    def machine(f0, seed):  # a harmonic series on the shaft frequency f0, with a little noise
        noise = 0.05 * np.random.default_rng(seed).standard_normal(t.size)
        tones = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 40))
        return (tones + noise).astype(np.float32)

    base = {
        "name": "logmel",
        "hop_length": 320,
        "framing": "recording",
        "pooling": ["mean", "std", "max", "dstd"],
    }
    plain, smooth = dict(base), dict(base, band_smoothing=3)
    assert "band_smoothing" not in build_embedder(plain).spec  # old specs stay as they were
    assert build_embedder(smooth).spec["band_smoothing"] == 3
    ratio = {}
    for name, spec in (("plain", plain), ("smooth", smooth)):
        embedder = build_embedder(spec)

        def embed(audio, embedder=embedder):
            return embedder.embed_recording(audio, frame(audio, rate, 5.0, 1.0))[0]

        same = embed(machine(50.0, 1))
        # A run 1.5 % faster against another take at the same speed (measured: the speed
        # change is 1.36x the take-to-take distance without smoothing, 1.18x with it).
        ratio[name] = np.linalg.norm(same - embed(machine(50.75, 3))) / np.linalg.norm(
            same - embed(machine(50.0, 2))
        )
    assert ratio["smooth"] < 0.92 * ratio["plain"]
    with pytest.raises(EmbedderError, match="band_smoothing"):
        build_embedder(dict(base, band_smoothing=0))

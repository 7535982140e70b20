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

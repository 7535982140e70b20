"""The aisfx embedder with randomly initialised weights of its architecture."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from detectors.embedders import build_embedder
from detectors.embedders.aisfx import (
    CHECKPOINT_NAME,
    MIN_SAMPLES,
    SPEC_MAX,
    AisfxCNN,
    mel_filterbank,
)
from detectors.embedders.base import Embedder
from detectors.errors import EmbedderError, WeightsUnavailableError
from tests.detectors.aisfx_weights import random_state, save_checkpoint

RATE = 44100


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("aisfx")
    save_checkpoint(directory / CHECKPOINT_NAME)
    return directory


def make(model_dir, **params):
    return build_embedder({"name": "aisfx", "model_dir": str(model_dir), "device": "cpu", **params})


def noise(n=3, seconds=1.0, seed=0):
    rng = np.random.default_rng(seed)
    return (0.05 * rng.standard_normal((n, int(seconds * RATE)))).astype(np.float32)


def test_shape_dtype_and_protocol(model_dir):
    emb = make(model_dir)
    assert isinstance(emb, Embedder)
    assert emb.sample_rate == RATE and emb.dim == 512
    out = emb.embed(noise())
    assert out.shape == (3, 512) and out.dtype == np.float32
    assert np.isfinite(out).all()
    assert np.ptp(out, axis=0).max() > 0  # different windows, different vectors
    assert emb.embed(noise(n=0)).shape == (0, 512)


def test_deterministic_and_spec_names_the_weights(model_dir):
    emb = make(model_dir)
    x = noise()
    np.testing.assert_array_equal(emb.embed(x), emb.embed(x))
    again = build_embedder({**emb.spec, "model_dir": str(model_dir), "device": "cpu"})
    np.testing.assert_array_equal(again.embed(x), emb.embed(x))
    assert again.spec == emb.spec
    assert "model_dir" not in emb.spec  # where the weights lie is not what they are
    assert len(emb.spec["checkpoint_sha256"]) == 64


def test_batching_does_not_change_results(model_dir):
    x = noise(n=5, seconds=1.5)
    one = make(model_dir, batch_size=1).embed(x)
    many = make(model_dir, batch_size=16).embed(x)
    np.testing.assert_allclose(one, many, rtol=1e-4, atol=1e-5)


def test_poolings(model_dir):
    x = noise(n=2, seconds=3.0)
    mean = make(model_dir, pooling="mean").embed(x)
    top = make(model_dir, pooling="max").embed(x)
    both = make(model_dir, pooling="mean+max")
    assert both.dim == 1024
    np.testing.assert_allclose(both.embed(x), np.concatenate([mean, top], axis=1), rtol=1e-5)
    assert (top >= mean - 1e-6).all()


def test_network_matches_its_layers(model_dir):
    """The embedder is the network: freq-mean then time-max of the last block's output."""
    emb = make(model_dir, pooling="max")
    x = noise(n=2, seconds=2.0)
    net = AisfxCNN().eval()
    net.load_state_dict(random_state())
    with torch.no_grad():
        h = torch.from_numpy(emb.log_mel(x)).unsqueeze(1)
        for i in range(1, 5):
            block = getattr(net, f"conv_block{i}")
            h = torch.relu(block.bn1(block.conv1(h)))
            h = torch.relu(block.bn2(block.conv2(h)))
            if i < 4:
                h = torch.nn.functional.max_pool2d(h, 2)
        expected = h.mean(dim=3).amax(dim=2).numpy()
    np.testing.assert_allclose(emb.embed(x), expected, rtol=1e-4, atol=1e-5)


# -- front end ---------------------------------------------------------------------------------


def reference_log_mel(wave: np.ndarray) -> np.ndarray:
    """The Essentia pipeline written out plainly: ``(samples,)`` -> ``(frames, 96)``."""
    n_fft, hop, n_mels = 2048, 1024, 96
    window = np.hanning(n_fft)  # symmetric, as Essentia's "hann"
    bin_hz = (RATE / 2) / (n_fft // 2)

    def mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)

    step = (mel(RATE / 2) - mel(0.0)) / (n_mels + 1)
    edges = [700.0 * (10 ** (i * step / 2595.0) - 1.0) for i in range(n_mels + 2)]
    bank = np.zeros((n_mels, n_fft // 2 + 1))
    for b in range(n_mels):
        lo, mid, hi = edges[b : b + 3]
        for j in range(n_fft // 2 + 1):
            f = j * bin_hz
            if lo <= f < mid:
                bank[b, j] = (mel(f) - mel(lo)) / (mel(mid) - mel(lo))
            elif mid <= f < hi:
                bank[b, j] = (mel(hi) - mel(f)) / (mel(hi) - mel(mid))
        bank[b] /= bank[b].sum()
    frames = []
    for start in range(0, len(wave) - n_fft + 1, hop):
        power = np.abs(np.fft.rfft(wave[start : start + n_fft] * window)) ** 2
        frames.append(np.log10(1.0 + 1e4 * (bank @ power)) / SPEC_MAX)
    return np.array(frames)


def test_front_end_matches_a_plain_reference(model_dir):
    emb = make(model_dir)
    t = np.arange(int(1.2 * RATE)) / RATE
    rng = np.random.default_rng(1)
    wave = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.02 * rng.standard_normal(t.size)).astype(
        np.float32
    )
    ours = emb.log_mel(wave[None])[0]
    ref = reference_log_mel(wave.astype(np.float64))
    assert ours.shape == ref.shape == (1 + (t.size - 2048) // 1024, 96)
    np.testing.assert_allclose(ours, ref, atol=2e-5)


def test_filterbank_matches_essentia():
    """Weights measured from Essentia 2.1b6 MelBands (htkMel, warping, unit_sum, 96 bands,
    0-22050 Hz, 1025 bins) by feeding it unit spectra."""
    bank = mel_filterbank()
    assert bank.shape == (96, 1025)
    np.testing.assert_allclose(bank.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(bank[0, 1:3], [0.71506381, 0.28493616], atol=1e-6)
    np.testing.assert_allclose(bank[1, 2:4], [0.55115288, 0.44884714], atol=1e-6)
    assert np.count_nonzero(bank[0]) == 2 and np.count_nonzero(bank[1]) == 2


def test_a_tone_lands_in_its_band(model_dir):
    emb = make(model_dir)
    t = np.arange(RATE) / RATE
    peaks = []
    for hz in (200.0, 1000.0, 5000.0):
        logmel = emb.log_mel(np.sin(2 * np.pi * hz * t)[None].astype(np.float32))[0]
        peaks.append(int(logmel.mean(axis=0).argmax()))
    assert peaks == sorted(peaks) and len(set(peaks)) == 3
    bank = mel_filterbank()
    centre_hz = (bank * np.arange(1025)).sum(axis=1) * (RATE / 2 / 1024)
    assert abs(centre_hz[peaks[1]] - 1000.0) < 60.0


# -- errors ------------------------------------------------------------------------------------


def test_missing_weights_say_how_to_get_them(tmp_path):
    with pytest.raises(WeightsUnavailableError, match="humwatch models fetch aisfx"):
        make(tmp_path / "nowhere")


def test_other_weights_than_the_spec_names_are_refused(model_dir):
    with pytest.raises(EmbedderError, match="sha256"):
        make(model_dir, checkpoint_sha256="0" * 64)


def test_a_checkpoint_of_another_network_is_refused(tmp_path):
    state = {"embedding_net.conv_block1.conv1.weight": torch.zeros(32, 1, 3, 3)}
    torch.save((state, {}), tmp_path / CHECKPOINT_NAME)
    with pytest.raises(EmbedderError, match="does not hold aisfx weights"):
        make(tmp_path)


class _RunsCode:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_a_checkpoint_with_code_is_not_unpickled(tmp_path, capsys):
    torch.save(({"x": torch.zeros(1)}, _RunsCode()), tmp_path / CHECKPOINT_NAME)
    with pytest.raises(EmbedderError, match="cannot read aisfx checkpoint"):
        make(tmp_path)
    assert "must never run" not in capsys.readouterr().out


@pytest.mark.parametrize(
    "params, match",
    [
        ({"pooling": "median"}, "pooling"),
        ({"metric": "manhattan"}, "metric"),
        ({"batch_size": 0}, "batch_size"),
        ({"device": "tpu:7"}, "device"),
        ({"layers": 3}, "bad aisfx embedder parameters"),
    ],
)
def test_bad_parameters(model_dir, params, match):
    with pytest.raises(EmbedderError, match=match):
        make(model_dir, **params)


def test_bad_windows(model_dir):
    emb = make(model_dir)
    assert emb.embed(np.zeros((1, MIN_SAMPLES), dtype=np.float32)).shape == (1, 512)
    with pytest.raises(EmbedderError, match="shorter than"):
        emb.embed(np.zeros((1, MIN_SAMPLES - 1), dtype=np.float32))
    with pytest.raises(EmbedderError, match=r"\(n_windows, window_samples\)"):
        emb.embed(np.zeros(RATE, dtype=np.float32))
    bad = noise(n=1)
    bad[0, 10] = np.nan
    with pytest.raises(EmbedderError, match="NaN"):
        emb.embed(bad)

"""The hf embedder on tiny random-weight models saved to temporary directories.

Nothing is downloaded: every model is built from a config, saved with ``save_pretrained`` and
loaded back from its directory, with the hub switched offline and sockets refused.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from detectors.embedders import build_embedder
from detectors.embedders.base import Embedder
from detectors.errors import EmbedderError

transformers = pytest.importorskip("transformers")

NETWORK_ATTEMPTS: list[tuple] = []


@pytest.fixture(scope="module", autouse=True)
def offline():
    """Hub offline, and any socket connection refused (and remembered, to fail the module)."""
    import huggingface_hub.constants as hf_constants

    def refuse(*args, **kwargs):
        NETWORK_ATTEMPTS.append(args)
        raise OSError("network access attempted in an offline test")

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        mp.setattr(hf_constants, "HF_HUB_OFFLINE", True)
        mp.setattr(socket.socket, "connect", refuse)
        mp.setattr(socket, "create_connection", refuse)
        yield
    assert not NETWORK_ATTEMPTS, f"network access attempted: {NETWORK_ATTEMPTS}"


@dataclass
class Tiny:
    """A tiny model saved in ``path`` and a reference for its default pooling."""

    family: str
    path: Path
    sample_rate: int
    window_samples: int
    num_layers: int
    reference: Callable[[np.ndarray], np.ndarray]

    def windows(self, n: int = 5, seed: int = 0) -> np.ndarray:
        rng = np.random.default_rng(seed)
        t = np.arange(self.window_samples) / self.sample_rate
        tones = np.sin(2 * np.pi * rng.uniform(100, 2000, size=(n, 1)) * t)
        return (0.3 * tones + 0.05 * rng.standard_normal((n, len(t)))).astype(np.float32)

    def build(self, **params) -> Embedder:
        return build_embedder({"name": "hf", "model": str(self.path), "device": "cpu", **params})


def _build_ast(path: Path) -> Tiny:
    torch.manual_seed(0)
    config = transformers.ASTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        patch_size=16,
        frequency_stride=16,
        time_stride=16,
        max_length=100,
        num_mel_bins=32,
        num_labels=3,
    )
    # Saved with its classifier head, as hub AST checkpoints are; the embedder drops the head.
    model = transformers.ASTForAudioClassification(config).eval()
    fe = transformers.ASTFeatureExtractor(num_mel_bins=32, max_length=100)
    model.save_pretrained(path)
    fe.save_pretrained(path)

    def reference(x: np.ndarray) -> np.ndarray:
        inputs = fe(list(x), sampling_rate=16000, return_tensors="pt")["input_values"]
        with torch.inference_mode():
            hidden = model.audio_spectrogram_transformer(input_values=inputs).last_hidden_state
        # 0.5 s = 48 frames: the patch grid is 2 (freq) x 6 (time), time patches start every
        # 16 frames, so only the first 3 time columns start inside real audio.
        grid = hidden[:, 2:].reshape(len(x), 2, 6, -1)
        return grid[:, :, :3].mean(dim=(1, 2)).numpy()

    return Tiny("ast", path, 16000, 8000, 2, reference)


def _clap_config(enable_fusion: bool = False):
    return transformers.ClapConfig(
        text_config=dict(
            vocab_size=99,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=64,
        ),
        audio_config=dict(
            window_size=4,
            num_mel_bins=16,
            spec_size=64,
            patch_size=4,
            patch_stride=(4, 4),
            hidden_size=32,
            patch_embeds_hidden_size=16,
            depths=[1, 1],
            num_attention_heads=[2, 2],
            num_hidden_layers=2,
            enable_fusion=enable_fusion,
            fusion_type="aff_2d" if enable_fusion else None,
        ),
        projection_dim=24,
    )


def _build_clap(path: Path, enable_fusion: bool = False) -> Tiny:
    torch.manual_seed(1)
    # A full ClapModel (text tower included), as hub CLAP checkpoints are.
    model = transformers.ClapModel(_clap_config(enable_fusion)).eval()
    fe = transformers.ClapFeatureExtractor(
        feature_size=16,
        sampling_rate=48000,
        max_length_s=1,
        frequency_max=14000,
        truncation="fusion" if enable_fusion else "rand_trunc",
    )
    model.save_pretrained(path)
    fe.save_pretrained(path)

    def reference(x: np.ndarray) -> np.ndarray:
        inputs = fe(list(x), sampling_rate=48000, return_tensors="pt")["input_features"]
        is_longer = torch.zeros((len(x), 1), dtype=torch.bool)
        with torch.inference_mode():
            pooled = model.audio_model(input_features=inputs, is_longer=is_longer).pooler_output
            return model.audio_projection(pooled).numpy()

    return Tiny("clap", path, 48000, 24000, 2, reference)


def _wav2vec2_like(model_type: str, path: Path, **overrides) -> Tiny:
    torch.manual_seed(2)
    config_cls = transformers.AutoConfig.for_model(model_type).__class__
    params = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16, 16, 16),
        conv_stride=(5, 4, 4),
        conv_kernel=(10, 4, 4),
        num_conv_pos_embedding_groups=2,
        vocab_size=12,
    )
    if model_type == "data2vec-audio":
        params.update(num_conv_pos_embeddings=2, conv_pos_kernel_size=5)
    else:
        params.update(num_conv_pos_embeddings=16)
    if model_type == "wav2vec2-conformer":
        params.update(conv_depthwise_kernel_size=3, position_embeddings_type="rotary")
    params.update(overrides)
    config = config_cls(**params)
    model = transformers.AutoModel.from_config(config).eval()
    fe = transformers.Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=False)
    model.save_pretrained(path)
    fe.save_pretrained(path)

    def reference(x: np.ndarray) -> np.ndarray:
        inputs = fe(list(x), sampling_rate=16000, return_tensors="pt")["input_values"]
        with torch.inference_mode():
            return model(input_values=inputs).last_hidden_state.mean(dim=1).numpy()

    return Tiny(model_type, path, 16000, 8000, 2, reference)


def _build_wav2vec2(path: Path) -> Tiny:
    torch.manual_seed(2)
    # Saved with a CTC head (prefix "wav2vec2."), as many hub checkpoints are.
    config = transformers.Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16, 16, 16),
        conv_stride=(5, 4, 4),
        conv_kernel=(10, 4, 4),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        vocab_size=12,
    )
    model = transformers.Wav2Vec2ForCTC(config).eval()
    fe = transformers.Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=False)
    model.save_pretrained(path)
    fe.save_pretrained(path)

    def reference(x: np.ndarray) -> np.ndarray:
        inputs = fe(list(x), sampling_rate=16000, return_tensors="pt")["input_values"]
        with torch.inference_mode():
            return model.wav2vec2(input_values=inputs).last_hidden_state.mean(dim=1).numpy()

    return Tiny("wav2vec2", path, 16000, 8000, 2, reference)


BUILDERS = {
    "ast": _build_ast,
    "clap": _build_clap,
    "wav2vec2": _build_wav2vec2,
    # WavLM with the "stable" (pre-)layer norm of the large models.
    "wavlm": lambda path: _wav2vec2_like(
        "wavlm", path, feat_extract_norm="layer", do_stable_layer_norm=True
    ),
}


@pytest.fixture(scope="module", params=list(BUILDERS))
def tiny(request, tmp_path_factory) -> Tiny:
    return BUILDERS[request.param](tmp_path_factory.mktemp(request.param))


# ---------------------------------------------------------------- every family


def test_shape_dtype_and_protocol(tiny):
    emb = tiny.build()
    assert isinstance(emb, Embedder)
    assert emb.name == "hf" and emb.metric == "cosine"
    assert emb.sample_rate == tiny.sample_rate
    out = emb.embed(tiny.windows())
    assert out.shape == (5, emb.dim)
    assert out.dtype == np.float32
    assert np.isfinite(out).all()
    assert emb.embed(tiny.windows(n=0)).shape == (0, emb.dim)


def test_matches_the_saved_model(tiny):
    """The weights really come from the directory (not a fresh random init)."""
    x = tiny.windows(n=3)
    np.testing.assert_allclose(tiny.build().embed(x), tiny.reference(x), rtol=1e-4, atol=1e-5)


def test_deterministic_and_batch_size_invariant(tiny):
    x = tiny.windows(n=3)
    two = tiny.build(batch_size=2)  # batches of 2 + 1
    first = two.embed(x)
    np.testing.assert_array_equal(first, two.embed(x))
    one = tiny.build(batch_size=1).embed(x)
    np.testing.assert_allclose(one, first, rtol=1e-4, atol=1e-5)


def test_spec_round_trip(tiny):
    emb = tiny.build(pooling="max")
    spec = json.loads(json.dumps(emb.spec))
    assert spec["name"] == "hf" and spec["model"] == str(tiny.path) and spec["pooling"] == "max"
    assert "device" not in spec and "batch_size" not in spec
    again = build_embedder(spec)
    assert again.spec == emb.spec and again.dim == emb.dim
    x = tiny.windows(n=2)
    np.testing.assert_array_equal(again.embed(x), emb.embed(x))


def test_different_windows_give_different_vectors(tiny):
    out = tiny.build().embed(tiny.windows(n=4))
    for i in range(4):
        for j in range(i + 1, 4):
            assert not np.allclose(out[i], out[j], rtol=1e-3, atol=1e-4)


def test_mean_std_pooling_doubles_dim(tiny):
    mean = tiny.build(pooling="mean")
    both = tiny.build(pooling="mean+std")
    assert both.dim == 2 * mean.dim
    x = tiny.windows(n=2)
    out = both.embed(x)
    assert out.shape == (2, both.dim)
    np.testing.assert_allclose(out[:, : mean.dim], mean.embed(x), rtol=1e-5, atol=1e-6)
    assert (out[:, mean.dim :] >= 0).all()


def test_bfloat16_is_close_to_float32(tiny):
    x = tiny.windows(n=2)
    ref = tiny.build(dtype="float32").embed(x)
    bf16 = tiny.build(dtype="bfloat16")
    assert bf16.torch_dtype == torch.bfloat16
    out = bf16.embed(x)
    assert out.dtype == np.float32 and np.isfinite(out).all()
    cosine = (out * ref).sum(1) / (np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1))
    assert (cosine > 0.98).all(), cosine


# ---------------------------------------------------------------- layers and pooling


def test_layer_selection(tiny):
    if tiny.family == "clap":
        with pytest.raises(EmbedderError, match="layer=-1"):
            tiny.build(layer=1)
        return
    x = tiny.windows(n=2)
    last = tiny.build(layer=-1).embed(x)
    np.testing.assert_array_equal(tiny.build(layer=tiny.num_layers).embed(x), last)
    first = tiny.build(layer=1)
    assert first.dim == tiny.build().dim
    assert not np.allclose(first.embed(x), last, rtol=1e-3, atol=1e-4)
    np.testing.assert_array_equal(tiny.build(layer=-2).embed(x), first.embed(x))
    assert np.isfinite(tiny.build(layer=0).embed(x)).all()
    for bad in (tiny.num_layers + 1, -(tiny.num_layers + 2)):
        with pytest.raises(EmbedderError, match="out of range"):
            tiny.build(layer=bad)


NOT_APPLICABLE = {"ast": "projection", "clap": "cls", "wav2vec2": "cls", "wavlm": "median"}


def test_family_specific_pooling(tiny):
    with pytest.raises(EmbedderError, match="does not apply"):
        tiny.build(pooling=NOT_APPLICABLE[tiny.family])
    x = tiny.windows(n=2)
    if tiny.family == "ast":
        cls = tiny.build(pooling="cls")
        assert cls.dim == 32 and cls.pooling == "cls"
        out = cls.embed(x)
        assert out.shape == (2, 32) and np.isfinite(out).all()
        mean = tiny.build()
        assert mean.max_samples == 400 + 100 * 160 - 1  # 100 frames of 10 ms after a 25 ms one
        assert mean.embed(np.tile(x, 2)).shape == (2, 32)  # 1 s: every patch is real audio
    elif tiny.family == "clap":
        assert tiny.build().pooling == "projection"
        assert tiny.build().dim == 24  # projection_dim
        mean = tiny.build(pooling="mean")
        assert mean.dim == 32  # patch_embeds_hidden_size * 2 ** (stages - 1)
        assert mean.embed(x).shape == (2, 32)
    else:
        assert tiny.build().pooling == "mean"


def test_window_length_limits(tiny):
    emb = tiny.build()
    if emb.max_samples is not None:
        with pytest.raises(EmbedderError, match="longer than"):
            emb.embed(np.zeros((1, emb.max_samples + 1), dtype=np.float32))
    if emb.min_samples > 1:
        with pytest.raises(EmbedderError, match="shorter than"):
            emb.embed(np.zeros((1, emb.min_samples - 1), dtype=np.float32))
    x = tiny.windows(n=1)
    x[0, 10] = np.nan
    with pytest.raises(EmbedderError, match="NaN"):
        emb.embed(x)
    with pytest.raises(EmbedderError, match="n_windows"):
        emb.embed(x[0])


# ---------------------------------------------------------------- other models


@pytest.fixture(scope="module")
def ast_tiny(tmp_path_factory) -> Tiny:
    return _build_ast(tmp_path_factory.mktemp("ast-fbank"))


def test_ast_fbank_on_device_matches_the_feature_extractor(ast_tiny):
    """On CUDA, AST's fbank runs on the GPU; the same code on the CPU equals the extractor's."""
    emb = ast_tiny.build()
    assert emb._fbank_on_device is False  # CPU: the feature extractor itself
    rng = np.random.default_rng(5)
    for samples in (8000, emb.max_samples):  # half the frames; exactly max_length frames
        x = (0.1 * rng.standard_normal((2, samples))).astype(np.float32)
        expected = emb._fe(list(x), sampling_rate=16000, return_tensors="pt")["input_values"]
        torch.testing.assert_close(emb._ast_fbank(x), expected, rtol=1e-5, atol=1e-5)
        want = emb.embed(x)
        emb._fbank_on_device = True
        np.testing.assert_allclose(emb.embed(x), want, rtol=1e-5, atol=1e-6)
        emb._fbank_on_device = False


def test_clap_fusion_model_does_not_depend_on_the_batch(tmp_path):
    """The feature extractor marks one short clip "longer" at random; the embedder does not."""
    tiny = _build_clap(tmp_path, enable_fusion=True)
    x = tiny.windows(n=3)
    alone = np.concatenate([tiny.build(batch_size=1).embed(x[i : i + 1]) for i in range(3)])
    together = tiny.build(batch_size=3)
    np.testing.assert_allclose(together.embed(x), alone, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(together.embed(x), tiny.reference(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "model_type", ["hubert", "data2vec-audio", "wav2vec2-conformer", "unispeech", "unispeech-sat"]
)
def test_other_wav2vec2_family_models(model_type, tmp_path):
    tiny = _wav2vec2_like(model_type, tmp_path)
    emb = tiny.build(layer=1)
    assert emb.model_type == model_type and emb.family == "wav2vec2"
    x = tiny.windows(n=2)
    out = emb.embed(x)
    assert out.shape == (2, 32) and np.isfinite(out).all()
    np.testing.assert_allclose(tiny.build().embed(x), tiny.reference(x), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- errors


def test_missing_directory(tmp_path):
    with pytest.raises(EmbedderError, match="does not exist"):
        build_embedder({"name": "hf", "model": str(tmp_path / "no-such-model")})


def test_directory_without_config(tmp_path):
    with pytest.raises(EmbedderError, match="no config.json"):
        build_embedder({"name": "hf", "model": str(tmp_path)})


def test_unsupported_model_type(tmp_path):
    transformers.ViTConfig(hidden_size=32, num_hidden_layers=1).save_pretrained(tmp_path)
    with pytest.raises(EmbedderError, match="'vit'.*not support"):
        build_embedder({"name": "hf", "model": str(tmp_path)})
    # A model_type transformers itself does not know (remote code is not run).
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "beats-custom"}))
    with pytest.raises(EmbedderError, match="cannot read the config.json"):
        build_embedder({"name": "hf", "model": str(tmp_path)})


def test_hub_id_not_in_cache_is_not_downloaded():
    with pytest.raises(EmbedderError, match="cannot load model"):
        build_embedder(
            {"name": "hf", "model": "humwatch-tests/no-such-model", "local_files_only": True}
        )
    with pytest.raises(EmbedderError, match="cannot load model"):
        build_embedder({"name": "hf", "model": "humwatch-tests/no-such-model"})


def test_missing_feature_extractor(tmp_path):
    tiny = _build_wav2vec2(tmp_path)
    (tiny.path / "preprocessor_config.json").unlink()
    with pytest.raises(EmbedderError, match="preprocessor_config.json"):
        tiny.build()


def test_checkpoint_that_lacks_weights(tmp_path):
    tiny = _build_wav2vec2(tmp_path)
    config = json.loads((tiny.path / "config.json").read_text())
    config["num_hidden_layers"] = 3
    (tiny.path / "config.json").write_text(json.dumps(config))
    with pytest.raises(EmbedderError, match="random weights"):
        tiny.build()


def test_bad_parameters(tmp_path):
    tiny = _build_wav2vec2(tmp_path)
    with pytest.raises(EmbedderError, match="dtype"):
        tiny.build(dtype="int8")
    with pytest.raises(EmbedderError, match="batch_size"):
        tiny.build(batch_size=0)
    with pytest.raises(EmbedderError, match="layer"):
        tiny.build(layer="last")
    with pytest.raises(EmbedderError, match="device"):
        tiny.build(device="tpu")
    with pytest.raises(EmbedderError, match="bad hf embedder parameters"):
        tiny.build(window=3)
    if not torch.cuda.is_available():
        with pytest.raises(EmbedderError, match="CUDA is not available"):
            tiny.build(device="cuda")

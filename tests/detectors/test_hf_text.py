"""CLAP's text tower in the hf embedder, on a tiny random-weight CLAP saved locally."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from detectors.embedders import build_embedder
from detectors.errors import EmbedderError
from tests.detectors.test_hf_embedder import _build_ast, _build_clap, offline  # noqa: F401

transformers = pytest.importorskip("transformers")


def save_tiny_tokenizer(path: Path) -> None:
    """A byte-level BPE tokenizer (RoBERTa's kind, as CLAP's) with a 60-token vocabulary."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for ch in letters + "Ġ":
        vocab[ch] = len(vocab)
    (path / "vocab.json").write_text(json.dumps(vocab))
    (path / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = transformers.RobertaTokenizer(
        vocab_file=str(path / "vocab.json"), merges_file=str(path / "merges.txt")
    )
    tokenizer.save_pretrained(path)


@pytest.fixture(scope="module")
def tiny_clap(tmp_path_factory):
    path = tmp_path_factory.mktemp("clap-text")
    tiny = _build_clap(path)
    save_tiny_tokenizer(path)
    return tiny


def test_text_embeddings_match_clap_get_text_features(tiny_clap):
    embedder = tiny_clap.build()
    assert embedder.text_available
    vectors = embedder.embed_text(["a squealing belt", "hum"])
    assert vectors.shape == (2, embedder.dim) and vectors.dtype == np.float32
    model = transformers.ClapModel.from_pretrained(tiny_clap.path).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_clap.path)
    tokens = tokenizer(["a squealing belt", "hum"], padding=True, return_tensors="pt")
    with torch.inference_mode():
        reference = model.text_projection(model.text_model(**tokens).pooler_output)
    np.testing.assert_allclose(vectors, reference.numpy(), rtol=1e-4, atol=1e-5)
    # Same space as the windows: the dimensions agree with the audio projection.
    assert embedder.embed(tiny_clap.windows(2)).shape[1] == vectors.shape[1]


def test_text_is_refused_where_there_is_no_joint_space(tiny_clap, tmp_path):
    mean = tiny_clap.build(pooling="mean")
    assert not mean.text_available
    with pytest.raises(EmbedderError, match="not CLAP's joint audio-text space"):
        mean.embed_text(["x"])
    ast = _build_ast(tmp_path / "ast")
    with pytest.raises(EmbedderError, match="no text tower"):
        build_embedder({"name": "hf", "model": str(ast.path), "device": "cpu"}).embed_text(["x"])

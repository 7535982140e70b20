"""Audio to window vectors in one call: decode -> mono -> resample -> windows -> embed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from detectors.audio import ChannelSpec, DecodedAudio, load_mono
from detectors.embedders import Embedder, embed_windows
from detectors.windows import Windows, frame


@dataclass(frozen=True)
class EmbeddedAudio:
    """One recording, windowed and embedded.

    Attributes
    ----------
    decoded : DecodedAudio, the audio as it arrived
    waveform : np.ndarray, shape (n_samples,), mono float32 at the embedder's rate
    windows : Windows, shape (n_windows, window_samples)
    vectors : np.ndarray, shape (n_windows, dim), float32
    """

    decoded: DecodedAudio
    waveform: np.ndarray
    windows: Windows
    vectors: np.ndarray


def embed_audio(
    source: bytes | str | Path,
    embedder: Embedder,
    window_seconds: float,
    hop_seconds: float,
    channel: ChannelSpec = "mix",
) -> EmbeddedAudio:
    """Decode ``source`` and embed each of its windows."""
    waveform, decoded = load_mono(source, embedder.sample_rate, channel, min_seconds=window_seconds)
    windows = frame(waveform, embedder.sample_rate, window_seconds, hop_seconds)
    return EmbeddedAudio(decoded, waveform, windows, embed_windows(embedder, waveform, windows))

"""Window embedders behind one protocol, built from a JSON-serialisable spec.

``build_embedder({"name": "logmel", ...})`` or ``build_embedder("logmel")``; an embedder's
``spec`` property rebuilds an identical one.
"""

from __future__ import annotations

from typing import Any

from detectors.embedders.base import Embedder
from detectors.errors import EmbedderError

EMBEDDER_NAMES = ("logmel", "hf", "aisfx")


def build_embedder(spec: str | dict[str, Any] | None = None) -> Embedder:
    """Build an embedder from its name or spec dict (``None`` gives the default logmel)."""
    if spec is None:
        spec = {"name": "logmel"}
    if isinstance(spec, str):
        spec = {"name": spec}
    params = dict(spec)
    name = params.pop("name", None)
    if name == "logmel":
        from detectors.embedders.logmel import LogMelEmbedder

        try:
            return LogMelEmbedder(**params)
        except TypeError as exc:
            raise EmbedderError(f"bad logmel embedder parameters: {exc}") from exc
    if name == "hf":
        from detectors.embedders.hf import HFEmbedder

        try:
            return HFEmbedder(**params)
        except TypeError as exc:
            raise EmbedderError(f"bad hf embedder parameters: {exc}") from exc
    if name == "aisfx":
        from detectors.embedders.aisfx import AisfxEmbedder

        try:
            return AisfxEmbedder(**params)
        except TypeError as exc:
            raise EmbedderError(f"bad aisfx embedder parameters: {exc}") from exc
    raise EmbedderError(f"unknown embedder {name!r}; choose one of {', '.join(EMBEDDER_NAMES)}")


def embed_windows(embedder: Embedder, waveform, windows):
    """``(n_windows, dim)`` vectors of ``windows`` cut from ``waveform``: through the
    embedder's ``embed_recording`` when it has one (one spectrogram per recording), else
    ``embed(windows.samples)``."""
    embed_recording = getattr(embedder, "embed_recording", None)
    if embed_recording is not None:
        return embed_recording(waveform, windows)
    return embedder.embed(windows.samples)


__all__ = ["EMBEDDER_NAMES", "Embedder", "build_embedder", "embed_windows"]

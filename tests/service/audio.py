"""Synthetic machine audio for the service tests (numpy only, deterministic)."""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf


def hum(
    seconds: float = 1.0,
    sample_rate: int = 16000,
    *,
    seed: int = 0,
    fault: bool = False,
    channels: int = 1,
    f0: float = 120.0,
    noise: float = 0.03,
) -> np.ndarray:
    """A machine hum ``(n,)`` or ``(n, channels)``: five harmonics of ``f0`` whose pitch,
    levels and slow amplitude modulation vary a little from recording to recording (as a
    real machine's do), plus noise. ``fault`` adds a 3.1 kHz whine and periodic clicks."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    base = f0 * (1 + 0.01 * rng.standard_normal())
    x = np.zeros_like(t)
    for i in range(1, 6):
        level = 0.2 / i * (1 + 0.2 * rng.standard_normal())
        x += level * np.sin(2 * np.pi * base * i * t + rng.uniform(0, 2 * np.pi))
    x *= 1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.5, 2.0) * t + rng.uniform(0, 2 * np.pi))
    x += noise * rng.standard_normal(t.size)
    if fault:
        x += 0.15 * np.sin(2 * np.pi * 3100.0 * t)
        clicks = np.zeros_like(x)
        clicks[:: max(1, sample_rate // 8)] = 0.8
        x += np.convolve(clicks, np.exp(-np.arange(64) / 8.0), mode="same")
    x = x.astype(np.float32)
    if channels > 1:
        x = np.stack([x * (1.0 - 0.05 * c) for c in range(channels)], axis=1)
    return x


def to_bytes(
    samples: np.ndarray, sample_rate: int = 16000, fmt: str = "WAV", subtype=None
) -> bytes:
    buf = io.BytesIO()
    if subtype is None:
        subtype = {"WAV": "PCM_16", "FLAC": "PCM_16", "OGG": "VORBIS"}[fmt]
    sf.write(buf, samples, sample_rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def wav(seconds: float = 1.0, sample_rate: int = 16000, **kwargs) -> bytes:
    """A hum as 16-bit WAV bytes."""
    return to_bytes(hum(seconds, sample_rate, **kwargs), sample_rate)

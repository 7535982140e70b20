"""Spectrogram pictures: a log-mel image of a waveform, resized and colour-mapped to RGB.

``log_mel_image`` computes the same log-mel spectrogram as the default embedder (torchaudio,
HTK mel scale, power in dB); ``render_rgb`` maps a dB range onto a perceptually ordered colour
map (magma-like, interpolated from anchors: no matplotlib figure) and resizes to the requested
picture, low frequencies at the bottom. Both are pure numpy/torch.
"""

from __future__ import annotations

import numpy as np
import torch

from detectors.errors import DetectorError

# Anchors of matplotlib's "magma" colour map at evenly spaced positions (0 .. 1).
_MAGMA_ANCHORS = np.array(
    [
        (0, 0, 4),
        (28, 16, 68),
        (79, 18, 123),
        (129, 37, 129),
        (181, 54, 122),
        (229, 80, 100),
        (251, 135, 97),
        (254, 194, 135),
        (252, 253, 191),
    ],
    dtype=np.float64,
)
_POSITIONS = np.linspace(0.0, 1.0, len(_MAGMA_ANCHORS))
LUT = np.stack(
    [np.interp(np.linspace(0.0, 1.0, 256), _POSITIONS, _MAGMA_ANCHORS[:, c]) for c in range(3)],
    axis=1,
).astype(np.uint8)  # (256, 3)


class SpectrogramError(DetectorError):
    """A spectrogram cannot be made from these samples or parameters."""


_MEL_CACHE: dict[tuple, torch.nn.Module] = {}


def _mel(sample_rate: int, n_fft: int, hop_length: int, n_mels: int, f_min: float, f_max):
    key = (sample_rate, n_fft, hop_length, n_mels, f_min, f_max)
    mel = _MEL_CACHE.get(key)
    if mel is None:
        import torchaudio

        mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate,
            n_fft=n_fft,
            hop_length=hop_length,
            n_mels=n_mels,
            f_min=f_min,
            f_max=f_max,
            power=2.0,
        )
        if len(_MEL_CACHE) < 16:
            _MEL_CACHE[key] = mel
    return mel


def log_mel_image(
    samples: np.ndarray,
    sample_rate: int,
    *,
    n_fft: int = 1024,
    hop_length: int = 256,
    n_mels: int = 128,
    f_min: float = 0.0,
    f_max: float | None = None,
) -> np.ndarray:
    """``(n_samples,)`` float audio -> ``(n_mels, n_frames)`` float32 power in dB."""
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    if samples.size < n_fft:
        raise SpectrogramError(
            f"{samples.size} samples are fewer than one FFT frame ({n_fft}); nothing to draw"
        )
    with torch.no_grad():
        power = _mel(sample_rate, n_fft, hop_length, n_mels, f_min, f_max)(
            torch.from_numpy(samples)
        )
        return (10.0 * torch.log10(power + 1e-10)).numpy().astype(np.float32)


def render_rgb(
    image_db: np.ndarray, width: int, height: int, db_min: float, db_max: float
) -> np.ndarray:
    """``(n_mels, n_frames)`` dB -> ``(height, width, 3)`` uint8, low bands at the bottom.

    Values at or below ``db_min`` get the darkest colour, at or above ``db_max`` the lightest.
    """
    if not db_max > db_min:
        raise SpectrogramError(f"db_max ({db_max}) must be above db_min ({db_min})")
    x = torch.from_numpy(np.ascontiguousarray(image_db[::-1], dtype=np.float32))[None, None]
    with torch.no_grad():
        resized = torch.nn.functional.interpolate(
            x, size=(int(height), int(width)), mode="bilinear", align_corners=False
        )[0, 0].numpy()
    level = np.clip((resized - db_min) / (db_max - db_min), 0.0, 1.0)
    return LUT[np.round(level * 255.0).astype(np.uint8)]

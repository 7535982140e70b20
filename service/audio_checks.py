"""Checks on decoded audio the service refuses before resampling or embedding it."""

from __future__ import annotations

from detectors.errors import AudioTooShortError
from service.errors import InvalidInputError
from service.limits import MAX_AUDIO_CHANNELS, MAX_AUDIO_RATE, MIN_AUDIO_RATE, samples_for


class UnsupportedSampleRateError(InvalidInputError):
    code = "unsupported_sample_rate"


def check_audio_format(sample_rate: int, channels: int) -> None:
    """Sample rate within ``MIN_AUDIO_RATE``..``MAX_AUDIO_RATE`` Hz and at most 64 channels."""
    if not MIN_AUDIO_RATE <= sample_rate <= MAX_AUDIO_RATE:
        raise UnsupportedSampleRateError(
            f"audio sampled at {sample_rate} Hz cannot be used: send {MIN_AUDIO_RATE}-"
            f"{MAX_AUDIO_RATE} Hz (the embedders resample from that range)"
        )
    if channels > MAX_AUDIO_CHANNELS:
        raise InvalidInputError(
            f"audio has {channels} channels; at most {MAX_AUDIO_CHANNELS} are accepted"
        )


def check_window_fits(n_samples: int, sample_rate: int, window_seconds: float) -> None:
    """Refuse audio shorter than one window, in exact sample counts."""
    needed = samples_for(window_seconds, sample_rate)
    if n_samples < needed:
        raise AudioTooShortError(
            f"audio has {n_samples:,} samples at {sample_rate:,} Hz "
            f"({n_samples / sample_rate:.6g} s), shorter than one window of {needed:,} samples "
            f"({window_seconds:g} s); send longer recordings"
        )

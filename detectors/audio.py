"""Decode, validate, reduce to mono and resample audio.

``decode`` turns WAV, FLAC or OGG bytes (or a path) into ``DecodedAudio``: its ``samples`` are
float32 of shape ``(n_samples, n_channels)``; ``DecodedAudio.mono`` (or ``to_mono`` on an array)
picks one channel or mixes them down; ``resample`` converts the rate with torchaudio;
``load_mono`` chains the three.

16-bit PCM (WAV or FLAC, what microphones and the agent send) is read as int16 and mixed down
with a blocked matrix-vector product: the result is bit-for-bit the float32 read followed by
``mean(axis=1)`` (integer sums of int16 are exact in float32, and both divide once by the
channel count), at a tenth of the cost on 8-channel audio (docs/benchmarks.md).
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf

from detectors.errors import (
    AudioTooShortError,
    ChannelError,
    EmptyAudioError,
    NonFiniteAudioError,
    TruncatedAudioError,
    UnsupportedFormatError,
)

# libsndfile major formats we accept, by the family a client would call them.
SUPPORTED_FORMATS = {"WAV": "WAV", "WAVEX": "WAV", "RF64": "WAV", "FLAC": "FLAC", "OGG": "OGG"}
ChannelSpec = int | Literal["mix"]
INT16_SCALE = np.float32(1.0 / 32768.0)  # libsndfile's int16 -> float normalisation (exact)
_MIX_BLOCK_ROWS = 16_384  # rows cast to float32 at a time: the block stays in the L2 cache
_EXACT_MIX_MAX_CHANNELS = 256  # channel sums of int16 stay below 2**24 (exact in float32)


@dataclass(frozen=True)
class DecodedAudio:
    """Decoded audio.

    Attributes
    ----------
    pcm : np.ndarray, shape (n_samples, n_channels)
        The samples as read: int16 for 16-bit PCM, else float32 in [-1, 1].
    sample_rate : int
    format : str
        Container format as libsndfile names it ("WAV", "FLAC", "OGG").
    subtype : str
        libsndfile's sample encoding ("PCM_16", "PCM_24", "FLOAT", "VORBIS", ...).
    """

    pcm: np.ndarray
    sample_rate: int
    format: str
    subtype: str = ""

    @cached_property
    def samples(self) -> np.ndarray:
        """``(n_samples, n_channels)`` float32 in [-1, 1]."""
        if self.pcm.dtype == np.int16:
            return self.pcm.astype(np.float32) * INT16_SCALE
        return self.pcm

    @property
    def channels(self) -> int:
        return int(self.pcm.shape[1])

    @property
    def n_samples(self) -> int:
        return int(self.pcm.shape[0])

    @property
    def duration_seconds(self) -> float:
        return self.pcm.shape[0] / self.sample_rate

    def mono(self, channel: ChannelSpec = "mix") -> np.ndarray:
        """``(n_samples,)`` float32: one channel, or the mean of all (see ``to_mono``)."""
        return to_mono(self.pcm, channel)


@dataclass(frozen=True)
class AudioHeader:
    """What the container announces, before any sample is decoded (``decode``'s ``inspect``).

    Attributes
    ----------
    sample_rate : int
    channels : int
    frames : int
        Samples per channel, as the header says (libsndfile's ``frames``).
    format : str
        libsndfile's container name ("WAV", "FLAC", "OGG", or one ``decode`` refuses).
    subtype : str
    """

    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str


_DECODE_ERRORS = (sf.LibsndfileError, RuntimeError, TypeError, ValueError)


def _unsupported(exc: Exception) -> UnsupportedFormatError:
    if isinstance(exc, sf.LibsndfileError):
        # error_string is libsndfile's own words, without the in-memory file's repr.
        reason = getattr(exc, "error_string", "") or "unrecognised data"
    else:
        reason = str(exc)
    return UnsupportedFormatError(
        f"cannot decode audio ({reason}); send WAV, FLAC or OGG (Vorbis/Opus) audio"
    )


def _read_bytes(source: bytes | bytearray | memoryview | str | Path) -> bytes:
    if isinstance(source, str | Path):
        return Path(source).read_bytes()
    return bytes(source)


def _check_wav_length(data: bytes) -> None:
    """Raise if a RIFF/WAVE file's data chunk claims more bytes than the file holds."""
    if len(data) < 12 or data[:4] not in (b"RIFF", b"RF64") or data[8:12] != b"WAVE":
        return
    if len(data) < 44:
        raise TruncatedAudioError(
            f"WAV file is truncated: {len(data)} bytes is shorter than a WAV header (44 bytes)"
        )
    pos = 12
    while pos + 8 <= len(data):
        chunk_id = data[pos : pos + 4]
        (size,) = struct.unpack("<I", data[pos + 4 : pos + 8])
        if chunk_id == b"data":
            available = len(data) - pos - 8
            # RF64 writes 0xFFFFFFFF here and keeps the real size in ds64; trust libsndfile.
            if size != 0xFFFFFFFF and size > available:
                raise TruncatedAudioError(
                    f"WAV file is truncated: its header announces {size} bytes of samples "
                    f"but only {available} are present; send the complete file"
                )
            return
        pos += 8 + size + (size & 1)
    raise TruncatedAudioError("WAV file is truncated: no 'data' chunk with samples was found")


def decode(
    source: bytes | bytearray | memoryview | str | Path,
    inspect: Callable[[AudioHeader], None] | None = None,
) -> DecodedAudio:
    """Decode WAV, FLAC or OGG audio.

    Parameters
    ----------
    source : bytes or path
    inspect : callable, optional
        Called with the container's ``AudioHeader`` once it is open and before any sample
        is decoded (to refuse audio that is too long, or at an unusable rate, without
        decoding it); what it raises propagates. Not called when the container cannot be
        opened at all.

    Returns
    -------
    DecodedAudio with samples of shape (n_samples, n_channels), float32.

    Raises
    ------
    EmptyAudioError, TruncatedAudioError, UnsupportedFormatError, NonFiniteAudioError
    """
    data = _read_bytes(source)
    if not data:
        raise EmptyAudioError("audio is empty: the request or file holds no bytes")
    try:
        f = sf.SoundFile(io.BytesIO(data))
    except _DECODE_ERRORS as exc:
        _check_wav_length(data)
        raise _unsupported(exc) from exc
    with f:
        if inspect is not None:
            inspect(
                AudioHeader(int(f.samplerate), int(f.channels), int(f.frames), f.format, f.subtype)
            )
        _check_wav_length(data)
        try:
            fmt = f.format
            subtype = f.subtype
            rate = int(f.samplerate)
            # 16-bit PCM as int16: no float conversion now, and it cannot be NaN.
            dtype = "int16" if subtype == "PCM_16" else "float32"
            samples = f.read(dtype=dtype, always_2d=True)
        except _DECODE_ERRORS as exc:
            raise _unsupported(exc) from exc
    if fmt not in SUPPORTED_FORMATS:
        raise UnsupportedFormatError(
            f"audio container {fmt} is not supported; send WAV, FLAC or OGG"
        )
    if samples.shape[0] == 0:
        raise EmptyAudioError("audio holds zero samples; send at least one window of sound")
    if samples.dtype != np.int16 and not np.isfinite(samples).all():
        bad = int((~np.isfinite(samples)).sum())
        raise NonFiniteAudioError(
            f"audio contains {bad} NaN or infinite samples; check the recorder's float output"
        )
    return DecodedAudio(
        pcm=np.ascontiguousarray(samples),
        sample_rate=rate,
        format=SUPPORTED_FORMATS[fmt],
        subtype=subtype,
    )


def to_mono(samples: np.ndarray, channel: ChannelSpec = "mix") -> np.ndarray:
    """Reduce ``(n_samples, n_channels)`` to ``(n_samples,)`` float32.

    ``channel="mix"`` averages the channels; an integer selects one (0-based). ``samples`` is
    float (in [-1, 1]) or int16 PCM (scaled by 1/32768, as libsndfile's float read does); for
    int16 the result equals, bit for bit, the float32 read followed by ``mean(axis=1)``.
    """
    if samples.ndim == 1:
        samples = samples[:, None]
    n_channels = samples.shape[1]
    is_int16 = samples.dtype == np.int16
    if channel == "mix":
        if n_channels == 1:
            return _as_float(samples[:, 0])
        if is_int16 and n_channels <= _EXACT_MIX_MAX_CHANNELS:
            return _mix_int16(samples)
        if is_int16:
            samples = samples.astype(np.float32) * INT16_SCALE
        return samples.mean(axis=1, dtype=np.float32)
    if not isinstance(channel, int) or isinstance(channel, bool):
        raise ChannelError(f"channel must be 'mix' or a channel index, not {channel!r}")
    if not 0 <= channel < n_channels:
        raise ChannelError(
            f"channel {channel} does not exist: the audio has {n_channels} channel(s) "
            f"(valid: 0..{n_channels - 1} or 'mix')"
        )
    return _as_float(samples[:, channel])


def _as_float(column: np.ndarray) -> np.ndarray:
    """One channel ``(n,)`` as a new float32 array (int16 scaled by 1/32768)."""
    if column.dtype == np.int16:
        return column.astype(np.float32) * INT16_SCALE
    return column.astype(np.float32, copy=True)


def _mix_int16(pcm: np.ndarray) -> np.ndarray:
    """``(n, c)`` int16 -> ``(n,)`` float32 channel mean, as ``(pcm / 32768).mean(axis=1)``.

    The channel sums are integers below 2**24, exact in float32 whatever the order of the
    matrix-vector product; scaling by 2**-15 is exact; the one rounding is the division by
    the channel count, the same one ``mean`` makes.
    """
    n, c = pcm.shape
    ones = np.ones(c, dtype=np.float32)
    out = np.empty(n, dtype=np.float32)
    block = np.empty((min(n, _MIX_BLOCK_ROWS), c), dtype=np.float32)
    for start in range(0, n, _MIX_BLOCK_ROWS):
        rows = pcm[start : start + _MIX_BLOCK_ROWS]
        scratch = block[: rows.shape[0]]
        np.copyto(scratch, rows, casting="unsafe")
        np.matmul(scratch, ones, out=out[start : start + rows.shape[0]])
    out *= INT16_SCALE
    out /= np.float32(c)
    return out


def resample(waveform: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Resample ``(n_samples,)`` float32 from ``orig_rate`` to ``target_rate`` (torchaudio)."""
    if orig_rate == target_rate:
        return waveform.astype(np.float32, copy=False)
    import torch
    import torchaudio.functional as taf

    out = taf.resample(torch.from_numpy(np.ascontiguousarray(waveform)), orig_rate, target_rate)
    return out.numpy().astype(np.float32, copy=False)


def load_mono(
    source: bytes | bytearray | memoryview | str | Path,
    target_rate: int,
    channel: ChannelSpec = "mix",
    min_seconds: float = 0.0,
) -> tuple[np.ndarray, DecodedAudio]:
    """Decode, reduce to mono and resample in one call.

    Returns
    -------
    waveform : np.ndarray, shape (n_samples,), float32 at ``target_rate``
    decoded : DecodedAudio, the audio as it arrived (rate, channels, duration)

    Raises
    ------
    AudioTooShortError when the audio lasts less than ``min_seconds``.
    """
    decoded = decode(source)
    if decoded.duration_seconds < min_seconds:
        raise AudioTooShortError(
            f"audio lasts {decoded.duration_seconds:.3f} s, shorter than one window "
            f"({min_seconds:g} s); send longer recordings"
        )
    return resample(decoded.mono(channel), decoded.sample_rate, target_rate), decoded


def encode_wav(waveform: np.ndarray, sample_rate: int) -> bytes:
    """Encode ``(n_samples,)`` or ``(n_samples, n_channels)`` float audio as 16-bit PCM WAV."""
    buf = io.BytesIO()
    sf.write(buf, np.clip(waveform, -1.0, 1.0), sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()

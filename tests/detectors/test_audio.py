import io

import numpy as np
import pytest
import soundfile as sf

from detectors import audio
from detectors.errors import (
    AudioTooShortError,
    ChannelError,
    EmptyAudioError,
    NonFiniteAudioError,
    TruncatedAudioError,
    UnsupportedFormatError,
)

RATE = 16000


def tone(seconds=1.0, rate=RATE, freq=440.0, channels=1):
    t = np.arange(int(seconds * rate)) / rate
    x = 0.5 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    return np.stack([x * (c + 1) / channels for c in range(channels)], axis=1)


def encode(samples, rate=RATE, fmt="WAV", subtype=None):
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("fmt", "subtype"), [("WAV", "PCM_16"), ("WAV", "FLOAT"), ("FLAC", None), ("OGG", "VORBIS")]
)
def test_decodes_wav_flac_ogg(fmt, subtype):
    decoded = audio.decode(encode(tone(), fmt=fmt, subtype=subtype))
    assert decoded.samples.shape == (RATE, 1)
    assert decoded.samples.dtype == np.float32
    assert decoded.sample_rate == RATE
    assert decoded.format == fmt
    assert decoded.duration_seconds == pytest.approx(1.0)
    # Lossy OGG keeps the tone's energy, lossless formats keep the samples.
    tol = 0.05 if fmt == "OGG" else 1e-3
    assert np.sqrt(np.mean(decoded.samples**2)) == pytest.approx(0.5 / np.sqrt(2), abs=tol)


def test_decodes_from_path(tmp_path):
    path = tmp_path / "clip.flac"
    path.write_bytes(encode(tone(), fmt="FLAC"))
    assert audio.decode(path).samples.shape == (RATE, 1)
    assert audio.decode(str(path)).sample_rate == RATE


def test_empty_bytes():
    with pytest.raises(EmptyAudioError, match="empty"):
        audio.decode(b"")


def test_zero_sample_wav():
    with pytest.raises(EmptyAudioError, match="zero samples"):
        audio.decode(encode(np.zeros((0, 1), dtype=np.float32)))


def test_truncated_wav():
    data = encode(tone(1.0))
    with pytest.raises(TruncatedAudioError, match="truncated"):
        audio.decode(data[: len(data) // 2])
    with pytest.raises(TruncatedAudioError):
        audio.decode(data[:30])


def test_random_bytes_are_unsupported():
    rng = np.random.default_rng(0)
    with pytest.raises(UnsupportedFormatError, match="WAV, FLAC or OGG") as info:
        audio.decode(rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())
    assert "BytesIO" not in str(info.value) and "0x" not in str(info.value)


@pytest.mark.parametrize(("fmt", "subtype"), [("WAV", "PCM_16"), ("FLAC", None), ("OGG", "VORBIS")])
def test_inspect_sees_the_header_before_decoding(fmt, subtype):
    data = encode(tone(2.0, rate=22050, channels=3), rate=22050, fmt=fmt, subtype=subtype)
    seen = []
    decoded = audio.decode(data, inspect=seen.append)
    (header,) = seen
    assert (header.sample_rate, header.channels, header.format) == (22050, 3, fmt)
    assert header.frames == decoded.n_samples == 44100
    assert header.subtype == decoded.subtype

    class TooLong(Exception):
        pass

    def refuse(_header):
        raise TooLong

    with pytest.raises(TooLong):  # raised before any sample is read, and propagated as is
        audio.decode(data, inspect=refuse)


def test_inspect_runs_before_the_wav_length_check_and_not_on_undecodable_bytes():
    truncated = encode(tone(1.0))[:-1000]
    seen = []
    with pytest.raises(TruncatedAudioError):
        audio.decode(truncated, inspect=seen.append)
    assert len(seen) == 1  # what the header says, before the truncation is found
    seen.clear()
    for data in (b"not audio at all" * 10, b"\x00"):
        with pytest.raises(UnsupportedFormatError):
            audio.decode(data, inspect=seen.append)
    with pytest.raises(EmptyAudioError):
        audio.decode(b"", inspect=seen.append)
    assert seen == []


def test_nan_samples():
    x = tone()
    x[100, 0] = np.nan
    x[200, 0] = np.inf
    with pytest.raises(NonFiniteAudioError, match="2 NaN or infinite"):
        audio.decode(encode(x, subtype="FLOAT"))


def test_multichannel_select_and_mix():
    x = tone(channels=8)
    decoded = audio.decode(encode(x, subtype="FLOAT"))
    assert decoded.channels == 8
    np.testing.assert_allclose(audio.to_mono(decoded.samples, 3), x[:, 3])
    np.testing.assert_allclose(audio.to_mono(decoded.samples, "mix"), x.mean(axis=1), atol=1e-6)
    with pytest.raises(ChannelError, match="0..7"):
        audio.to_mono(decoded.samples, 8)
    with pytest.raises(ChannelError):
        audio.to_mono(decoded.samples, "left")


@pytest.mark.parametrize("orig_rate", [8000, 44100, 48000])
def test_resample_keeps_duration_and_tone(orig_rate):
    x = tone(2.0, rate=orig_rate, freq=1000.0)[:, 0]
    y = audio.resample(x, orig_rate, RATE)
    assert y.dtype == np.float32
    assert abs(len(y) - 2 * RATE) <= 1
    spectrum = np.abs(np.fft.rfft(y))
    assert np.argmax(spectrum) * RATE / len(y) == pytest.approx(1000.0, abs=2.0)


def test_load_mono_checks_length_and_rate():
    data = encode(tone(0.5, rate=48000, channels=2), rate=48000)
    waveform, decoded = audio.load_mono(data, RATE, "mix")
    assert decoded.sample_rate == 48000 and decoded.channels == 2
    assert waveform.shape == (RATE // 2,)
    with pytest.raises(AudioTooShortError, match="shorter than one window"):
        audio.load_mono(data, RATE, min_seconds=1.0)


def test_encode_wav_round_trip():
    x = tone()[:, 0]
    back = audio.decode(audio.encode_wav(x, RATE)).samples[:, 0]
    np.testing.assert_allclose(back, x, atol=1e-4)


@pytest.mark.parametrize("channels", [1, 2, 3, 6, 8])
@pytest.mark.parametrize("fmt", ["WAV", "FLAC"])
def test_int16_decode_and_mixdown_match_float_read_bit_for_bit(channels, fmt):
    rng = np.random.default_rng(channels)
    pcm = rng.integers(-32768, 32768, size=(40_000, channels), dtype=np.int16)
    pcm[:4] = [[-32768] * channels, [32767] * channels, [0] * channels, [1] * channels]
    buf = io.BytesIO()
    sf.write(buf, pcm, RATE, format=fmt, subtype="PCM_16")
    data = buf.getvalue()
    decoded = audio.decode(data)
    assert decoded.pcm.dtype == np.int16  # read without a float conversion
    assert decoded.subtype == "PCM_16"
    reference = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)[0]
    np.testing.assert_array_equal(decoded.samples, reference)
    expected_mix = reference.mean(axis=1, dtype=np.float32)
    mixed = decoded.mono("mix")
    assert mixed.dtype == np.float32
    np.testing.assert_array_equal(mixed, expected_mix)
    np.testing.assert_array_equal(audio.to_mono(decoded.pcm, "mix"), expected_mix)
    for channel in range(channels):
        np.testing.assert_array_equal(decoded.mono(channel), reference[:, channel])
    waveform, _ = audio.load_mono(data, RATE, "mix")
    np.testing.assert_array_equal(waveform, expected_mix)


def test_mixdown_of_many_int16_channels_falls_back_to_the_float_mean():
    rng = np.random.default_rng(0)
    pcm = rng.integers(-32768, 32768, size=(1000, 300), dtype=np.int16)
    reference = (pcm.astype(np.float32) * np.float32(1 / 32768)).mean(axis=1, dtype=np.float32)
    np.testing.assert_array_equal(audio.to_mono(pcm, "mix"), reference)

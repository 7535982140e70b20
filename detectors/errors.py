"""Exceptions raised by the detectors library.

Every error carries a message that says what is wrong and what to do about it, so the
service can hand it to a client unchanged.
"""


class DetectorError(Exception):
    """Base class of every error raised by ``detectors``."""


class AudioError(DetectorError, ValueError):
    """The audio cannot be used as given."""


class EmptyAudioError(AudioError):
    """No bytes, or a container holding zero samples."""


class TruncatedAudioError(AudioError):
    """The container header promises more data than the file holds."""


class UnsupportedFormatError(AudioError):
    """The bytes are not WAV, FLAC or OGG audio that can be decoded."""


class NonFiniteAudioError(AudioError):
    """Samples contain NaN or infinity."""


class AudioTooShortError(AudioError):
    """The audio is shorter than one analysis window."""


class ChannelError(AudioError):
    """The requested channel does not exist."""


class NotFittedError(DetectorError, RuntimeError):
    """A baseline was used before ``fit``."""


class ArtifactError(DetectorError, ValueError):
    """A saved baseline cannot be loaded (corrupt, tampered or incompatible)."""


class EmbedderError(DetectorError, ValueError):
    """An embedder specification or model cannot be used."""


class WeightsUnavailableError(EmbedderError):
    """An embedder's pretrained weights are not where it loads them from (a server-side
    state: fetch them, e.g. ``humwatch models fetch NAME``)."""

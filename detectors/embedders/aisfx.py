"""The aiSFX sound-effects CNN as a window embedder (pretrained, 512-d).

A re-implementation of the embedding network of *Representation Learning for the Automatic
Indexing of Sound Effects Libraries* (A. B. Ma and A. Lerch, ISMIR 2022; PyPI package
``aisfx`` 0.1.2, code MIT, pretrained model CC BY 4.0). The architecture, the front end and
the checkpoint format were read from that package; the code here is our own, so humwatch does
not depend on ``aisfx`` (whose pinned numpy 1.23 / librosa 0.9 cannot be installed beside our
dependencies). ``humwatch models fetch aisfx`` puts the checkpoint in a model directory;
nothing is downloaded here.

Front end (the Essentia pipeline the paper's model was trained on)
-----------------------------------------------------------------
- audio at 44.1 kHz, float samples as decoded (no gain normalisation: Essentia's
  ``EasyLoader`` with its default replay gain of -6 dB scales by exactly 1);
- frames of 2048 samples every 1024 (23.2 ms), symmetric Hann window, magnitude spectrum
  squared (1025 bins);
- 96 triangular mel bands between 0 Hz and 22050 Hz on the HTK mel scale
  (``2595 log10(1 + f / 700)``), each band a triangle drawn on the mel axis (Essentia's
  ``weighting="warping"``) over the FFT bins with ``f_lo <= f < f_hi``, its weights summing
  to 1 (``normalize="unit_sum"``);
- compression ``log10(1 + 10000 x)``, then division by 9.457798957824707 (the maximum over
  the paper's training spectrograms, the package's ``spec_norm="original"``).

Frames lie wholly inside the window (no padding at the window's edges), as the frames of a
long recording do away from its start.

Network
-------
Four blocks of (3x3 conv, batch norm, ReLU) x 2 with 64, 128, 256, 512 channels; 2x2 max
pooling after the first three blocks. The input is ``(batch, frames, 96)``; the output feature
map ``(batch, 512, frames / 8, 12)`` is averaged over frequency and pooled over time:

- ``"mean"`` (default): mean over time; steadier over long windows of stationary machine
  sound, and better than ``"max"`` on the dev clips at 2 s and 5 s windows
  (``scripts/evaluate_aisfx.py``);
- ``"max"``: maximum over time, as the original model (trained on 100-frame = 2.3 s blocks);
- ``"mean+max"``: both concatenated (1024-d).

The network is convolutional, so a window of any length from :data:`MIN_SAMPLES` samples on
is embedded in one pass; the per-dataset classifier heads of the checkpoint are not used.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from detectors.errors import EmbedderError, WeightsUnavailableError

SAMPLE_RATE = 44100
N_FFT = 2048
HOP_LENGTH = 1024
N_MELS = 96
F_MIN, F_MAX = 0.0, 22050.0
LOG_SCALE = 1e4
SPEC_MAX = 9.457798957824707
CHANNELS = (64, 128, 256, 512)
MIN_FRAMES = 8  # three 2x2 poolings need 8 frames to leave one
MIN_SAMPLES = N_FFT + (MIN_FRAMES - 1) * HOP_LENGTH
CHECKPOINT_NAME = "checkpoint.pth"
POOLINGS = ("mean", "max", "mean+max")
# Where ``humwatch models fetch aisfx`` puts the weights by default (HUMWATCH_MODELS_DIR's
# default, plus "aisfx"); the service passes its configured directory explicitly.
DEFAULT_MODEL_DIR = Path("~/.cache/humwatch/models") / "aisfx"
_PREFIX = "embedding_net."


# -- front end -------------------------------------------------------------------------------


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """HTK mel scale."""
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(
    sample_rate: int = SAMPLE_RATE,
    n_fft: int = N_FFT,
    n_mels: int = N_MELS,
    f_min: float = F_MIN,
    f_max: float = F_MAX,
) -> np.ndarray:
    """Triangular HTK-mel filters drawn on the mel axis, unit sum: ``(n_mels, n_fft // 2 + 1)``."""
    n_bins = n_fft // 2 + 1
    bin_hz = (sample_rate / 2.0) / (n_bins - 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))
    freqs = np.arange(n_bins) * bin_hz
    mels = hz_to_mel(freqs)
    edge_mels = hz_to_mel(edges)
    bank = np.zeros((n_mels, n_bins), dtype=np.float64)
    for band in range(n_mels):
        lo, mid, hi = edges[band : band + 3]
        m_lo, m_mid, m_hi = edge_mels[band : band + 3]
        rising = (freqs >= lo) & (freqs < mid)
        falling = (freqs >= mid) & (freqs < hi)
        bank[band, rising] = (mels[rising] - m_lo) / (m_mid - m_lo)
        bank[band, falling] = (m_hi - mels[falling]) / (m_hi - m_mid)
        total = bank[band].sum()
        if total > 0:
            bank[band] /= total
    return bank.astype(np.float32)


class AisfxFrontEnd(nn.Module):
    """Waveforms ``(b, samples)`` at 44.1 kHz -> normalised log-mel ``(b, frames, 96)``."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("window", torch.hann_window(N_FFT, periodic=False))
        self.register_buffer("filterbank", torch.from_numpy(mel_filterbank()))

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(
            waves,
            n_fft=N_FFT,
            hop_length=HOP_LENGTH,
            window=self.window,
            center=False,
            return_complex=True,
        )  # (b, bins, frames)
        power = spec.real.square() + spec.imag.square()
        mel = torch.matmul(self.filterbank, power)  # (b, mels, frames)
        return (torch.log10(1.0 + LOG_SCALE * mel) / SPEC_MAX).transpose(1, 2)


# -- network ---------------------------------------------------------------------------------


class ConvBlock(nn.Module):
    """(3x3 conv without bias, batch norm, ReLU) twice, then optional 2x2 max pooling."""

    def __init__(self, in_channels: int, out_channels: int, pool: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.max_pool2d(x, 2) if self.pool else x


class AisfxCNN(nn.Module):
    """The aiSFX embedding network; parameter names match the checkpoint's ``embedding_net``.

    ``forward``: log-mel ``(b, frames, 96)`` -> feature map averaged over frequency,
    ``(b, 512, frames // 8)``.
    """

    def __init__(self) -> None:
        super().__init__()
        ins = (1,) + CHANNELS[:-1]
        for i, (cin, cout) in enumerate(zip(ins, CHANNELS, strict=True), start=1):
            setattr(self, f"conv_block{i}", ConvBlock(cin, cout, pool=i < len(CHANNELS)))

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        # Channels-last runs the convolutions about 1.9x faster on CPU (oneDNN), same values.
        x = logmel.unsqueeze(1).contiguous(memory_format=torch.channels_last)
        for i in range(1, len(CHANNELS) + 1):
            x = getattr(self, f"conv_block{i}")(x)
        return x.mean(dim=3)


def _numpy_scalar_globals() -> list[Any]:
    """The numpy pickles a checkpoint saved with numpy scalars needs, and nothing else."""
    core = getattr(np, "_core", None) or np.core
    scalar = core.multiarray.scalar
    return [
        (scalar, "numpy.core.multiarray.scalar"),
        (scalar, "numpy._core.multiarray.scalar"),
        np.dtype,
        *{type(np.dtype(t)) for t in (np.int64, np.int32, np.float64, np.float32)},
    ]


def load_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The ``embedding_net`` weights of an aiSFX checkpoint, keys without the prefix.

    The package's ``checkpoint.pth`` is ``torch.save((state_dict, datasets))`` of its
    training model (embedding network + one classifier head per dataset); ``datasets`` holds
    numpy integers. It is read with ``weights_only=True`` (no code runs) and an allow-list of
    only those numpy types. A bare ``state_dict`` of :class:`AisfxCNN` loads too.
    """
    path = Path(path)
    try:
        with torch.serialization.safe_globals(_numpy_scalar_globals()):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors of any kind mean "not this checkpoint"
        raise EmbedderError(f"cannot read aisfx checkpoint {path}: {exc}") from exc
    state = obj[0] if isinstance(obj, tuple | list) and obj else obj
    if not isinstance(state, dict):
        raise EmbedderError(f"{path} is not an aisfx checkpoint (no state dict inside)")
    if any(key.startswith(_PREFIX) for key in state):
        state = {k[len(_PREFIX) :]: v for k, v in state.items() if k.startswith(_PREFIX)}
    return state


def build_network(state: dict[str, torch.Tensor], source: str | Path) -> AisfxCNN:
    """An :class:`AisfxCNN` holding ``state``; ``EmbedderError`` when it does not fit."""
    net = AisfxCNN()
    try:
        result = net.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise EmbedderError(f"{source} does not hold aisfx weights: {exc}") from exc
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        problems = missing[:3] + list(result.unexpected_keys[:3])
        raise EmbedderError(
            f"{source} does not hold aisfx weights ({len(missing)} missing, "
            f"{len(result.unexpected_keys)} unexpected, e.g. {', '.join(problems)})"
        )
    return net.eval()


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise EmbedderError(f"unknown device {device!r}; use 'auto', 'cpu' or 'cuda[:N]'") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise EmbedderError(f"device {device!r} asked for, but CUDA is not available; use 'auto'")
    return resolved


# -- embedder --------------------------------------------------------------------------------


class AisfxEmbedder:
    """aiSFX CNN embeddings of windows at 44.1 kHz.

    Parameters
    ----------
    model_dir : str or None
        Directory holding ``checkpoint.pth`` (``humwatch models fetch aisfx`` writes
        ``<models dir>/aisfx``); None means :data:`DEFAULT_MODEL_DIR`. Where the weights lie
        is not part of ``spec``; which weights they are is (``checkpoint_sha256``).
    pooling : "mean", "max" or "mean+max"
        Pooling over time of the frequency-averaged feature map (module docstring).
    checkpoint_sha256 : str or None
        Refuse a checkpoint with another sha256 (a baseline's spec pins its weights this way);
        None accepts any checkpoint of the right architecture.
    metric : "euclidean" or "cosine"
        Distance the vectors are meant for; z-scored euclidean (the service's default)
        measured better than cosine on MIMII fan and in the tail (``scripts/evaluate_aisfx.py``).
    batch_size : int
        Windows per forward pass (bounds memory; does not change the vectors).
    device : str
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...

    Attributes
    ----------
    sample_rate : int, 44100
    dim : int, 512 (1024 for ``"mean+max"``)
    min_samples : int, shortest window (8 frames, 0.21 s)
    """

    name = "aisfx"
    sample_rate = SAMPLE_RATE
    min_samples = MIN_SAMPLES

    def __init__(
        self,
        model_dir: str | None = None,
        pooling: str = "mean",
        checkpoint_sha256: str | None = None,
        metric: str = "euclidean",
        batch_size: int = 16,
        device: str = "auto",
    ) -> None:
        if pooling not in POOLINGS:
            raise EmbedderError(f"pooling must be one of {', '.join(POOLINGS)}, not {pooling!r}")
        if metric not in ("cosine", "euclidean"):
            raise EmbedderError(f"metric must be 'cosine' or 'euclidean', not {metric!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise EmbedderError(f"batch_size must be a positive integer, not {batch_size!r}")
        self.model_dir = (
            Path(model_dir).expanduser() if model_dir else DEFAULT_MODEL_DIR.expanduser()
        )
        self.pooling = pooling
        self.metric = metric
        self.batch_size = batch_size
        self.device = _resolve_device(device)
        self.dim = CHANNELS[-1] * (2 if pooling == "mean+max" else 1)

        checkpoint = self.model_dir / CHECKPOINT_NAME
        if not checkpoint.is_file():
            raise WeightsUnavailableError(
                f"no aisfx weights at {checkpoint}: run `humwatch models fetch aisfx` "
                "(HUMWATCH_MODELS_DIR or --dir says where they go)"
            )
        self.checkpoint_sha256 = file_sha256(checkpoint)
        if checkpoint_sha256 is not None and checkpoint_sha256 != self.checkpoint_sha256:
            raise EmbedderError(
                f"aisfx weights at {checkpoint} have sha256 {self.checkpoint_sha256[:12]}..., "
                f"not the {checkpoint_sha256[:12]}... this embedder spec was built with; "
                "fetch those weights again or rebuild the baseline"
            )
        net = build_network(load_checkpoint(checkpoint), checkpoint)
        self._front = AisfxFrontEnd().to(self.device)
        self._net = net.to(self.device, memory_format=torch.channels_last)

    @property
    def spec(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pooling": self.pooling,
            "checkpoint_sha256": self.checkpoint_sha256,
            "metric": self.metric,
        }

    def __repr__(self) -> str:
        return (
            f"AisfxEmbedder(model_dir={str(self.model_dir)!r}, pooling={self.pooling!r}, "
            f"dim={self.dim}, device={str(self.device)!r})"
        )

    def log_mel(self, windows: np.ndarray) -> np.ndarray:
        """``(n, window_samples)`` -> the network's input ``(n, frames, 96)`` float32."""
        x = torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32)).to(self.device)
        with torch.inference_mode():
            return self._front(x).cpu().numpy()

    def embed(self, windows: np.ndarray) -> np.ndarray:
        """``(n_windows, window_samples)`` float32 -> ``(n_windows, dim)`` float32."""
        windows = np.asarray(windows)
        if windows.ndim != 2:
            raise EmbedderError(f"windows must be (n_windows, window_samples), got {windows.shape}")
        n, length = windows.shape
        if length < MIN_SAMPLES:
            raise EmbedderError(
                f"windows of {length} samples ({length / SAMPLE_RATE:.3f} s) are shorter than "
                f"the {MIN_SAMPLES} samples ({MIN_SAMPLES / SAMPLE_RATE:.3f} s at 44.1 kHz) the "
                "aisfx network needs; use longer windows"
            )
        out = np.empty((n, self.dim), dtype=np.float32)
        if n == 0:
            return out
        windows = np.ascontiguousarray(windows, dtype=np.float32)
        if not np.isfinite(windows).all():
            raise EmbedderError("windows contain NaN or infinity")
        with torch.inference_mode():
            for start in range(0, n, self.batch_size):
                batch = torch.from_numpy(windows[start : start + self.batch_size])
                features = self._net(self._front(batch.to(self.device)))  # (b, 512, t)
                out[start : start + len(batch)] = self._pool(features).cpu().numpy()
        return out

    def _pool(self, features: torch.Tensor) -> torch.Tensor:
        if self.pooling == "max":
            return features.amax(dim=2)
        if self.pooling == "mean":
            return features.mean(dim=2)
        return torch.cat([features.mean(dim=2), features.amax(dim=2)], dim=1)

"""Embedder specs a client may send, with bounds checked before anything is built.

Every parameter has limits in the schema (and so in the OpenAPI); what a single field cannot
say is checked next, still before any allocation: the spectrogram working memory of one
batch of log-mel windows (``check_logmel_budget``), and which pretrained models exist
(``resolve_hf_model``: only directories inside ``HUMWATCH_MODELS_DIR``, chosen by name, or hub
ids when ``HUMWATCH_ALLOW_MODEL_DOWNLOADS`` is on; every other value gets one identical
answer, so the endpoint cannot be used to probe the file system).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, model_validator

from service.errors import InvalidInputError

LOGMEL_DEFAULT_BATCH = 256  # LogMelEmbedder's batch size (not part of its stored spec)
LOGMEL_BATCH_BUDGET_BYTES = 2 * 1024**3  # spectrogram working memory of one batch
MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
HUB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$"
PoolingStat = Annotated[
    str,
    Field(
        pattern=r"^(mean|std|max|min|dstd|p(100|[0-9]{1,2}))$",
        description="mean, std, max, min, dstd, or pNN (a percentile, 0-100)",
    ),
]


class LogMelSpec(BaseModel):
    """Log-mel statistics (the default embedder)."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["logmel"]
    sample_rate: int = Field(16000, ge=8000, le=96000, description="Hz the windows are cut at")
    n_fft: int = Field(1024, ge=64, le=8192, description="STFT size (samples)")
    hop_length: int = Field(256, ge=16, le=8192, description="STFT hop (samples), <= n_fft")
    n_mels: int = Field(128, ge=1, le=256, description="mel bands, <= n_fft / 2 + 1")
    f_min: float = Field(0.0, ge=0, le=48000, description="lowest mel band edge (Hz)")
    f_max: float | None = Field(
        None, gt=0, le=48000, description="highest band edge (Hz), <= sample_rate / 2"
    )
    pooling: list[PoolingStat] = Field(["mean", "std"], min_length=1, max_length=8)
    metric: Literal["euclidean", "cosine"] = "euclidean"
    batch_size: int = Field(LOGMEL_DEFAULT_BATCH, ge=1, le=LOGMEL_DEFAULT_BATCH)
    framing: Literal["window", "recording"] = Field(
        "window", description="a spectrogram per window, or one per recording (faster)"
    )
    band_smoothing: int = Field(
        1, ge=1, le=15, description="average log-mel over this many adjacent bands (1: none)"
    )

    @model_validator(mode="after")
    def _consistent(self) -> LogMelSpec:
        if self.hop_length > self.n_fft:
            raise ValueError(f"hop_length ({self.hop_length}) must not exceed n_fft ({self.n_fft})")
        if self.n_mels > self.n_fft // 2 + 1:
            raise ValueError(
                f"n_mels ({self.n_mels}) exceeds the {self.n_fft // 2 + 1} frequency bins of "
                f"n_fft={self.n_fft}; lower n_mels or raise n_fft"
            )
        nyquist = self.sample_rate / 2
        top = nyquist if self.f_max is None else self.f_max
        if top > nyquist:
            raise ValueError(f"f_max ({top:g} Hz) exceeds half the sample rate ({nyquist:g} Hz)")
        if self.f_min >= top:
            raise ValueError(f"f_min ({self.f_min:g} Hz) must be below f_max ({top:g} Hz)")
        if len(set(self.pooling)) != len(self.pooling):
            raise ValueError("pooling lists a statistic twice")
        return self


class HFSpec(BaseModel):
    """A pretrained transformers model, chosen by name from the service's models directory."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["hf"]
    model: str = Field(
        min_length=1,
        max_length=200,
        description="a model offered by the service (a folder name in HUMWATCH_MODELS_DIR), "
        "or a hub id (org/name) when the admin allows downloads",
    )
    pooling: Literal["mean", "max", "mean+std", "cls", "projection"] | None = None
    layer: int = Field(-1, ge=-64, le=64, description="hidden state to pool; -1 is the output")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    revision: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,99}$")
    batch_size: int = Field(16, ge=1, le=64, description="windows per forward pass")
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:[0-9]{1,2})?)$")


class AisfxSpec(BaseModel):
    """The aiSFX CNN; its weights come from ``<HUMWATCH_MODELS_DIR>/aisfx`` only."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["aisfx"]
    pooling: Literal["mean", "max", "mean+max"] = "mean"
    checkpoint_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    metric: Literal["euclidean", "cosine"] = "euclidean"
    batch_size: int = Field(16, ge=1, le=64, description="windows per forward pass")
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:[0-9]{1,2})?)$")


EMBEDDER_NAMES = ("logmel", "hf", "aisfx")


def _known_embedder(value: Any) -> Any:
    """A bare name becomes ``{"name": name}``; an unknown name gets a clear message."""
    if isinstance(value, str):
        value = {"name": value}
    if isinstance(value, dict) and value.get("name") not in EMBEDDER_NAMES:
        raise ValueError(
            f"unknown embedder {value.get('name')!r}; choose one of {', '.join(EMBEDDER_NAMES)}"
        )
    if isinstance(value, dict) and value.get("name") == "aisfx" and "model_dir" in value:
        raise ValueError(
            "the aisfx embedder loads its weights from the server's models directory "
            "(HUMWATCH_MODELS_DIR); leave model_dir out of the embedder spec"
        )
    return value


EmbedderSpec = Annotated[
    LogMelSpec | HFSpec | AisfxSpec, Discriminator("name"), BeforeValidator(_known_embedder)
]
"""``{"name": "logmel" | "hf" | "aisfx", ...}`` (a bare name is accepted)."""


def logmel_batch_bytes(spec: dict[str, Any], window_samples: int) -> int:
    """Estimated peak bytes of one log-mel batch: input copy, complex STFT, power, mel, log."""
    n_fft = int(spec.get("n_fft", 1024))
    hop = int(spec.get("hop_length", 256))
    n_mels = int(spec.get("n_mels", 128))
    batch = max(int(spec.get("batch_size", LOGMEL_DEFAULT_BATCH)), LOGMEL_DEFAULT_BATCH)
    frames = window_samples // hop + 1
    bins = n_fft // 2 + 1
    per_window = 4 * window_samples + frames * bins * (8 + 4) + frames * n_mels * 4 * 2
    return batch * per_window


def logmel_recording_bytes(spec: dict[str, Any], recording_samples: int) -> int:
    """Estimated peak bytes of one recording's spectrogram (``framing="recording"``)."""
    hop = int(spec.get("hop_length", 256))
    bins = int(spec.get("n_fft", 1024)) // 2 + 1
    n_mels = int(spec.get("n_mels", 128))
    frames = recording_samples // hop + 1
    return 4 * recording_samples + frames * bins * (8 + 4) + frames * n_mels * 4 * 2


def check_logmel_budget(
    spec: dict[str, Any], window_seconds: float, max_recording_seconds: float
) -> None:
    """Refuse a log-mel spec whose batches (or, framed per recording, whose spectrogram of
    the longest recording accepted) would need more than the memory budget."""
    rate = int(spec.get("sample_rate", 16000))
    shape = f"n_fft={spec.get('n_fft', 1024)} and hop_length={spec.get('hop_length', 256)}"
    needed = logmel_batch_bytes(spec, round(window_seconds * rate))
    if needed > LOGMEL_BATCH_BUDGET_BYTES:
        raise InvalidInputError(
            f"windows of {window_seconds:g} s at {rate} Hz with {shape} need about "
            f"{needed / 1024**3:.1f} GiB per batch of {LOGMEL_DEFAULT_BATCH} windows, above the "
            f"service's {LOGMEL_BATCH_BUDGET_BYTES / 1024**3:.0f} GiB: use shorter windows, a "
            "larger hop_length or a lower sample_rate"
        )
    if spec.get("framing") == "recording":
        needed = logmel_recording_bytes(spec, round(max_recording_seconds * rate))
        if needed > LOGMEL_BATCH_BUDGET_BYTES:
            raise InvalidInputError(
                f"a spectrogram of a {max_recording_seconds:g} s recording "
                f"(HUMWATCH_MAX_RECORDING_SECONDS) at {rate} Hz with {shape} needs about "
                f"{needed / 1024**3:.1f} GiB, above the service's "
                f"{LOGMEL_BATCH_BUDGET_BYTES / 1024**3:.0f} GiB: use framing 'window', a larger "
                "hop_length or a lower sample_rate"
            )


def available_models(models_dir: str | None) -> list[str]:
    """Names of the model folders (holding a config.json) in the models directory."""
    if not models_dir or not os.path.isdir(models_dir):
        return []
    root = Path(models_dir)
    return sorted(
        p.name
        for p in root.iterdir()
        if p.is_dir() and not p.name.startswith(".") and (p / "config.json").is_file()
    )


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except (ValueError, OSError):
        return False
    return True


def resolve_hf_model(model: str, models_dir: str | None, allow_downloads: bool) -> str:
    """A requested ``model`` -> what HFEmbedder loads (a directory, or a hub id).

    Raises one ``InvalidInputError`` with the same text for every value that is not allowed
    (whether or not such a path exists on the server).
    """
    if models_dir and re.match(MODEL_NAME_PATTERN, model):
        candidate = Path(models_dir) / model
        if (
            _inside(candidate, Path(models_dir))
            and candidate.is_dir()
            and (candidate / "config.json").is_file()
        ):
            return str(candidate)
    if allow_downloads and re.match(HUB_ID_PATTERN, model) and ".." not in model:
        return model
    offered = available_models(models_dir)
    choices = ", ".join(offered) if offered else "none (HUMWATCH_MODELS_DIR holds no model)"
    hub = " or a hub id (org/name)" if allow_downloads else ""
    raise InvalidInputError(
        "embedder.model is not a model this service offers; choose one of the models in "
        f"HUMWATCH_MODELS_DIR by name{hub}: {choices}"
    )


def build_params(
    spec: dict[str, Any], models_dir: str | None, allow_downloads: bool
) -> dict[str, Any]:
    """What ``build_embedder`` gets for a stored or accepted spec (hf names -> directories)."""
    params = dict(spec)
    if params.get("name") == "hf":
        model = str(params.get("model", ""))
        if (
            models_dir
            and re.match(MODEL_NAME_PATTERN, model)
            and (Path(models_dir) / model).is_dir()
        ):
            params["model"] = str(Path(models_dir) / model)
        params["local_files_only"] = not allow_downloads
    return params

"""Service settings: one ``Settings`` class read from the environment (prefix ``HUMWATCH_``).

The defaults a new machine gets (embedder, window, channel, baseline parameters) come from one
place: ``MACHINE_PRESET``, the evaluated default preset of ``detectors.presets`` (change that
one line to serve another preset). A machine copies them when it is created, so later changes
do not alter machines (and baselines) that already exist.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from detectors.presets import DEFAULT_PRESET

# -- detection defaults for new machines (one place; see the module docstring) -------------
MACHINE_PRESET = DEFAULT_PRESET
DEFAULT_EMBEDDER: dict[str, Any] = dict(MACHINE_PRESET.embedder)
DEFAULT_WINDOW_SECONDS: float = MACHINE_PRESET.window_seconds
DEFAULT_HOP_SECONDS: float = MACHINE_PRESET.hop_seconds
# "mix" averages the microphone channels. On MIMII fan id_00 (8 mics) mixing scores as well
# as channel 0 or better (clip AUC 0.87 vs 0.86, and 0.82 vs 0.79 with 1 s windows, enrolled
# on the first 10 normal clips) and it does not depend on which microphone faces the fault.
DEFAULT_CHANNEL = str(MACHINE_PRESET.channel)
DEFAULT_BASELINE: dict[str, Any] = {
    "k": MACHINE_PRESET.k,
    "metric": MACHINE_PRESET.metric,
    "standardize": MACHINE_PRESET.standardize,
    "whiten": MACHINE_PRESET.whiten,
    # Set for a machine from its own embedder (detectors.presets.stat_block) when not None.
    "block_space": MACHINE_PRESET.block_space,
    "false_alarm_rate": 0.01,
}

MIN_API_KEY_LENGTH = 16


def _split_csv(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return [str(v).strip() for v in value if str(v).strip()]


class Settings(BaseSettings):
    """Every setting of the service; environment variables ``HUMWATCH_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="HUMWATCH_", extra="ignore")

    database_url: str = "sqlite:///./humwatch.db"
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)

    # Security: comma-separated API keys (read and write) and read-only keys; one admin token
    # for /v1/admin; an optional bearer token for /metrics. With any key or token configured,
    # every /v1 request needs one (see service/security.py).
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    read_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    admin_token: str | None = None
    metrics_token: str | None = None

    # Pretrained (hf) embedders: only model folders inside models_dir (below), chosen by
    # name; hub ids only when downloads are allowed.
    allow_model_downloads: bool = False
    embedder_cache_size: int = Field(8, ge=1, le=64)

    # Ingest limits.
    max_upload_bytes: int = Field(64 * 1024 * 1024, gt=0)
    max_recording_seconds: float = Field(600.0, gt=0)
    # Batch uploads (POST /v1/recordings/batch): recordings per request, and the request's
    # bytes (parsed as they arrive, each part held once: about what one 64 MiB single upload
    # holds at its peak). 64 x 10 s of 16 kHz mono WAV is 20 MiB; 8-channel WAV needs more.
    max_batch_items: int = Field(64, ge=1, le=1000)
    max_batch_bytes: int = Field(128 * 1024 * 1024, gt=0)

    # Enrollment and baselines.
    # Two minutes: with fewer recordings the standardised kNN threshold is too tight (on the
    # demo plant 60 s let 7-19% of healthy windows cross it, 120 s a few percent).
    min_enrollment_seconds: float = Field(120.0, gt=0)
    # Enrollment also needs this many runs (stretches of continuous operation, see
    # service/services/runs.py): a baseline of one run calls the next run of the same
    # healthy machine abnormal, and with 4 runs one unusual run widens the threshold's tail
    # so far that faults at severity 0.3 were caught in 29 % of windows (8 runs: 72 %;
    # docs/evaluation.md).
    min_enrollment_runs: int = Field(8, ge=1, le=1000)
    run_gap_seconds: float = Field(300.0, gt=0)
    # After baseline v1, normal runs of this many days (audio time) join new versions.
    learning_days: float = Field(7.0, ge=0, le=3650)
    default_k: int = Field(DEFAULT_BASELINE["k"], ge=1)
    default_false_alarm_rate: float = Field(DEFAULT_BASELINE["false_alarm_rate"], gt=0, lt=1)
    max_baseline_vectors: int = Field(50_000, ge=2)

    # Retention: window audio and embeddings are kept for outliers, labelled windows and
    # baseline members; for other windows only this many days (0 = prune at next pass).
    audio_retention_days: float = Field(7.0, ge=0)
    embedding_retention_days: float = Field(30.0, ge=0)
    prune_interval_seconds: float = Field(3600.0, ge=0)  # 0 disables the periodic pass

    # Events: how often the passage of time is applied (stale microphones); 0 disables.
    event_sweep_interval_seconds: float = Field(60.0, ge=0)

    # Pretrained weights (`humwatch models fetch NAME` puts them here; nothing downloads at
    # run time). The aisfx embedder loads <models_dir>/aisfx/checkpoint.pth; an hf embedder
    # names one of its subfolders (a save_pretrained folder).
    models_dir: Path = Path("~/.cache/humwatch/models")

    # Start-up work kept off the request path.
    warm_up_index: bool = True

    # CPU: uploads decode and embed in worker threads, at most ``ingest_workers`` at once
    # (default: one per CPU), each with ``torch_threads`` intra-op threads (0: torch's own
    # default). One thread per upload measured 2.3x faster than torch's default on a busy
    # 2-core machine (docs/benchmarks.md, "Service ingest").
    ingest_workers: int | None = Field(None, ge=1)
    # Single uploads that wait for their write transaction together share one
    # (service.services.ingest_group); false: one transaction per upload.
    group_commit: bool = True
    torch_threads: int = Field(1, ge=0)

    # Edge and queue (humwatch agent / bridge / worker; service.stream).
    mqtt_url: str = "mqtt://127.0.0.1:1883"
    nats_url: str = "nats://127.0.0.1:4222"

    @field_validator("api_keys", "read_keys", mode="before")
    @classmethod
    def _parse_keys(cls, value: Any) -> list[str]:
        return _split_csv(value)

    @field_validator("api_keys", "read_keys")
    @classmethod
    def _check_keys(cls, keys: list[str]) -> list[str]:
        for key in keys:
            if len(key) < MIN_API_KEY_LENGTH:
                raise ValueError(
                    f"every API key needs at least {MIN_API_KEY_LENGTH} characters (generate "
                    "one: python -c 'import secrets; print(secrets.token_urlsafe())')"
                )
        return keys

    @field_validator("admin_token", "metrics_token")
    @classmethod
    def _check_admin_token(cls, token: str | None, info) -> str | None:
        if token is not None and token.strip() == "":
            return None
        if token is not None and len(token) < MIN_API_KEY_LENGTH:
            what = "the admin token" if info.field_name == "admin_token" else "the metrics token"
            raise ValueError(f"{what} needs at least {MIN_API_KEY_LENGTH} characters")
        return token

    @property
    def auth_enabled(self) -> bool:
        """True when /v1 needs a key (any API key, read key or the admin token is set)."""
        return bool(self.api_keys) or bool(self.read_keys) or self.admin_token is not None

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def check_bind(self, host: str) -> str | None:
        """Refuse unsafe binds; returns a warning to print, raises ``UnsafeSettingsError``."""
        if self.auth_enabled:
            if not self.api_keys:
                return "no HUMWATCH_API_KEYS set: only the admin token can write"
            if self.admin_token is None:
                return "no HUMWATCH_ADMIN_TOKEN set: admin endpoints are disabled"
            return None
        if not is_loopback(host):
            raise UnsafeSettingsError(
                f"refusing to serve on {host} without API keys: set HUMWATCH_API_KEYS "
                "(and HUMWATCH_ADMIN_TOKEN) or bind to 127.0.0.1"
            )
        return (
            "no API keys configured (HUMWATCH_API_KEYS): every endpoint is open, "
            f"so the service listens on loopback ({host}) only"
        )


class UnsafeSettingsError(RuntimeError):
    """Settings that must not be used to serve (e.g. a public bind without keys)."""


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings (read once from the environment)."""
    return Settings()

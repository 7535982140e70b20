"""Per-process state shared by requests: settings, database, embedders, baseline cache."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detectors.baseline import KNNBaseline
from detectors.embedders import Embedder, build_embedder
from detectors.errors import EmbedderError
from service.config import DEFAULT_EMBEDDER, Settings
from service.db import Database


def spec_key(spec: dict[str, Any]) -> str:
    return json.dumps(spec, sort_keys=True, separators=(",", ":"))


# Embedders whose weights come from the models directory (HUMWATCH_MODELS_DIR), never from
# a path in the spec: a client must not point the server at its own files.
MODELS_DIR_EMBEDDERS = ("aisfx",)


class EmbedderRegistry:
    """Embedders built once per spec and shared by every request of the process.

    ``models_dir`` is where embedders with pretrained weights find them
    (``<models_dir>/<name>``, filled by ``humwatch models fetch NAME``).
    """

    def __init__(self, models_dir: str | Path | None = None) -> None:
        self._embedders: dict[str, Embedder] = {}
        self._lock = threading.Lock()
        self.models_dir = models_dir

    def _with_weights(self, spec: dict[str, Any]) -> dict[str, Any]:
        name = spec.get("name")
        if name not in MODELS_DIR_EMBEDDERS or self.models_dir is None:
            return spec
        if "model_dir" in spec:
            raise EmbedderError(
                f"the {name} embedder loads its weights from the server's models directory "
                f"(HUMWATCH_MODELS_DIR); leave model_dir out of the embedder spec"
            )
        return {**spec, "model_dir": str(Path(self.models_dir).expanduser() / name)}

    def get(self, spec: dict[str, Any] | str | None) -> Embedder:
        if spec is None or isinstance(spec, str):
            spec = {"name": spec} if isinstance(spec, str) else dict(DEFAULT_EMBEDDER)
        key = spec_key(spec)
        embedder = self._embedders.get(key)
        if embedder is None:
            with self._lock:
                embedder = self._embedders.get(key)
                if embedder is None:
                    embedder = build_embedder(self._with_weights(spec))
                    self._embedders[key] = embedder
                    # A resolved spec names the same embedder: cache it under both keys.
                    self._embedders.setdefault(spec_key(embedder.spec), embedder)
        return embedder

    def __len__(self) -> int:
        return len(self._embedders)


class BaselineCache:
    """Fitted baselines by machine, one version each; reloaded when the active version moves.

    Scoring reads the machine's ``active_baseline_version`` from the database on every
    ingest, so an activation by another process is picked up on the next request; an
    activation in this process also replaces the entry at once (``put``).
    """

    def __init__(self) -> None:
        self._entries: dict[str, tuple[int, KNNBaseline]] = {}
        self._lock = threading.Lock()

    def get(self, machine_id: str, version: int) -> KNNBaseline | None:
        entry = self._entries.get(machine_id)
        if entry is not None and entry[0] == version:
            return entry[1]
        return None

    def put(self, machine_id: str, version: int, model: KNNBaseline) -> None:
        with self._lock:
            self._entries[machine_id] = (version, model)

    def discard(self, machine_id: str) -> None:
        with self._lock:
            self._entries.pop(machine_id, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


@dataclass
class Runtime:
    """What the app shares across requests; stored on ``app.state.runtime``."""

    settings: Settings
    db: Database
    embedders: EmbedderRegistry = field(default_factory=EmbedderRegistry)
    baselines: BaselineCache = field(default_factory=BaselineCache)
    index_warm: threading.Event = field(default_factory=threading.Event)
    ingest_limiter: Any = None  # anyio.CapacityLimiter, made in the app's lifespan
    embedder_ready: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        if self.embedders.models_dir is None:
            self.embedders.models_dir = self.settings.models_dir

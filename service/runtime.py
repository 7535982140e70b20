"""Per-process state shared by requests: settings, database, embedders, baseline cache."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

from detectors.baseline import KNNBaseline
from detectors.embedders import Embedder, build_embedder
from service.config import DEFAULT_EMBEDDER, Settings
from service.db import Database


def spec_key(spec: dict[str, Any]) -> str:
    return json.dumps(spec, sort_keys=True, separators=(",", ":"))


class EmbedderRegistry:
    """Embedders built once per spec and shared by every request of the process."""

    def __init__(self) -> None:
        self._embedders: dict[str, Embedder] = {}
        self._lock = threading.Lock()

    def get(self, spec: dict[str, Any] | str | None) -> Embedder:
        if spec is None or isinstance(spec, str):
            spec = {"name": spec} if isinstance(spec, str) else dict(DEFAULT_EMBEDDER)
        key = spec_key(spec)
        embedder = self._embedders.get(key)
        if embedder is None:
            with self._lock:
                embedder = self._embedders.get(key)
                if embedder is None:
                    embedder = build_embedder(spec)
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

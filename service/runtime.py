"""Per-process state shared by requests: settings, database, embedders, baseline cache."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from datetime import datetime
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


@dataclass(frozen=True)
class MachineSnapshot:
    """What ingest needs to know about a machine before its write transaction opens."""

    id: str
    state: str
    active_baseline_version: int | None
    window_seconds: float
    hop_seconds: float
    channel: str
    embedder: dict[str, Any]
    archived_at: datetime | None

    @classmethod
    def of(cls, machine: Any) -> MachineSnapshot:
        return cls(
            id=machine.id,
            state=machine.state,
            active_baseline_version=machine.active_baseline_version,
            window_seconds=float(machine.window_seconds),
            hop_seconds=float(machine.hop_seconds),
            channel=str(machine.channel),
            embedder=json.loads(json.dumps(machine.embedder)),
            archived_at=machine.archived_at,
        )

    @property
    def channel_spec(self) -> int | str:
        return "mix" if self.channel == "mix" else int(self.channel)

    def same_detection(self, machine: Any) -> bool:
        """True when ``machine`` cuts and embeds audio as this snapshot does."""
        return (
            float(machine.window_seconds) == self.window_seconds
            and float(machine.hop_seconds) == self.hop_seconds
            and str(machine.channel) == self.channel
            and spec_key(machine.embedder) == spec_key(self.embedder)
        )


class MachineCache:
    """Machine snapshots by id, so an upload prepares its audio without a database read.

    Only a hint: the write transaction re-reads the machine row (locked) and redoes what a
    stale snapshot got wrong (rescoring after an activation, re-embedding after a change of
    the detection settings, refusing a paused or archived machine). Every ingest refreshes
    the entry from the row it locked, so another process's change is seen from the next
    upload on.
    """

    def __init__(self) -> None:
        self._entries: dict[str, MachineSnapshot] = {}
        self._lock = threading.Lock()

    def get(self, machine_id: str) -> MachineSnapshot | None:
        return self._entries.get(machine_id)

    def put(self, snapshot: MachineSnapshot) -> MachineSnapshot:
        with self._lock:
            self._entries[snapshot.id] = snapshot
        return snapshot

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
    machines: MachineCache = field(default_factory=MachineCache)
    index_warm: threading.Event = field(default_factory=threading.Event)
    ingest_limiter: Any = None  # anyio.CapacityLimiter, made in the app's lifespan
    embedder_ready: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        if self.embedders.models_dir is None:
            self.embedders.models_dir = self.settings.models_dir

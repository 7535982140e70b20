"""Per-process state shared by requests: settings, database, embedders, baseline cache."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from detectors.baseline import KNNBaseline
from detectors.conditions import ConditionalBaseline
from detectors.embedders import Embedder, build_embedder
from detectors.errors import EmbedderError
from service.config import DEFAULT_EMBEDDER, Settings
from service.db import Database
from service.embedder_specs import build_params


def spec_key(spec: dict[str, Any]) -> str:
    return json.dumps(spec, sort_keys=True, separators=(",", ":"))


# Embedders whose weights come from the models directory (HUMWATCH_MODELS_DIR), never from
# a path in the spec: a client must not point the server at its own files.
MODELS_DIR_EMBEDDERS = ("aisfx",)


class EmbedderRegistry:
    """Embedders built once per spec and shared by every request of the process.

    At most ``capacity`` embedders stay cached (least recently used goes first; the default
    one is kept); one is built at a time, so concurrent first uses share one build. Specs a
    client sends are built with ``build_checked``: they enter the cache only once their
    check passed, so rejected specs never occupy memory.
    """

    def __init__(
        self,
        capacity: int = 8,
        models_dir: str | Path | None = None,
        allow_downloads: bool = False,
    ) -> None:
        self.capacity = max(1, capacity)
        self.models_dir = None if models_dir is None else str(Path(models_dir).expanduser())
        self.allow_downloads = allow_downloads
        self._embedders: OrderedDict[str, Embedder] = OrderedDict()
        self._lock = threading.Lock()
        self._build_lock = threading.Lock()
        self._pinned = spec_key(dict(DEFAULT_EMBEDDER))

    @staticmethod
    def _normalise(spec: dict[str, Any] | str | None) -> dict[str, Any]:
        if spec is None or isinstance(spec, str):
            return {"name": spec} if isinstance(spec, str) else dict(DEFAULT_EMBEDDER)
        return dict(spec)

    def _build(self, spec: dict[str, Any]) -> Embedder:
        params = build_params(spec, self.models_dir, self.allow_downloads)
        return build_embedder(self._with_weights(params))

    def _lookup(self, key: str) -> Embedder | None:
        with self._lock:
            embedder = self._embedders.get(key)
            if embedder is not None:
                self._embedders.move_to_end(key)
            return embedder

    def _store(self, spec: dict[str, Any], embedder: Embedder) -> None:
        with self._lock:
            for key in {spec_key(spec), spec_key(embedder.spec)}:
                self._embedders[key] = embedder
                self._embedders.move_to_end(key)
            pinned = self._embedders.get(self._pinned)
            while len({id(e) for e in self._embedders.values()}) > self.capacity:
                oldest = next(e for e in self._embedders.values() if e is not pinned)
                for key in [k for k, e in self._embedders.items() if e is oldest]:
                    del self._embedders[key]

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
        """The embedder of a stored (already accepted) spec, built on first use."""
        spec = self._normalise(spec)
        embedder = self._lookup(spec_key(spec))
        if embedder is None:
            with self._build_lock:  # one build at a time: concurrent uploads share it
                embedder = self._lookup(spec_key(spec))
                if embedder is None:
                    embedder = self._build(spec)
                    self._store(spec, embedder)
        return embedder

    def build_checked(
        self, spec: dict[str, Any] | str | None, check: Callable[[Embedder], None]
    ) -> Embedder:
        """Build (or reuse) an embedder and cache it only when ``check`` accepts it."""
        spec = self._normalise(spec)
        with self._build_lock:
            embedder = self._lookup(spec_key(spec))
            if embedder is not None:
                check(embedder)
                return embedder
            embedder = self._build(spec)
            check(embedder)
            self._store(spec, embedder)
        return embedder

    def __len__(self) -> int:
        """Embedders held (one may be cached under several equivalent specs)."""
        return len({id(e) for e in self._embedders.values()})

    def __contains__(self, spec: object) -> bool:
        return isinstance(spec, dict) and spec_key(spec) in self._embedders


class BaselineCache:
    """Fitted baselines by machine, one version each; reloaded when the active version moves.

    Scoring reads the machine's ``active_baseline_version`` from the database on every
    ingest, so an activation by another process is picked up on the next request; an
    activation in this process also replaces the entry at once (``put``).
    """

    def __init__(self) -> None:
        self._entries: dict[str, tuple[int, KNNBaseline | ConditionalBaseline]] = {}
        self._lock = threading.Lock()

    def get(self, machine_id: str, version: int) -> KNNBaseline | ConditionalBaseline | None:
        entry = self._entries.get(machine_id)
        if entry is not None and entry[0] == version:
            return entry[1]
        return None

    def put(self, machine_id: str, version: int, model: KNNBaseline | ConditionalBaseline) -> None:
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
    learning_until: datetime | None
    run_gap_seconds: float

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
            learning_until=machine.learning_until,
            run_gap_seconds=float(machine.run_gap_seconds),
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
    embedders: EmbedderRegistry = None  # type: ignore[assignment]  # made from the settings
    baselines: BaselineCache = field(default_factory=BaselineCache)
    machines: MachineCache = field(default_factory=MachineCache)
    index_warm: threading.Event = field(default_factory=threading.Event)
    ingest_limiter: Any = None  # anyio.CapacityLimiter, made in the app's lifespan
    store_limiter: Any = None  # the same, for uploads waiting for their transaction
    embedder_ready: threading.Event = field(default_factory=threading.Event)
    ingest_group: Any = None  # service.services.ingest_group.GroupCommit, made here

    def __post_init__(self) -> None:
        if self.embedders is None:
            self.embedders = EmbedderRegistry(
                capacity=self.settings.embedder_cache_size,
                models_dir=self.settings.models_dir,
                allow_downloads=self.settings.allow_model_downloads,
            )
        if self.ingest_group is None:
            from service.services.ingest_group import GroupCommit  # it imports this module

            self.ingest_group = GroupCommit(self)

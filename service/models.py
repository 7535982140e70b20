"""SQLAlchemy 2.0 models: machines, recordings, windows (with their audio), baselines, events
and machine health.

Every timestamp is UTC (``UTCDateTime`` returns aware datetimes on SQLite too). Large
payloads (window embeddings, baseline artifacts) are deferred so listings never load them.
Audio is stored once per recording (mono, at the model's rate, FLAC) in its own table, and a
window's audio is cut from it: overlapping windows would otherwise store the same samples
several times (5x with 5 s windows every 1 s); pruning is a plain ``DELETE``.

The Alembic migrations in ``migrations/`` must match these models: a test autogenerates a
migration against an upgraded database and expects no difference.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    event,
    text,
)
from sqlalchemy import false as sa_false
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

MACHINE_STATES = ("enrolling", "monitoring", "paused")
WINDOW_LABELS = ("normal", "anomaly")
EVENT_KINDS = ("anomaly", "sensor")
EVENT_STATES = ("open", "resolved", "closed")
EVENT_SEVERITIES = ("warning", "alarm")
SENSOR_CAUSES = ("silence", "clipping", "dropout", "stale")
DISPOSITIONS = ("confirmed_fault", "false_alarm", "planned_work", "sensor_issue")
HEALTH_STATES = ("enrolling", "learning", "ok", "warning", "alarm", "sensor_fault")

# Integer primary keys that autoincrement on SQLite (INTEGER PRIMARY KEY) and are 64-bit on
# Postgres.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """``TIMESTAMP WITH TIME ZONE``; binds aware datetimes as UTC, always returns aware UTC.

    SQLite has no time zone type: values are stored as naive UTC text, which also keeps
    their text order equal to time order (keyset pagination relies on it).
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: humwatch stores aware UTC times only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON()}


class Machine(Base):
    """A monitored machine and the detection settings its windows are made with."""

    __tablename__ = "machines"
    __table_args__ = (
        CheckConstraint(f"state IN {MACHINE_STATES!r}", name="state"),
        CheckConstraint("window_seconds > 0 AND hop_seconds > 0", name="window_positive"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    site: Mapped[str | None] = mapped_column(String(200), index=True)
    area: Mapped[str | None] = mapped_column(String(200))
    machine_type: Mapped[str | None] = mapped_column(String(100))
    labels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    window_seconds: Mapped[float] = mapped_column(Float)
    hop_seconds: Mapped[float] = mapped_column(Float)
    channel: Mapped[str] = mapped_column(String(8), default="mix")
    embedder: Mapped[dict[str, Any]] = mapped_column()
    k: Mapped[int] = mapped_column(Integer)
    metric: Mapped[str] = mapped_column(String(16))
    standardize: Mapped[bool] = mapped_column(Boolean)
    # Principal-component whitening of new baselines (share of variance kept); NULL: off.
    whiten: Mapped[float | None] = mapped_column(Float)
    # Whitened baselines also score in the space scaled per statistic block of this many
    # dimensions (KNNBaseline(block_space)); NULL: the per-dimension space only (machines
    # registered before it).
    block_space: Mapped[int | None] = mapped_column(Integer)
    false_alarm_rate: Mapped[float] = mapped_column(Float)
    # Operating-condition attribute of the recordings (e.g. "pattern") that new baselines are
    # fitted within (one per value, detectors.conditions); NULL: one pooled baseline.
    baseline_condition: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default="enrolling")
    enrolled_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    # Enrollment ends when the material holds this much audio from this many runs
    # (service/services/runs.py); machines registered before runs existed keep 1.
    enrollment_seconds: Mapped[float] = mapped_column(Float, server_default="120")
    enrollment_runs: Mapped[int] = mapped_column(Integer, server_default="1")
    run_gap_seconds: Mapped[float] = mapped_column(Float, server_default="300")
    # After baseline v1, normal runs before ``learning_until`` (audio time) join new versions.
    learning_days: Mapped[float] = mapped_column(Float, server_default="0")
    learning_until: Mapped[datetime | None] = mapped_column()
    active_baseline_version: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    archived_at: Mapped[datetime | None] = mapped_column()

    @property
    def channel_spec(self) -> int | str:
        return "mix" if self.channel == "mix" else int(self.channel)


class Recording(Base):
    """One ingested piece of audio; unique per machine, content hash and start time."""

    __tablename__ = "recordings"
    __table_args__ = (UniqueConstraint("machine_id", "sha256", "started_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    machine_id: Mapped[str] = mapped_column(ForeignKey("machines.id"), index=True)
    started_at: Mapped[datetime] = mapped_column()
    ended_at: Mapped[datetime] = mapped_column()
    duration_seconds: Mapped[float] = mapped_column(Float)
    sample_rate: Mapped[int] = mapped_column(Integer)
    channels: Mapped[int] = mapped_column(Integer)
    format: Mapped[str] = mapped_column(String(8))
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    conditions: Mapped[dict[str, Any]] = mapped_column(default=dict)
    is_enrollment: Mapped[bool] = mapped_column(Boolean, default=False)
    # Admitted to the baseline material during the learning period (a normal run).
    learned: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sa_false())
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Window(Base):
    """One scored (or, while enrolling, unscored) window of a recording."""

    __tablename__ = "windows"
    __table_args__ = (
        CheckConstraint(f"label IS NULL OR label IN {WINDOW_LABELS!r}", name="label"),
        Index("ix_windows_machine_start", "machine_id", "start_at", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    machine_id: Mapped[str] = mapped_column(ForeignKey("machines.id"))
    recording_id: Mapped[int] = mapped_column(
        ForeignKey("recordings.id", ondelete="CASCADE"), index=True
    )
    start_at: Mapped[datetime] = mapped_column()
    end_at: Mapped[datetime] = mapped_column()
    score: Mapped[float | None] = mapped_column(Float)
    ratio: Mapped[float | None] = mapped_column(Float)
    is_outlier: Mapped[bool] = mapped_column(Boolean, default=False)
    baseline_version: Mapped[int | None] = mapped_column(Integer)
    label: Mapped[str | None] = mapped_column(String(16))
    label_note: Mapped[str | None] = mapped_column(Text)
    # Indexed: fleet search refreshes the labels changed since its last look.
    labelled_at: Mapped[datetime | None] = mapped_column(index=True)
    # float32 bytes, length 4 * dim; NULL once pruned.
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)


class RecordingAudio(Base):
    """A recording's audio as the model heard it (mono, model rate), FLAC-encoded."""

    __tablename__ = "recording_audio"

    recording_id: Mapped[int] = mapped_column(
        ForeignKey("recordings.id", ondelete="CASCADE"), primary_key=True
    )
    sample_rate: Mapped[int] = mapped_column(Integer)
    format: Mapped[str] = mapped_column(String(8))
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Baseline(Base):
    """One immutable version of a machine's baseline (the fitted KNNBaseline artifact, or a
    ConditionalBaseline's when the machine fits baselines within an operating condition)."""

    __tablename__ = "baselines"
    __table_args__ = (UniqueConstraint("machine_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    machine_id: Mapped[str] = mapped_column(ForeignKey("machines.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    embedder: Mapped[dict[str, Any]] = mapped_column()
    k: Mapped[int] = mapped_column(Integer)
    metric: Mapped[str] = mapped_column(String(16))
    standardize: Mapped[bool] = mapped_column(Boolean)
    false_alarm_rate: Mapped[float] = mapped_column(Float)
    threshold: Mapped[float] = mapped_column(Float)
    threshold_method: Mapped[dict[str, Any]] = mapped_column()
    n_vectors: Mapped[int] = mapped_column(Integer)
    n_recordings: Mapped[int] = mapped_column(Integer)
    source_from: Mapped[datetime | None] = mapped_column()
    source_to: Mapped[datetime | None] = mapped_column()
    source_filter: Mapped[dict[str, Any]] = mapped_column(default=dict)
    note: Mapped[str | None] = mapped_column(Text)
    artifact: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class BaselineWindow(Base):
    """Membership: which windows' embeddings a baseline version was fitted on."""

    __tablename__ = "baseline_windows"

    baseline_id: Mapped[int] = mapped_column(
        ForeignKey("baselines.id", ondelete="CASCADE"), primary_key=True
    )
    window_id: Mapped[int] = mapped_column(
        ForeignKey("windows.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class Event(Base):
    """An anomaly or sensor event of one machine: opened, escalated, resolved, acknowledged and
    closed; ``history`` is its timeline, oldest first (``{"at", "action", ...}`` dicts)."""

    __tablename__ = "events"
    __table_args__ = (
        CheckConstraint(f"kind IN {EVENT_KINDS!r}", name="kind"),
        CheckConstraint(f"state IN {EVENT_STATES!r}", name="state"),
        CheckConstraint(f"severity IN {EVENT_SEVERITIES!r}", name="severity"),
        CheckConstraint(f"cause IS NULL OR cause IN {SENSOR_CAUSES!r}", name="cause"),
        CheckConstraint(
            f"disposition IS NULL OR disposition IN {DISPOSITIONS!r}", name="disposition"
        ),
        Index("ix_events_machine_opened", "machine_id", "opened_at", "id"),
        Index("ix_events_opened", "opened_at", "id"),
        # At most one open event of each kind per machine, whatever the code above does.
        Index(
            "uq_events_one_open",
            "machine_id",
            "kind",
            unique=True,
            sqlite_where=text("state = 'open'"),
            postgresql_where=text("state = 'open'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    machine_id: Mapped[str] = mapped_column(ForeignKey("machines.id"))
    kind: Mapped[str] = mapped_column(String(16))
    cause: Mapped[str | None] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16), default="open")
    severity: Mapped[str] = mapped_column(String(16))
    opened_at: Mapped[datetime] = mapped_column()
    escalated_at: Mapped[datetime | None] = mapped_column()
    resolved_at: Mapped[datetime | None] = mapped_column()
    peak_ratio: Mapped[float | None] = mapped_column(Float)
    mean_ratio: Mapped[float | None] = mapped_column(Float)
    n_windows: Mapped[int] = mapped_column(Integer, default=0)
    n_scored: Mapped[int] = mapped_column(Integer, default=0)
    history: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    acknowledged_by: Mapped[str | None] = mapped_column(String(200))
    acknowledged_at: Mapped[datetime | None] = mapped_column()
    acknowledge_comment: Mapped[str | None] = mapped_column(Text)
    closed_by: Mapped[str | None] = mapped_column(String(200))
    closed_at: Mapped[datetime | None] = mapped_column()
    disposition: Mapped[str | None] = mapped_column(String(32))
    close_reason: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class EventWindow(Base):
    """Membership: the windows an event is made of."""

    __tablename__ = "event_windows"

    event_id: Mapped[int] = mapped_column(
        ForeignKey("events.id", ondelete="CASCADE"), primary_key=True
    )
    window_id: Mapped[int] = mapped_column(
        ForeignKey("windows.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class MachineHealth(Base):
    """A machine's health and the event logic's state (``detectors.events.EventTracker``).

    ``params`` holds the machine's overrides of ``EventParams`` (empty: the defaults);
    ``anomaly_event_id`` / ``sensor_event_id`` are the events the tracker holds (open, or
    resolved but still reopenable).
    """

    __tablename__ = "machine_health"
    __table_args__ = (CheckConstraint(f"health IN {HEALTH_STATES!r}", name="health"),)

    machine_id: Mapped[str] = mapped_column(ForeignKey("machines.id"), primary_key=True)
    health: Mapped[str] = mapped_column(String(16), default="ok")
    health_since: Mapped[datetime] = mapped_column(default=utcnow)
    anomaly_event_id: Mapped[int | None] = mapped_column(
        ForeignKey("events.id", ondelete="SET NULL")
    )
    sensor_event_id: Mapped[int | None] = mapped_column(
        ForeignKey("events.id", ondelete="SET NULL")
    )
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    tracker: Mapped[dict[str, Any]] = mapped_column(default=dict)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


@event.listens_for(Baseline, "before_update")
def _baselines_are_immutable(_mapper, _connection, target: Baseline) -> None:
    raise RuntimeError(
        f"baseline {target.machine_id} v{target.version} is immutable: build a new version"
    )

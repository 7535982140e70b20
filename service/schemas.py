"""Request and response bodies of the API (pydantic)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from service.embedder_specs import EmbedderSpec
from service.limits import QueryTime, check_no_nul
from service.services.conditions import CONDITION_KEY

SLUG_PATTERN = r"^[a-z0-9](?:[a-z0-9_-]{0,62}[a-z0-9])?$"
MachineState = Literal["enrolling", "monitoring", "paused"]
Label = Literal["normal", "anomaly"]


def as_utc(value: datetime) -> datetime:
    """Naive datetimes are read as UTC; aware ones are converted to UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


UTCDatetime = Annotated[datetime, AfterValidator(as_utc)]
LabelKey = Annotated[str, Field(min_length=1, max_length=64)]
LabelValue = Annotated[str, Field(max_length=200)]
Channel = Literal["mix"] | Annotated[int, Field(ge=0, le=255)]


# Baseline and enrollment policy fields, shared by MachineCreate and MachineUpdate.
Whiten = Annotated[
    float | None,
    Field(
        ge=0,
        lt=1,
        description="principal-component whitening of new baselines: share of the z-scored "
        "variance kept (e.g. 0.99); 0 switches it off",
    ),
]
BaselineCondition = Annotated[
    str | None,
    Field(
        pattern=CONDITION_KEY.pattern,
        description="name of a recording operating-condition attribute (e.g. 'pattern', "
        "'domain'): new baselines are fitted within each of its values, and every window is "
        "scored by the baseline of its recording's value; null: one pooled baseline",
        examples=["pattern"],
    ),
]
EnrollmentSeconds = Annotated[
    float | None,
    Field(gt=0, le=86_400 * 30, description="audio enrollment needs (default: the service's)"),
]
EnrollmentRuns = Annotated[
    int | None,
    Field(ge=1, le=1000, description="distinct runs enrollment needs (default: the service's)"),
]
RunGapSeconds = Annotated[
    float | None,
    Field(
        gt=0,
        le=86_400 * 30,
        description="a pause longer than this between recordings starts a new run (unless the "
        "client names runs with the operating condition 'run')",
    ),
]
LearningDays = Annotated[
    float | None,
    Field(
        ge=0,
        le=3650,
        description="after baseline v1, normal runs of this many days (audio time) join new "
        "baseline versions automatically; 0: none",
    ),
]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        check_no_nul(data)
        return data


class MachineCreate(_In):
    id: str = Field(
        pattern=SLUG_PATTERN,
        description="slug: lowercase letters, digits, '-' and '_', 1-64 characters",
        examples=["press-07"],
    )
    name: str | None = Field(None, min_length=1, max_length=200)
    site: str | None = Field(None, max_length=200)
    area: str | None = Field(None, max_length=200)
    machine_type: str | None = Field(None, max_length=100)
    labels: dict[LabelKey, LabelValue] = Field(default_factory=dict, max_length=50)
    window_seconds: float | None = Field(None, ge=0.01, le=60)
    hop_seconds: float | None = Field(None, ge=0.01, le=60)
    channel: Channel | None = Field(
        None, description="'mix' averages the channels; an integer picks one (0-based)"
    )
    embedder: EmbedderSpec | None = Field(
        None, description="embedder spec, e.g. {'name': 'logmel'}; default from the service"
    )
    k: int | None = Field(None, ge=1, le=100)
    metric: Literal["euclidean", "cosine"] | None = None
    standardize: bool | None = Field(None, description="z-score dimensions on the baseline")
    whiten: Whiten = None
    two_spaces: bool | None = Field(
        None,
        description="whitened baselines also score in the space scaled per statistic block "
        "(the larger ratio counts; log-mel embedders only); default true for log-mel. Takes "
        "effect from the next baseline version",
    )
    false_alarm_rate: float | None = Field(None, gt=0, le=0.5)
    baseline_condition: BaselineCondition = None
    enrollment_seconds: EnrollmentSeconds = None
    enrollment_runs: EnrollmentRuns = None
    run_gap_seconds: RunGapSeconds = None
    learning_days: LearningDays = None


class MachineUpdate(_In):
    name: str | None = Field(None, min_length=1, max_length=200)
    site: str | None = Field(None, max_length=200)
    area: str | None = Field(None, max_length=200)
    machine_type: str | None = Field(None, max_length=100)
    labels: dict[LabelKey, LabelValue] | None = Field(None, max_length=50)
    state: Literal["monitoring", "paused"] | None = None
    window_seconds: float | None = Field(None, ge=0.01, le=60)
    hop_seconds: float | None = Field(None, ge=0.01, le=60)
    channel: Channel | None = None
    embedder: EmbedderSpec | None = None
    k: int | None = Field(None, ge=1, le=100)
    metric: Literal["euclidean", "cosine"] | None = None
    standardize: bool | None = None
    whiten: Whiten = None
    two_spaces: bool | None = Field(
        None,
        description="whitened baselines also score in the space scaled per statistic block "
        "(the larger ratio counts; log-mel embedders only); default true for log-mel. Takes "
        "effect from the next baseline version",
    )
    false_alarm_rate: float | None = Field(None, gt=0, le=0.5)
    baseline_condition: BaselineCondition = None
    enrollment_seconds: EnrollmentSeconds = None
    enrollment_runs: EnrollmentRuns = None
    run_gap_seconds: RunGapSeconds = None
    learning_days: LearningDays = None


class CoverageOut(BaseModel):
    """What a machine's baseline material (enrollment and learned runs) covers."""

    seconds: float
    recordings: int
    runs: int
    first_at: datetime | None
    last_at: datetime | None
    conditions: dict[str, list[Any]] = Field(
        description="operating conditions seen (up to 10 values each), e.g. {'rpm': [1480]}"
    )


class MachineOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    site: str | None
    area: str | None
    machine_type: str | None
    labels: dict[str, str]
    window_seconds: float
    hop_seconds: float
    channel: int | str = Field(validation_alias="channel_spec")
    embedder: dict[str, Any]
    k: int
    metric: str
    standardize: bool
    whiten: float | None
    block_space: int | None = Field(
        None,
        description="whitened baselines also score in the space scaled per statistic block "
        "of this many dimensions (the mel bands of one statistic); null: per-dimension only",
    )
    false_alarm_rate: float
    baseline_condition: str | None
    state: MachineState
    enrolled_seconds: float
    enrollment_seconds: float
    enrollment_runs: int
    run_gap_seconds: float
    learning_days: float
    learning_until: datetime | None
    coverage: CoverageOut | None = Field(
        None, description="baseline material covered (GET /v1/machines/{id} only)"
    )
    active_baseline_version: int | None
    created_at: datetime
    updated_at: datetime
    archived_at: datetime | None


class RecordingOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    machine_id: str
    started_at: datetime
    ended_at: datetime
    duration_seconds: float
    sample_rate: int
    channels: int
    format: str
    sha256: str
    size_bytes: int
    conditions: dict[str, Any]
    is_enrollment: bool
    created_at: datetime


class WindowOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    start_at: datetime
    end_at: datetime
    score: float | None
    ratio: float | None
    is_outlier: bool


class WindowDetail(WindowOut):
    machine_id: str
    recording_id: int
    baseline_version: int | None
    label: Label | None
    label_note: str | None
    labelled_at: datetime | None
    has_audio: bool


class IngestOut(BaseModel):
    recording: RecordingOut
    windows: list[WindowOut]
    created: bool = Field(description="false when this audio was already stored (idempotent)")
    machine_state: MachineState
    baseline_version: int | None

    @classmethod
    def from_result(cls, result: Any) -> IngestOut:
        """The answer for one ingested upload (``service.services.ingest.IngestResult``)."""
        return cls(
            recording=RecordingOut.model_validate(result.recording),
            windows=[WindowOut.model_validate(w) for w in result.windows],
            created=result.created,
            machine_state=result.machine_state,
            baseline_version=result.baseline_version,
        )


class WindowPage(BaseModel):
    items: list[WindowDetail]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next (older) page")


class FeedbackIn(_In):
    label: Label
    note: str | None = Field(None, max_length=2000)


class BaselineOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    machine_id: str
    version: int
    embedder: dict[str, Any]
    k: int
    metric: str
    standardize: bool
    false_alarm_rate: float
    threshold: float
    threshold_method: dict[str, Any]
    n_vectors: int
    n_recordings: int
    source_from: datetime | None
    source_to: datetime | None
    source_filter: dict[str, Any]
    note: str | None
    created_at: datetime
    active: bool = False


class BaselineBuild(_In):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: QueryTime | None = Field(None, alias="from", description="material from (ISO 8601)")
    to: QueryTime | None = Field(None, description="material up to (ISO 8601, exclusive)")
    k: int | None = Field(None, ge=1, le=100)
    false_alarm_rate: float | None = Field(None, gt=0, le=0.5)
    activate: bool = True
    note: str | None = Field(None, max_length=2000)

    @model_validator(mode="after")
    def _range(self) -> BaselineBuild:
        if self.from_ and self.to and self.from_ >= self.to:
            raise ValueError("'from' must be before 'to'")
        return self


class PruneOut(BaseModel):
    recording_audio_deleted: int
    embeddings_cleared: int


class ErrorOut(BaseModel):
    """The body of every error response."""

    error: str = Field(description="stable machine-readable code, e.g. not_found")
    detail: str = Field(description="what is wrong and what to do about it")


class Health(BaseModel):
    status: str
    checks: dict[str, str] = Field(default_factory=dict)

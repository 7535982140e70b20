"""Response bodies of the review endpoints (spectrograms, neighbours, explanations, search)."""

from __future__ import annotations

from datetime import datetime, time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.schemas import Label, UTCDatetime


class NeighbourOut(BaseModel):
    rank: int = Field(description="1 is the nearest")
    window_id: int
    machine_id: str
    machine_name: str
    distance: float = Field(description="in the baseline's (standardised) space, as scored")
    start_at: datetime
    end_at: datetime
    label: Label | None
    has_audio: bool


class NeighboursOut(BaseModel):
    window_id: int
    machine_id: str
    baseline_version: int = Field(description="the version that scored the window, else active")
    k: int
    metric: str
    score: float | None = Field(description="the window's stored score")
    mean_distance: float = Field(
        description="mean distance to the k neighbours in the baseline's per-dimension space "
        "(= the score of a baseline of one space)"
    )
    threshold: float = Field(
        description="the per-dimension space's calibrated threshold of mean_distance (a "
        "baseline with a second, block-scaled space scores the larger of the two spaces' "
        "ratios to their thresholds)"
    )
    neighbours: list[NeighbourOut]


class BandOut(BaseModel):
    index: int
    low_hz: float
    high_hz: float
    deviation: float = Field(description="RMS of the band's statistics' z-scores")
    z: dict[str, float] = Field(description="z-score of each pooled statistic of the band")


class RegionOut(BaseModel):
    low_hz: float
    high_hz: float
    deviation: float
    z: dict[str, float]
    text: str


class ExplanationOut(BaseModel):
    window_id: int
    machine_id: str
    baseline_version: int
    unit: str = "baseline standard deviations (σ)"
    stats: list[str] = Field(description="pooled statistics per band (embedder pooling)")
    bands: list[BandOut] = Field(description="low to high frequency")
    top: list[RegionOut] = Field(description="most deviant regions first (at most 3)")
    summary: str


class SeriesPoint(BaseModel):
    start: datetime
    n: int
    mean_ratio: float | None
    max_ratio: float | None
    outliers: int


class RatioSeriesOut(BaseModel):
    machine_id: str
    from_: datetime = Field(serialization_alias="from")
    to: datetime
    bucket_seconds: float
    threshold_ratio: float = Field(1.0, description="a ratio above this flags a window")
    points: list[SeriesPoint] = Field(description="buckets that hold windows, oldest first")


class OpenEventOut(BaseModel):
    id: int
    kind: str
    severity: str
    state: str
    opened_at: datetime
    cause: str | None = None


class PlantMachineOut(BaseModel):
    id: str
    name: str
    site: str | None
    area: str | None
    machine_type: str | None
    state: str
    enrolled_seconds: float
    active_baseline_version: int | None
    embedder: str
    last_window_at: datetime | None
    last_ratio: float | None
    last_is_outlier: bool | None
    windows: int = Field(description="windows in the range")
    outliers: int = Field(description="outlier windows in the range")
    trend: list[float | None] = Field(description="max ratio per bucket, oldest first")
    health: str | None = Field(
        None, description="enrolling, learning, ok, warning, alarm or sensor_fault (with events)"
    )
    open_events: list[OpenEventOut] = Field(
        default_factory=list, description="open anomaly and sensor events"
    )


class PlantOut(BaseModel):
    generated_at: datetime
    from_: datetime = Field(serialization_alias="from")
    to: datetime
    bucket_seconds: float
    min_enrollment_seconds: float
    machines: list[PlantMachineOut]


# -- search --------------------------------------------------------------------------------


class SearchFilters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    site: str | None = Field(None, max_length=200)
    area: str | None = Field(None, max_length=200)
    machine_type: str | None = Field(None, max_length=100)
    machine: list[str] | None = Field(None, max_length=500, description="machine ids")
    start: UTCDatetime | None = Field(None, alias="from", description="window start >= (UTC)")
    end: UTCDatetime | None = Field(None, alias="to", description="window start < (UTC)")
    time_from: time | None = Field(None, description="time of day (UTC) from, e.g. 22:00")
    time_to: time | None = Field(
        None, description="time of day (UTC) until; before time_from wraps past midnight"
    )
    label: Literal["normal", "anomaly", "unlabelled", "outlier"] | None = None

    @model_validator(mode="after")
    def _ranges(self) -> SearchFilters:
        if self.start and self.end and self.start >= self.end:
            raise ValueError("'from' must be before 'to'")
        if (self.time_from is None) != (self.time_to is None):
            raise ValueError("give both time_from and time_to, or neither")
        return self


class SearchIn(SearchFilters):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    window_id: int | None = Field(None, ge=1, le=2**63 - 1)
    text: str | None = Field(None, min_length=1, max_length=500)
    limit: int = Field(20, ge=1, le=100)
    offset: int = Field(0, ge=0, le=900)
    exclude_same_recording: bool = Field(
        True, description="leave out windows of the query window's own recording (overlaps)"
    )

    @model_validator(mode="after")
    def _one_query(self) -> SearchIn:
        if (self.window_id is None) == (self.text is None):
            raise ValueError("give exactly one of window_id or text (or upload audio)")
        return self


class SearchHit(BaseModel):
    rank: int
    window_id: int
    machine_id: str
    machine_name: str
    distance: float
    start_at: datetime
    end_at: datetime
    score: float | None
    ratio: float | None
    is_outlier: bool
    label: Label | None
    has_audio: bool


class SearchOut(BaseModel):
    query: dict
    embedder: dict
    metric: str
    searched_windows: int = Field(description="stored windows with embeddings that matched")
    machines: list[str] = Field(description="machines searched (they share the embedder)")
    items: list[SearchHit]
    next_offset: int | None


class SearchCapabilities(BaseModel):
    text_search: bool
    text_reason: str
    embedders: list[dict]
    max_results: int

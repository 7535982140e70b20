"""Review endpoints: spectrogram, nearest baseline windows, band explanation, series, plant.

With keys configured these reads need a key (``Authorization: Bearer``; a read key is
enough): a spectrogram shows what the microphone heard.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from fastapi import APIRouter, Query, Response

from service.api.deps import MachineId, RuntimeDep, WindowId
from service.models import utcnow
from service.schemas import as_utc
from service.schemas_review import ExplanationOut, NeighboursOut, PlantOut, RatioSeriesOut
from service.security import Reader
from service.services import review as review_service

router = APIRouter(tags=["review"], dependencies=[Reader])

_PNG = {
    200: {
        "content": {"image/png": {}},
        "description": "PNG; headers X-Db-Min / X-Db-Max give the colour range used, "
        "X-Low-Hz / X-High-Hz the frequency range (mel scale, low at the bottom)",
    },
    410: {"description": "the window's audio was pruned"},
}


@router.get("/windows/{window_id}/spectrogram.png", response_class=Response, responses=_PNG)
def get_spectrogram(
    window_id: WindowId,
    runtime: RuntimeDep,
    width: int = Query(640, ge=32, le=2048, description="pixels"),
    height: int = Query(256, ge=32, le=1024, description="pixels"),
    db_min: float | None = Query(None, ge=-200, le=100, description="darkest colour (dB)"),
    db_max: float | None = Query(
        None, ge=-200, le=100, description="lightest colour (dB); default: the loudest point"
    ),
) -> Response:
    """The window's log-mel spectrogram as a PNG; pass one dB range to compare windows."""
    with runtime.db.session() as session:
        picture = review_service.spectrogram(
            session, runtime, window_id, width=width, height=height, db_min=db_min, db_max=db_max
        )
    return Response(
        picture.png,
        media_type="image/png",
        headers={
            "X-Db-Min": f"{picture.db_min:.2f}",
            "X-Db-Max": f"{picture.db_max:.2f}",
            "X-Low-Hz": f"{picture.low_hz:.1f}",
            "X-High-Hz": f"{picture.high_hz:.1f}",
            "Cache-Control": "private, max-age=300",
            "Access-Control-Expose-Headers": "X-Db-Min, X-Db-Max, X-Low-Hz, X-High-Hz",
        },
    )


@router.get("/windows/{window_id}/neighbours")
def get_neighbours(
    window_id: WindowId,
    runtime: RuntimeDep,
    k: int | None = Query(
        None, ge=1, le=review_service.MAX_NEIGHBOURS, description="default: the baseline's k"
    ),
    version: int | None = Query(
        None, ge=1, le=2**31 - 1, description="baseline version; default: the one that scored it"
    ),
) -> NeighboursOut:
    """The nearest baseline windows of a window (the kNN neighbours its score came from)."""
    with runtime.db.session() as session:
        return review_service.neighbours(session, runtime, window_id, k, version)


@router.get("/windows/{window_id}/explanation")
def get_explanation(
    window_id: WindowId,
    runtime: RuntimeDep,
    bands: int | None = Query(
        32, ge=1, le=512, description="display bands (groups of mel bands); at most n_mels"
    ),
    version: int | None = Query(None, ge=1, le=2**31 - 1),
) -> ExplanationOut:
    """Which frequency bands deviate from the baseline, per band in Hz and in words."""
    with runtime.db.session() as session:
        return review_service.explanation(session, runtime, window_id, bands, version)


@router.get("/machines/{machine_id}/ratio-series", response_model_by_alias=True)
def get_ratio_series(
    machine_id: MachineId,
    runtime: RuntimeDep,
    start: datetime | None = Query(None, alias="from", description="default: 24 h before 'to'"),
    end: datetime | None = Query(None, alias="to", description="default: now (UTC)"),
    buckets: int = Query(200, ge=1, le=review_service.MAX_BUCKETS),
) -> RatioSeriesOut:
    """A machine's score ratio over time in equal buckets (mean, max, outliers)."""
    end = as_utc(end) if end else utcnow()
    start = as_utc(start) if start else end - timedelta(hours=24)
    with runtime.db.session() as session:
        return review_service.ratio_series(session, machine_id, start, end, buckets)


@router.get("/plant", response_model_by_alias=True)
def get_plant(
    runtime: RuntimeDep,
    hours: float = Query(24.0, gt=0, le=24 * 31, description="trend range, up to now"),
    buckets: int = Query(24, ge=1, le=200),
) -> PlantOut:
    """Every machine with its state, newest audio and a trend of its ratio (one request)."""
    with runtime.db.session() as session:
        return review_service.plant(session, runtime, hours, buckets)

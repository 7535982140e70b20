"""HTTP endpoints (thin: parse, authorise, call a service, shape the response)."""

from fastapi import APIRouter

from service.api import (
    baselines,
    events,
    health,
    machines,
    recordings,
    recordings_batch,
    review,
    search,
    windows,
)
from service.schemas import ErrorOut
from service.security import Reader

_ERRORS = {
    400: "malformed request (e.g. invalid JSON)",
    401: "credentials missing",
    403: "credentials wrong",
    404: "not found",
    409: "conflicts with the current state",
    413: "upload, recording or JSON body (over 1 MiB) too large",
    415: "not an accepted audio type",
    422: "invalid input: bad fields, dates, or audio that cannot be used",
    503: "the database is unreachable right now (retry after Retry-After seconds)",
}
v1 = APIRouter(
    prefix="/v1",
    responses={code: {"model": ErrorOut, "description": text} for code, text in _ERRORS.items()},
    dependencies=[Reader],
)
v1.include_router(machines.router)
v1.include_router(recordings.router)
v1.include_router(recordings_batch.router)
v1.include_router(windows.router)
v1.include_router(baselines.router)
v1.include_router(baselines.admin_router)
v1.include_router(events.router)
v1.include_router(review.router)
v1.include_router(search.router)

__all__ = ["health", "v1"]

"""Search endpoint: "find sounds like this" from a window, a clip, or (CLAP) text."""

from __future__ import annotations

import functools
from datetime import datetime, time

import anyio
from fastapi import APIRouter, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from service.api.deps import RuntimeDep
from service.api.recordings import AUDIO_TYPES, _read_body
from service.errors import InvalidInputError, UnsupportedMediaTypeError
from service.schemas import as_utc
from service.schemas_review import SearchCapabilities, SearchFilters, SearchIn, SearchOut
from service.security import Reader
from service.services import search as search_service

router = APIRouter(tags=["search"], dependencies=[Reader])

MAX_JSON_BYTES = 64 * 1024
_FILTER_DOC = (
    "Filters (JSON fields, or query parameters with an audio upload): site, area, "
    "machine_type, machine (repeatable), from/to (window start, UTC), time_from/time_to "
    "(time of day, UTC; wraps past midnight when time_to < time_from), label (normal, "
    "anomaly, unlabelled, outlier); limit (1-100) and offset (next_offset of the last page)."
)
_OPENAPI = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/SearchIn"}},
            **{
                t: {"schema": {"type": "string", "format": "binary"}}
                for t in ("audio/wav", "audio/flac", "audio/ogg")
            },
        },
    },
}


@router.post("/search", openapi_extra=_OPENAPI, description=_FILTER_DOC)
async def search(
    request: Request,
    runtime: RuntimeDep,
    site: str | None = Query(None, max_length=200, description="audio uploads only"),
    area: str | None = Query(None, max_length=200),
    machine_type: str | None = Query(None, max_length=100),
    machine: list[str] | None = Query(None, max_length=500),
    start: datetime | None = Query(None, alias="from"),
    end: datetime | None = Query(None, alias="to"),
    time_from: time | None = Query(None),
    time_to: time | None = Query(None),
    label: str | None = Query(None, max_length=16),
    limit: int = Query(20, ge=1, le=100),
    offset: int = Query(0, ge=0, le=900),
) -> SearchOut:
    """Nearest stored windows to a window (`{"window_id"}`), a clip (audio body) or text."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media == "application/json":
        raw = await _read_body(request, MAX_JSON_BYTES)
        try:
            body = SearchIn.model_validate_json(raw or b"{}")
        except ValidationError as exc:
            raise RequestValidationError(exc.errors(include_url=False)) from exc
        filters = SearchFilters.model_validate(
            body.model_dump(by_alias=True, include=set(SearchFilters.model_fields))
        )
        return await anyio.to_thread.run_sync(
            functools.partial(_json_search, runtime, body, filters)
        )
    if media in AUDIO_TYPES:
        try:
            filters = SearchFilters.model_validate(
                {
                    "site": site,
                    "area": area,
                    "machine_type": machine_type,
                    "machine": machine,
                    "from": as_utc(start) if start else None,
                    "to": as_utc(end) if end else None,
                    "time_from": time_from,
                    "time_to": time_to,
                    "label": label,
                }
            )
        except ValidationError as exc:
            raise RequestValidationError(exc.errors(include_url=False)) from exc
        limit_bytes = runtime.settings.max_upload_bytes
        body = await _read_body(request, limit_bytes)
        if not body:
            raise InvalidInputError("the audio body is empty; send a WAV, FLAC or OGG clip")
        return await anyio.to_thread.run_sync(
            functools.partial(_audio_search, runtime, body, filters, limit, offset),
            limiter=runtime.ingest_limiter,
        )
    raise UnsupportedMediaTypeError(
        f'content type {media or "(none)"!r}: send application/json ({{"window_id": ...}} or '
        '{"text": ...}) or a clip as audio/wav, audio/flac or audio/ogg'
    )


def _json_search(runtime, body: SearchIn, filters: SearchFilters) -> SearchOut:
    with runtime.db.session() as session:
        if body.text is not None:
            return search_service.search_by_text(
                session, runtime, body.text, filters, limit=body.limit, offset=body.offset
            )
        return search_service.search_by_window(
            session,
            runtime,
            body.window_id,
            filters,
            limit=body.limit,
            offset=body.offset,
            exclude_same_recording=body.exclude_same_recording,
        )


def _audio_search(runtime, body: bytes, filters, limit: int, offset: int) -> SearchOut:
    with runtime.db.session() as session:
        return search_service.search_by_audio(
            session, runtime, body, filters, limit=limit, offset=offset
        )


@router.get("/search/capabilities")
def search_capabilities(runtime: RuntimeDep) -> SearchCapabilities:
    """What search can do here: embedder groups, and whether text queries are available."""
    with runtime.db.session() as session:
        return search_service.capabilities(session, runtime)

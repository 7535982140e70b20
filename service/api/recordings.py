"""Audio ingest endpoint."""

from __future__ import annotations

import functools
from typing import Any

import anyio
from fastapi import APIRouter, Query, Request, Response, status

from service.api.deps import MachineId, RuntimeDep
from service.errors import PayloadTooLargeError, UnsupportedMediaTypeError
from service.limits import RecordingTime
from service.schemas import IngestOut
from service.security import Writer
from service.services import conditions as conditions_service
from service.services import ingest as ingest_service
from service.services.conditions import MAX_CONDITIONS

router = APIRouter(prefix="/machines", tags=["audio"])

AUDIO_TYPES = {
    "audio/wav": "WAV",
    "audio/x-wav": "WAV",
    "audio/wave": "WAV",
    "audio/vnd.wave": "WAV",
    "audio/flac": "FLAC",
    "audio/x-flac": "FLAC",
    "audio/ogg": "OGG",
}
RESERVED_QUERY = {"started_at"}

_BODY_SCHEMA = {"type": "string", "format": "binary"}
_OPENAPI = {
    "requestBody": {
        "required": True,
        "description": "WAV, FLAC or OGG audio at 8,000-192,000 Hz with 1-64 channels, at least "
        "one window long; at most HUMWATCH_MAX_UPLOAD_BYTES (default 64 MiB) and "
        "HUMWATCH_MAX_RECORDING_SECONDS (default 600 s), else 413",
        "content": {t: {"schema": _BODY_SCHEMA} for t in ("audio/wav", "audio/flac", "audio/ogg")},
    },
    "parameters": [
        {
            "name": "conditions",
            "in": "query",
            "required": False,
            "style": "form",
            "explode": True,
            "schema": {"type": "object", "additionalProperties": {"type": "string"}},
            "description": "any other query parameter is an operating-condition attribute "
            "stored with the recording (e.g. rpm=1480&load=0.8; numbers are stored as numbers): "
            f"at most {MAX_CONDITIONS}, names of 1-64 letters, digits, '_', '.', '-' starting "
            "with a letter, values up to 200 characters",
        }
    ],
}


def _conditions(request: Request) -> dict[str, Any]:
    return conditions_service.validate(
        (key, value)
        for key, value in request.query_params.multi_items()
        if key not in RESERVED_QUERY
    )


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(
            f"upload of {int(declared)} bytes exceeds the limit of {limit} bytes "
            "(HUMWATCH_MAX_UPLOAD_BYTES)"
        )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(
                f"upload exceeds the limit of {limit} bytes (HUMWATCH_MAX_UPLOAD_BYTES)"
            )
        chunks.append(chunk)
    return b"".join(chunks)


@router.post(
    "/{machine_id}/recordings",
    status_code=status.HTTP_201_CREATED,
    dependencies=[Writer],
    openapi_extra=_OPENAPI,
    responses={200: {"model": IngestOut, "description": "this audio was already stored"}},
)
async def ingest_recording(
    machine_id: MachineId,
    request: Request,
    response: Response,
    runtime: RuntimeDep,
    started_at: RecordingTime | None = Query(
        None,
        description="ISO 8601 time of the first sample (UTC when no offset is given), from "
        "2000-01-01 to one day after the server's clock; a bare number is refused",
    ),
) -> IngestOut:
    """Store and score one recording; re-sending the same audio and start returns it (200)."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in AUDIO_TYPES:
        raise UnsupportedMediaTypeError(
            f"content type {media or '(none)'!r} is not audio this service reads; send "
            "audio/wav, audio/flac or audio/ogg"
        )
    conditions = _conditions(request)
    body = await _read_body(request, runtime.settings.max_upload_bytes)
    upload = await anyio.to_thread.run_sync(
        functools.partial(
            ingest_service.prepare_upload, runtime, machine_id, body, started_at, conditions
        ),
        limiter=runtime.ingest_limiter,
    )
    # Waiting for a shared transaction uses no CPU: it holds no ingest slot. A transaction of
    # its own may fit a baseline: it keeps one (service.services.ingest_group).
    group = runtime.ingest_group
    limiter = runtime.store_limiter if group.shares(upload) else runtime.ingest_limiter
    result = await anyio.to_thread.run_sync(group.store, upload, limiter=limiter)
    if not result.created:
        response.status_code = status.HTTP_200_OK
    return IngestOut.from_result(result)

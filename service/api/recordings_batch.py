"""Batch audio upload: many recordings, of one machine or several, in one request.

``POST /v1/recordings/batch`` takes ``multipart/form-data`` (what ``curl -F`` and every HTTP
client's file upload send): one JSON part named ``manifest``, ``{"items": [{machine_id,
started_at, conditions, file}, ...]}``, and one part per audio file, named by the items'
``file``. The items go through ``service.services.ingest_batch.ingest_many``: the single
upload's decoding, validation, limits and idempotency (machine + content + start time),
several uploads per write transaction. The answer lists every item's outcome in manifest
order, with the status and body the single upload would have given it; one bad item fails
alone.

Whole-request errors write nothing: a body that is not multipart (415) or not well formed
(400), a manifest that is not JSON (400) or not a list of items, a part named by no item or
an item naming no part (422), more than ``HUMWATCH_MAX_BATCH_ITEMS`` items or a body over
``HUMWATCH_MAX_BATCH_BYTES`` (413). A database outage that stored none of the items is a
503 with Retry-After. A batch of more than ``ingest_batch.MAX_BATCH_AUDIO_SECONDS`` of audio
is written in several transactions: when the database goes away between them, the answer
is 200 with the items already committed (201) and 503 for the others, to send again.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from service import metrics
from service.api.deps import RuntimeDep
from service.api.multipart import Part, TooManyPartsError, boundary_of, read_parts
from service.api.recordings import AUDIO_TYPES
from service.config import Settings
from service.db import is_database_outage
from service.errors import (
    DATABASE_UNAVAILABLE_BODY,
    RETRY_AFTER_SECONDS,
    PayloadTooLargeError,
    ServiceError,
    UnsupportedMediaTypeError,
    format_validation,
    problem_of,
)
from service.limits import MAX_JSON_BODY_BYTES
from service.schemas import ErrorOut, IngestOut
from service.schemas_batch import BatchItemIn, BatchItemOut, BatchOut
from service.security import Writer
from service.services import conditions as conditions_service
from service.services.conditions import MAX_CONDITIONS
from service.services.ingest import IngestResult
from service.services.ingest_batch import Item, ingest_many

log = logging.getLogger("humwatch.ingest")

router = APIRouter(prefix="/recordings", tags=["audio"])

MANIFEST = "manifest"
# curl -F and most clients label .wav/.flac/.ogg files application/octet-stream: the audio
# is recognised from its bytes, as the single upload does.
PART_TYPES = set(AUDIO_TYPES) | {"application/octet-stream"}


class BatchValidationError(ServiceError):
    status_code = 422
    code = "validation_error"


class MalformedManifestError(ServiceError):
    status_code = 400
    code = "malformed_json"


_ITEM_SCHEMA = {
    "type": "object",
    "required": ["machine_id", "started_at", "file"],
    "additionalProperties": False,
    "properties": {
        "machine_id": {"type": "string", "minLength": 1, "maxLength": 64},
        "started_at": {
            "type": "string",
            "format": "date-time",
            "description": "ISO 8601 time of the first sample, 2000-01-01 to one day after "
            "the server's clock; required in a batch",
        },
        "conditions": {
            "type": "object",
            "maxProperties": MAX_CONDITIONS,
            "additionalProperties": {"type": ["string", "number", "boolean"]},
            "description": 'operating-condition attributes, e.g. {"rpm": 1480}',
        },
        "file": {
            "type": "string",
            "minLength": 1,
            "maxLength": 200,
            "description": "name of the part holding this item's audio",
        },
    },
}
_DESCRIPTION = (
    'multipart/form-data: a part `manifest` (JSON, `{"items": [{"machine_id", '
    '"started_at", "conditions", "file"}]}`) and one part per audio file (WAV, FLAC or OGG, '
    "the single upload's rules), named by the items' `file`; e.g. `curl -F manifest=@m.json "
    "-F a=@a.flac -F b=@b.flac`. At most HUMWATCH_MAX_BATCH_ITEMS (default 64) items and "
    "HUMWATCH_MAX_BATCH_BYTES (default 128 MiB) per request, each part within "
    "HUMWATCH_MAX_UPLOAD_BYTES and HUMWATCH_MAX_RECORDING_SECONDS, else 413"
)
_OPENAPI = {
    "requestBody": {
        "required": True,
        "description": _DESCRIPTION,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [MANIFEST],
                    "properties": {
                        MANIFEST: {
                            "type": "object",
                            "required": ["items"],
                            "additionalProperties": False,
                            "properties": {
                                "items": {"type": "array", "minItems": 1, "items": _ITEM_SCHEMA}
                            },
                        },
                    },
                    "additionalProperties": {"type": "string", "format": "binary"},
                },
                "encoding": {MANIFEST: {"contentType": "application/json"}},
                "example": {
                    MANIFEST: {
                        "items": [
                            {
                                "machine_id": "fan-01",
                                "started_at": "2026-01-05T08:00:00Z",
                                "conditions": {"rpm": 1480},
                                "file": "a",
                            }
                        ]
                    },
                    "a": "RIFF....WAVEfmt ",
                },
            }
        },
    },
}


@dataclass
class _Entry:
    """One manifest item: what the answer names it by, and its upload or its refusal."""

    index: int
    file: str
    machine_id: str | None
    item: Item | None = None
    error: Exception | None = None


async def _limited(request: Request, limit: int) -> AsyncIterator[bytes]:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(
            f"batch of {int(declared)} bytes exceeds the limit of {limit} bytes "
            "(HUMWATCH_MAX_BATCH_BYTES); send fewer recordings per request"
        )
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(
                f"batch exceeds the limit of {limit} bytes (HUMWATCH_MAX_BATCH_BYTES); send "
                "fewer recordings per request"
            )
        yield chunk


async def _read_parts(request: Request, settings: Settings) -> dict[str, Part]:
    header = request.headers.get("content-type", "")
    media = header.split(";")[0].strip().lower()
    if media != "multipart/form-data":
        raise UnsupportedMediaTypeError(
            f"content type {media or '(none)'!r}: a batch is multipart/form-data, a part "
            "'manifest' (JSON) and one part per audio file (curl -F manifest=@m.json "
            "-F a=@a.flac ...); one recording alone goes to POST /v1/machines/{id}/recordings"
        )
    boundary = boundary_of(header)

    def part_limit(name: str) -> int:
        return MAX_JSON_BODY_BYTES if name == MANIFEST else settings.max_upload_bytes

    try:
        parts = await read_parts(
            _limited(request, settings.max_batch_bytes),
            boundary,
            max_parts=settings.max_batch_items + 1,
            part_limit=part_limit,
        )
    except TooManyPartsError:
        raise PayloadTooLargeError(
            f"a batch holds at most {settings.max_batch_items} recordings "
            "(HUMWATCH_MAX_BATCH_ITEMS) and the manifest; split it into several requests"
        ) from None
    return {p.name: p for p in parts}


def _manifest_items(parts: dict[str, Part], settings: Settings) -> list[Any]:
    manifest = parts.get(MANIFEST)
    if manifest is None:
        raise BatchValidationError(
            f"no part named {MANIFEST!r}: send the JSON manifest "
            '({"items": [{"machine_id", "started_at", "file"}]}) as -F manifest=@m.json'
        )
    if manifest.too_large:
        raise PayloadTooLargeError(
            f"the manifest is {manifest.size} bytes, over the limit of {MAX_JSON_BODY_BYTES} "
            "bytes (1 MiB) for JSON"
        )
    try:
        raw = json.loads(manifest.data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedManifestError(f"the manifest part is not valid JSON ({exc})") from None
    if not isinstance(raw, dict) or set(raw) != {"items"} or not isinstance(raw["items"], list):
        raise BatchValidationError(
            'manifest: give an object with one field, "items": a list of '
            '{"machine_id", "started_at", "conditions", "file"}'
        )
    items = raw["items"]
    if not items:
        raise BatchValidationError("manifest.items is empty: list at least one recording")
    if len(items) > settings.max_batch_items:
        raise PayloadTooLargeError(
            f"the manifest lists {len(items)} recordings; a batch holds at most "
            f"{settings.max_batch_items} (HUMWATCH_MAX_BATCH_ITEMS): split it"
        )
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("file"), str):
            raise BatchValidationError(
                f'manifest.items[{i}]: each item is an object whose "file" names the part '
                "holding its audio"
            )
        if item["file"] == MANIFEST or item["file"] not in parts:
            names = sorted(set(parts) - {MANIFEST})
            listed = ", ".join(repr(n) for n in names[:10]) + (", ..." if len(names) > 10 else "")
            raise BatchValidationError(
                f"manifest.items[{i}].file: no audio part named {item['file']!r} in the "
                f"request (audio parts: {listed or 'none'})"
            )
    unused = set(parts) - {MANIFEST} - {item["file"] for item in items}
    if unused:
        raise BatchValidationError(
            f"part(s) {', '.join(repr(n) for n in sorted(unused))} named by no manifest item: "
            "list each audio part in the manifest (or leave it out)"
        )
    return items


def _entries(parts: dict[str, Part], settings: Settings) -> list[_Entry]:
    """The manifest's items, each made an upload or refused alone (bad fields, bad part)."""
    entries = []
    for i, raw in enumerate(_manifest_items(parts, settings)):
        machine_id = raw.get("machine_id")
        entry = _Entry(i, raw["file"], machine_id if isinstance(machine_id, str) else None)
        entries.append(entry)
        try:
            fields = BatchItemIn.model_validate(raw)
            conditions = conditions_service.validate(fields.conditions.items())
        except ValidationError as exc:
            entry.error = BatchValidationError(format_validation(exc.errors(include_url=False)))
            continue
        except ServiceError as exc:
            entry.error = exc
            continue
        part = parts[fields.file]
        if part.too_large:
            entry.error = PayloadTooLargeError(
                f"part {part.name!r} is {part.size} bytes, over the limit of "
                f"{settings.max_upload_bytes} bytes for one recording "
                "(HUMWATCH_MAX_UPLOAD_BYTES); split it into shorter uploads"
            )
            continue
        if part.content_type is not None and part.content_type not in PART_TYPES:
            entry.error = UnsupportedMediaTypeError(
                f"part {part.name!r} is {part.content_type!r}, not audio this service reads; "
                "send audio/wav, audio/flac, audio/ogg or application/octet-stream"
            )
            continue
        entry.item = Item(fields.machine_id, part.data, fields.started_at, conditions)
    return entries


def _outcome(entry: _Entry, outcome: IngestResult | Exception) -> BatchItemOut:
    out = BatchItemOut(
        index=entry.index,
        file=entry.file,
        machine_id=entry.machine_id,
        status=0,
        result=None,
        error=None,
    )
    if isinstance(outcome, IngestResult):
        out.status = 201 if outcome.created else 200
        out.result = IngestOut.from_result(outcome)
        return out
    if is_database_outage(outcome):
        out.status, out.error = 503, ErrorOut(**DATABASE_UNAVAILABLE_BODY)
        return out
    status, body, _headers = problem_of(outcome)
    if status >= 500:
        log.error("batch item %d (%s) failed: %s", entry.index, entry.file, outcome)
        if status == 500:
            log.exception("unhandled error in a batch item", exc_info=outcome)
    out.status, out.error = status, ErrorOut(**body)
    return out


@router.post(
    "/batch",
    dependencies=[Writer],
    openapi_extra=_OPENAPI,
    description="Answers 200 with each item's outcome (its `status` is what the single "
    "upload would answer: 201 stored, 200 already stored, else an error); 4xx when the "
    "request as a whole is refused (nothing is stored).",
)
async def ingest_recordings_batch(request: Request, runtime: RuntimeDep) -> BatchOut:
    """Store and score several recordings (of one or many machines) in one request."""
    settings = runtime.settings
    try:
        entries = _entries(await _read_parts(request, settings), settings)
    except ServiceError as exc:
        metrics.observe_batch([(exc.status_code, exc.code)])
        raise
    todo = [e for e in entries if e.item is not None]
    results = await anyio.to_thread.run_sync(
        functools.partial(ingest_many, runtime, [e.item for e in todo]),
        limiter=runtime.ingest_limiter,
    )
    outcomes: dict[int, IngestResult | Exception] = {e.index: e.error for e in entries if e.error}
    outcomes.update((e.index, r) for e, r in zip(todo, results, strict=True))
    answer = [_outcome(e, outcomes[e.index]) for e in entries]
    lost = any(is_database_outage(r) for r in results if isinstance(r, Exception))
    if lost and not any(a.status == 201 for a in answer):
        metrics.observe_batch([(503, None)] * len(entries))
        log.error("database unavailable during a batch upload of %d items", len(entries))
        return JSONResponse(  # type: ignore[return-value]
            DATABASE_UNAVAILABLE_BODY,
            status_code=503,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    metrics.observe_batch((a.status, a.error.error if a.error else None) for a in answer)
    body = BatchOut(
        items=answer,
        created=sum(a.status == 201 for a in answer),
        already_stored=sum(a.status == 200 for a in answer),
        failed=sum(a.status >= 400 for a in answer),
    )
    if lost:
        return JSONResponse(  # type: ignore[return-value]
            body.model_dump(mode="json"), headers={"Retry-After": str(RETRY_AFTER_SECONDS)}
        )
    return body

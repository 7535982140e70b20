"""Typed errors and the handlers that turn every failure into one JSON shape.

Every 4xx (and the rare 5xx) body is ``{"error": "<code>", "detail": "<what is wrong>"}``:
the service's own ``ServiceError`` subclasses, the detectors library's errors (422 with its
message), FastAPI's request validation (422; malformed JSON 400) and Starlette's HTTP
errors (unknown route 404, wrong method 405).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

from detectors.errors import ArtifactError, DetectorError, WeightsUnavailableError

log = logging.getLogger("humwatch.errors")


class ServiceError(Exception):
    """Base of the service's errors: an HTTP status, a stable code and a message."""

    status_code = 400
    code = "bad_request"
    headers: dict[str, str] | None = None

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFoundError(ServiceError):
    status_code = 404
    code = "not_found"


class ConflictError(ServiceError):
    status_code = 409
    code = "conflict"


class GoneError(ServiceError):
    status_code = 410
    code = "gone"


class UnauthorizedError(ServiceError):
    status_code = 401
    code = "unauthorized"
    headers = {"WWW-Authenticate": "Bearer"}


class ForbiddenError(ServiceError):
    status_code = 403
    code = "forbidden"


class PayloadTooLargeError(ServiceError):
    status_code = 413
    code = "payload_too_large"


class UnsupportedMediaTypeError(ServiceError):
    status_code = 415
    code = "unsupported_media_type"


class InvalidInputError(ServiceError):
    status_code = 422
    code = "invalid_input"


class InsufficientMaterialError(ServiceError):
    status_code = 409
    code = "insufficient_material"


class BaselineUnavailableError(ServiceError):
    status_code = 503
    code = "baseline_unavailable"


# Database failures that mean "not reachable right now" (connection refused or lost, pool
# exhausted, SQLite busy): clients and load balancers should retry, so 503 + Retry-After.
DATABASE_UNAVAILABLE = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.DisconnectionError,
    sa_exc.TimeoutError,
)
RETRY_AFTER_SECONDS = 5


def error_body(code: str, detail: str) -> dict[str, str]:
    return {"error": code, "detail": detail}


DATABASE_UNAVAILABLE_BODY = error_body(
    "database_unavailable",
    f"the database is not reachable right now; retry in {RETRY_AFTER_SECONDS} s",
)


def _snake(name: str) -> str:
    name = name.removesuffix("Error")
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def detector_error_code(exc: DetectorError) -> str:
    """``TruncatedAudioError`` -> ``truncated_audio``."""
    return _snake(type(exc).__name__) or "detector"


def format_validation(errors: list[dict[str, Any]]) -> str:
    parts = []
    for err in errors:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body" or len(err["loc"]) == 1)
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts) or "invalid request"


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
}


def problem_of(exc: BaseException) -> tuple[int, dict[str, str], dict[str, str] | None]:
    """The status, body and headers the handlers below answer ``exc`` with: for an answer
    that holds several outcomes (the batch upload's items)."""
    if isinstance(exc, ServiceError):
        return exc.status_code, error_body(exc.code, exc.detail), exc.headers
    if isinstance(exc, DetectorError):
        if isinstance(exc, ArtifactError):
            return 503, error_body("baseline_unavailable", str(exc)), None
        if isinstance(exc, WeightsUnavailableError):  # the server lacks them, not the client
            return 503, error_body("weights_unavailable", str(exc)), None
        return 422, error_body(detector_error_code(exc), str(exc)), None
    if isinstance(exc, DATABASE_UNAVAILABLE):
        return 503, DATABASE_UNAVAILABLE_BODY, {"Retry-After": str(RETRY_AFTER_SECONDS)}
    return 500, error_body("internal_error", "internal server error; see the service log"), None


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that give every error the one JSON shape."""

    @app.exception_handler(ServiceError)
    async def _service_error(_request: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse(
            error_body(exc.code, exc.detail), status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(DetectorError)
    async def _detector_error(_request: Request, exc: DetectorError) -> JSONResponse:
        status, body, _ = problem_of(exc)
        if status == 503:
            log.error("%s: %s", body["error"], exc)
        return JSONResponse(body, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        if any(err.get("type") == "json_invalid" for err in errors):
            ctx = next(e for e in errors if e.get("type") == "json_invalid").get("ctx") or {}
            reason = ctx.get("error", "could not parse the request body")
            return JSONResponse(
                error_body("malformed_json", f"request body is not valid JSON ({reason})"),
                status_code=400,
            )
        detail = format_validation(errors)
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        body_not_json = any(
            tuple(err.get("loc", ())) == ("body",) and err.get("type") != "missing"
            for err in errors
        )
        if body_not_json and media != "application/json":
            detail += (
                f"; the body was sent as {media or 'no Content-Type'!r}: send JSON with "
                "Content-Type: application/json"
            )
        return JSONResponse(error_body("validation_error", detail), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        headers = dict(exc.headers or {})
        detail = str(exc.detail)
        if exc.status_code == 405:
            allowed = allowed_methods(request, headers.get("Allow") or headers.get("allow"))
            headers.pop("allow", None)
            headers["Allow"] = ", ".join(allowed)
            detail = f"{request.method} is not allowed here; use {', '.join(allowed)}"
        return JSONResponse(error_body(code, detail), status_code=exc.status_code, headers=headers)

    for db_error in DATABASE_UNAVAILABLE:

        @app.exception_handler(db_error)
        async def _database_unavailable(_request: Request, exc: Exception) -> JSONResponse:
            log.error("database unavailable: %s", exc)
            status, body, headers = problem_of(exc)
            return JSONResponse(body, status_code=status, headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return JSONResponse(
            error_body("internal_error", "internal server error; see the service log"),
            status_code=500,
        )


def allowed_methods(request: Request, declared: str | None = None) -> list[str]:
    """Every method the app takes at this path (for a 405's Allow header): from the OpenAPI
    paths, which list each route (Starlette's own 405 names only the first route matched)."""
    methods = {m.strip().upper() for m in (declared or "").split(",") if m.strip()}
    path = request.url.path
    for template, operations in request.app.openapi().get("paths", {}).items():
        pattern = "^" + re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path):
            methods |= {m.upper() for m in operations if m.lower() in _HTTP_METHODS}
    return sorted(methods)


_HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}

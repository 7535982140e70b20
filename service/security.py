"""API keys, read-only keys, the admin token and the metrics token (``Authorization: Bearer``).

Access levels, each including the ones below it:

- ``admin``: ``HUMWATCH_ADMIN_TOKEN``; everything, including ``/v1/admin``;
- ``write``: one of ``HUMWATCH_API_KEYS``; every ``/v1`` read and write outside ``/v1/admin``;
- ``read``: one of ``HUMWATCH_READ_KEYS``; ``GET``/``HEAD`` under ``/v1`` only (machines,
  windows, window audio, baselines, events): for dashboards and people reviewing sound.

With any key or token configured, every ``/v1`` request needs one; the check runs on the
headers in ``service.middleware`` before any body is read (no credentials: 401; wrong or
insufficient ones: 403). ``/metrics`` needs ``HUMWATCH_METRICS_TOKEN`` when that is set; the
health endpoints are always open. Without any keys everything is open and ``humwatch serve``
binds to loopback only. The dependencies below repeat the check per route and put the
bearer scheme in the OpenAPI.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Literal

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.config import Settings
from service.errors import ForbiddenError, ServiceError, UnauthorizedError

Level = Literal["read", "write", "admin"]
_RANK = {"read": 1, "write": 2, "admin": 3}
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

bearer = HTTPBearer(
    auto_error=False,
    description="an API key (reads and writes), a read-only key, or the admin token",
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def _matches(token: str, candidates: list[str]) -> bool:
    found = False
    for candidate in candidates:  # no early exit: constant time over the key list
        found |= hmac.compare_digest(token.encode(), candidate.encode())
    return found


def level_of(settings: Settings, token: str) -> Level | None:
    """The access level a bearer token grants (None: not a known key)."""
    if settings.admin_token and _matches(token, [settings.admin_token]):
        return "admin"
    if _matches(token, list(settings.api_keys)):
        return "write"
    if _matches(token, list(settings.read_keys)):
        return "read"
    return None


# POSTs that only read (their query does not fit a URL): a read key may send them.
READ_POSTS = frozenset({"/v1/search"})


def required_level(method: str, path: str) -> Level:
    """What a ``/v1`` request needs: admin under /v1/admin, read for GET/HEAD, else write."""
    if path == "/v1/admin" or path.startswith("/v1/admin/"):
        return "admin"
    if path in READ_POSTS:
        return "read"
    return "read" if method.upper() in SAFE_METHODS else "write"


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (None otherwise)."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def check_access(settings: Settings, needed: Level, token: str | None) -> None:
    """Raise 401/403 unless ``token`` grants ``needed`` (no-op when auth is off)."""
    if not settings.auth_enabled:
        return
    if token is None:
        if needed == "admin":
            raise UnauthorizedError(
                "admin endpoints need the admin token: Authorization: Bearer <token>"
            )
        raise UnauthorizedError("this endpoint needs an API key: Authorization: Bearer <key>")
    if needed == "admin" and settings.admin_token is None:
        raise ForbiddenError("admin endpoints are disabled: HUMWATCH_ADMIN_TOKEN is not set")
    level = level_of(settings, token)
    if level is None:
        what = "admin token" if needed == "admin" else "API key"
        raise ForbiddenError(f"the {what} is not valid")
    if _RANK[level] < _RANK[needed]:
        if needed == "admin":
            raise ForbiddenError("the admin token is not valid")
        raise ForbiddenError(
            "this key is read-only (HUMWATCH_READ_KEYS); writes need one of HUMWATCH_API_KEYS"
        )


def check_metrics_access(settings: Settings, token: str | None) -> None:
    """``/metrics`` needs the metrics token when ``HUMWATCH_METRICS_TOKEN`` is set."""
    if settings.metrics_token is None:
        return
    if token is None:
        raise UnauthorizedError("/metrics needs the metrics token: Authorization: Bearer <token>")
    if not _matches(token, [settings.metrics_token]):
        raise ForbiddenError("the metrics token is not valid")


def _dependency(needed: Level):
    # async: a plain function dependency would cost every request a threadpool round trip.
    async def require(request: Request, credentials: Credentials) -> None:
        settings = request.app.state.runtime.settings
        check_access(settings, needed, credentials.credentials if credentials else None)

    require.__name__ = f"require_{needed}"
    return require


require_reader = _dependency("read")
require_writer = _dependency("write")
require_admin = _dependency("admin")

Reader = Depends(require_reader)
Writer = Depends(require_writer)
Admin = Depends(require_admin)

__all__ = [
    "Admin",
    "Reader",
    "ServiceError",
    "Writer",
    "bearer_token",
    "check_access",
    "check_metrics_access",
    "required_level",
]

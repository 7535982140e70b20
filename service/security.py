"""API key and admin token checks (``Authorization: Bearer <key>``).

Writes need one of ``HUMWATCH_API_KEYS`` (the admin token also writes); ``/v1/admin`` needs
``HUMWATCH_ADMIN_TOKEN``. No credentials: 401; wrong ones: 403. When neither keys nor a
token are configured, everything is open and ``humwatch serve`` binds to loopback only.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.errors import ForbiddenError, UnauthorizedError

bearer = HTTPBearer(auto_error=False, description="an API key, or the admin token for /v1/admin")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def _matches(token: str, candidates: list[str]) -> bool:
    found = False
    for candidate in candidates:  # no early exit: constant time over the key list
        found |= hmac.compare_digest(token.encode(), candidate.encode())
    return found


def require_writer(request: Request, credentials: Credentials) -> None:
    """Dependency: an API key (or the admin token) unless auth is disabled."""
    settings = request.app.state.runtime.settings
    if not settings.auth_enabled:
        return
    if credentials is None:
        raise UnauthorizedError("this endpoint needs an API key: Authorization: Bearer <key>")
    allowed = list(settings.api_keys)
    if settings.admin_token:
        allowed.append(settings.admin_token)
    if not _matches(credentials.credentials, allowed):
        raise ForbiddenError("the API key is not valid")


def require_admin(request: Request, credentials: Credentials) -> None:
    """Dependency: the admin token unless auth is disabled."""
    settings = request.app.state.runtime.settings
    if not settings.auth_enabled:
        return
    if credentials is None:
        raise UnauthorizedError(
            "admin endpoints need the admin token: Authorization: Bearer <token>"
        )
    if settings.admin_token is None:
        raise ForbiddenError("admin endpoints are disabled: HUMWATCH_ADMIN_TOKEN is not set")
    if not _matches(credentials.credentials, [settings.admin_token]):
        raise ForbiddenError("the admin token is not valid")


Writer = Depends(require_writer)
Admin = Depends(require_admin)

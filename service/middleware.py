"""Pure ASGI middleware that guards every request before the endpoints see it.

In order, on the request's head only (no body read yet):

1. a URL whose path or query holds a NUL character is refused (422; Postgres cannot store it);
2. ``/v1`` needs a key of the right level and ``/metrics`` the metrics token
   (``service.security``): an unauthenticated client never gets its body read;
3. bodies are capped: ``MAX_JSON_BODY_BYTES`` for everything but the audio upload routes
   (which stream with ``HUMWATCH_MAX_UPLOAD_BYTES``, the batch upload with
   ``HUMWATCH_MAX_BATCH_BYTES``): 413 from the declared length, or as soon as more arrives.

Around all of it, an unexpected exception becomes the one-shape 500 without being raised on
to the server: uvicorn closes a keep-alive connection whose application raised, so the
client's next request on it would be reset.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from service.errors import ServiceError, error_body
from service.limits import MAX_JSON_BODY_BYTES
from service.security import bearer_token, check_access, check_metrics_access, required_level

log = logging.getLogger("humwatch.errors")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Routes that stream their own (larger, audio) bodies with their own limit.
STREAMED_BODY_ROUTES = [
    re.compile(r"^/v1/machines/[^/]+/recordings$"),
    re.compile(r"^/v1/recordings/batch$"),  # multipart, HUMWATCH_MAX_BATCH_BYTES
    re.compile(r"^/v1/search$"),  # a clip to search with; JSON queries have their own cap
]
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


async def _send_json(
    send: Send, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> None:
    payload = json.dumps(body).encode()
    raw_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
    ]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": payload})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


class GuardMiddleware:
    """NUL check, authentication and the JSON body cap, before any endpoint runs."""

    def __init__(self, app: ASGIApp, settings_getter: Callable[[], Any]) -> None:
        self.app = app
        self.settings_getter = settings_getter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self._guarded(scope, receive, tracking_send)
        except Exception as exc:  # noqa: BLE001 - answered here so the connection stays usable
            log.exception("unhandled error", exc_info=exc)
            if not started:
                await _send_json(
                    send,
                    500,
                    error_body("internal_error", "internal server error; see the service log"),
                )

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        method: str = scope.get("method", "GET").upper()
        if "\x00" in path or b"%00" in scope.get("query_string", b"").lower():
            await _send_json(
                send,
                422,
                error_body(
                    "validation_error",
                    "the URL contains a NUL character (%00), which no field accepts",
                ),
            )
            return
        settings = self.settings_getter()
        token = bearer_token(_header(scope, b"authorization"))
        try:
            if path == "/v1" or path.startswith("/v1/"):
                check_access(settings, required_level(method, path), token)
            elif path == "/metrics":
                check_metrics_access(settings, token)
        except ServiceError as exc:
            await _send_json(send, exc.status_code, error_body(exc.code, exc.detail), exc.headers)
            return
        if method in _BODY_METHODS and not any(r.match(path) for r in STREAMED_BODY_ROUTES):
            receive = await self._capped_body(scope, receive, send)
            if receive is None:
                return
        await self.app(scope, receive, send)

    async def _capped_body(self, scope: Scope, receive: Receive, send: Send) -> Receive | None:
        """Read the body (at most the cap) and replay it; None when a 413 was sent."""
        limit = MAX_JSON_BODY_BYTES
        too_large = error_body(
            "payload_too_large",
            f"request body exceeds {limit} bytes (1 MiB), the limit for JSON bodies; "
            "audio goes to POST /v1/machines/{id}/recordings",
        )
        declared = _header(scope, b"content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            await _send_json(send, 413, too_large, {"Connection": "close"})
            return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                chunks_done = message
                break
            body = message.get("body", b"")
            size += len(body)
            if size > limit:
                await _send_json(send, 413, too_large, {"Connection": "close"})
                return None
            chunks.append(body)
            if not message.get("more_body", False):
                chunks_done = None
                break
        replay: list[Message] = [{"type": "http.request", "body": b"".join(chunks)}]
        if chunks_done is not None:
            replay = [chunks_done]

        async def replay_receive() -> Message:
            if replay:
                return replay.pop(0)
            return await receive()

        return replay_receive

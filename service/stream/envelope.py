"""One audio chunk on the wire: a small JSON header and the audio bytes, in one payload.

Layout: ``b"HWC1"``, the header's length (4 bytes, big-endian), the header (UTF-8 JSON), the
audio (16-bit FLAC as the agent sends it; any format the HTTP API takes). Self-contained, so
it crosses MQTT 3.1.1 (no message properties) and NATS unchanged.

Header fields: ``machine`` (id), ``site``, ``started_at`` (ISO 8601 UTC of the first sample),
``conditions`` (operating conditions, as the HTTP API's query parameters), ``sha256`` (of
the audio), ``seq`` (the agent's chunk counter), ``published_at`` (Unix time the agent first
published it, for the end-to-end latency), ``agent``.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

MAGIC = b"HWC1"
MAX_HEADER_BYTES = 64 * 1024


class EnvelopeError(ValueError):
    """A payload that is not a chunk message (the reason says why)."""


@dataclass
class Chunk:
    machine: str
    started_at: datetime
    audio: bytes
    site: str | None = None
    conditions: dict[str, Any] = field(default_factory=dict)
    seq: int | None = None
    published_at: float | None = None
    agent: str | None = None
    sha256: str = ""

    def __post_init__(self) -> None:
        if not self.sha256:
            self.sha256 = hashlib.sha256(self.audio).hexdigest()

    @property
    def message_id(self) -> str:
        """What makes a chunk unique (the service's idempotency key)."""
        return f"{self.machine}:{self.sha256}:{self.started_at.isoformat()}"

    def header(self) -> dict[str, Any]:
        return {
            "machine": self.machine,
            "site": self.site,
            "started_at": self.started_at.isoformat(),
            "conditions": self.conditions,
            "sha256": self.sha256,
            "seq": self.seq,
            "published_at": self.published_at,
            "agent": self.agent,
        }


def encode(chunk: Chunk) -> bytes:
    header = json.dumps(chunk.header(), separators=(",", ":")).encode()
    return MAGIC + struct.pack(">I", len(header)) + header + chunk.audio


def peek_header(payload: bytes) -> dict[str, Any]:
    """The header alone (no checks of the audio); ``EnvelopeError`` when unreadable."""
    if len(payload) < 8 or payload[:4] != MAGIC:
        raise EnvelopeError("not a humwatch chunk message (no HWC1 prefix)")
    (size,) = struct.unpack(">I", payload[4:8])
    if size > MAX_HEADER_BYTES or 8 + size > len(payload):
        raise EnvelopeError(f"chunk header length {size} is impossible for this payload")
    try:
        header = json.loads(payload[8 : 8 + size])
    except ValueError as exc:
        raise EnvelopeError(f"chunk header is not JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise EnvelopeError("chunk header is not a JSON object")
    return header


def decode(payload: bytes) -> Chunk:
    """Parse and check a chunk message; ``EnvelopeError`` says what is wrong."""
    header = peek_header(payload)
    size = struct.unpack(">I", payload[4:8])[0]
    audio = payload[8 + size :]
    machine = header.get("machine")
    if not isinstance(machine, str) or not machine:
        raise EnvelopeError("chunk header has no machine id")
    raw_start = header.get("started_at")
    try:
        started_at = datetime.fromisoformat(str(raw_start))
    except ValueError as exc:
        raise EnvelopeError(f"chunk started_at {raw_start!r} is not an ISO 8601 time") from exc
    if started_at.tzinfo is None:
        started_at = started_at.replace(tzinfo=UTC)
    conditions = header.get("conditions") or {}
    if not isinstance(conditions, dict):
        raise EnvelopeError("chunk conditions must be a JSON object")
    digest = hashlib.sha256(audio).hexdigest()
    if header.get("sha256") and header["sha256"] != digest:
        raise EnvelopeError("chunk audio does not match its sha256 (corrupted in transit)")
    published = header.get("published_at")
    return Chunk(
        machine=machine,
        started_at=started_at.astimezone(UTC),
        audio=audio,
        site=header.get("site"),
        conditions=conditions,
        seq=header.get("seq") if isinstance(header.get("seq"), int) else None,
        published_at=float(published) if isinstance(published, int | float) else None,
        agent=header.get("agent"),
        sha256=digest,
    )

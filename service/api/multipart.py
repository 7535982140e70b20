"""A strict, streaming ``multipart/form-data`` reader (RFC 7578) for the batch upload.

The body is parsed as it arrives, so a request is held once (each part's bytes, never the
whole body beside them) and refused as soon as it passes a limit: the request's bytes, the
number of parts, a part's header block, a part's size (``part_limit``; a part over it is
kept as ``too_large`` without its bytes, so the caller can refuse that part alone).
Anything that is not well-formed multipart is a 400 naming what is wrong.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from service.errors import PayloadTooLargeError, ServiceError

MAX_HEADER_BYTES = 16 * 1024  # one part's header block
MAX_BOUNDARY_CHARS = 70  # RFC 2046

_PARAM = re.compile(r';\s*([A-Za-z0-9_.*-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')


class MalformedMultipartError(ServiceError):
    status_code = 400
    code = "malformed_multipart"


class TooManyPartsError(PayloadTooLargeError):
    """More parts than ``max_parts`` (the caller words the limit for its clients)."""


@dataclass
class Part:
    """One form field: its name, filename and content type as sent, and its bytes."""

    name: str
    filename: str | None
    content_type: str | None
    data: bytes
    size: int
    too_large: bool = False


def boundary_of(content_type: str) -> bytes:
    """The boundary parameter of a ``multipart/form-data`` Content-Type."""
    params = dict(_params(content_type))
    boundary = params.get("boundary", "")
    if not boundary:
        raise MalformedMultipartError(
            "the multipart/form-data Content-Type has no boundary parameter (let the HTTP "
            "client build the body: curl -F, or files= in Python's httpx/requests)"
        )
    if len(boundary) > MAX_BOUNDARY_CHARS or not boundary.isascii():
        raise MalformedMultipartError(
            f"the multipart boundary must be 1-{MAX_BOUNDARY_CHARS} ASCII characters"
        )
    return boundary.encode("ascii")


def _params(header: str) -> list[tuple[str, str]]:
    out = []
    for key, raw in _PARAM.findall(";" + header.split(";", 1)[1] if ";" in header else ""):
        value = raw.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        out.append((key.lower(), value))
    return out


def _part_headers(block: bytes) -> tuple[str, str | None, str | None]:
    """``(name, filename, content type)`` from one part's header block."""
    name = filename = content_type = None
    disposition_seen = False
    for line in block.decode("utf-8", errors="replace").split("\r\n"):
        if not line:
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise MalformedMultipartError(f"part header line {line[:80]!r} has no ':'")
        key, value = key.strip().lower(), value.strip()
        if key == "content-disposition":
            disposition_seen = True
            if value.split(";")[0].strip().lower() != "form-data":
                raise MalformedMultipartError(
                    f"a part's Content-Disposition is {value[:80]!r}, not form-data"
                )
            params = dict(_params(value))
            name, filename = params.get("name"), params.get("filename")
        elif key == "content-type":
            content_type = value.split(";")[0].strip().lower() or None
    if not disposition_seen or not name:
        raise MalformedMultipartError(
            "every part needs a Content-Disposition: form-data header with a name"
        )
    return name, filename, content_type


async def read_parts(
    chunks: AsyncIterator[bytes],
    boundary: bytes,
    *,
    max_parts: int,
    part_limit: Callable[[str], int],
) -> list[Part]:
    """Every part of the body in order; a limit passed raises at once (``TooManyPartsError``,
    and 400 for malformed input)."""
    delimiter = b"\r\n--" + boundary
    keep = len(delimiter) + 4  # what may be the start of a delimiter split across chunks
    buf = bytearray(b"\r\n")  # the first delimiter may open the body without a CRLF
    state = "preamble"
    parts: list[Part] = []
    names: set[str] = set()
    current: Part | None = None
    pieces: list[bytes] = []
    limit = 0

    def finish(data_end: int) -> None:
        nonlocal current
        assert current is not None
        tail = bytes(buf[:data_end])
        current.size += len(tail)
        if current.size > limit:
            current.too_large = True
        if not current.too_large:
            current.data = b"".join([*pieces, tail]) if pieces else tail
        pieces.clear()
        parts.append(current)
        current = None

    async for chunk in chunks:
        buf += chunk
        while True:
            if state == "preamble":
                at = buf.find(delimiter)
                if at < 0:
                    del buf[: max(0, len(buf) - keep)]
                    break
                del buf[: at + len(delimiter)]
                state = "delimiter"
            if state == "delimiter":  # after a delimiter: "--" closes, else CRLF and headers
                if len(buf) < 2:
                    break
                if buf[:2] == b"--":
                    state = "end"
                    break
                eol = buf.find(b"\r\n")
                if eol < 0:
                    if len(buf) > 256:
                        raise MalformedMultipartError("a multipart boundary line does not end")
                    break
                if buf[:eol].strip(b" \t"):
                    raise MalformedMultipartError(
                        "text follows a multipart boundary on its line (is the boundary in "
                        "the Content-Type the one the body uses?)"
                    )
                del buf[: eol + 2]
                state = "headers"
            if state == "headers":
                if buf[:2] == b"\r\n":
                    end, skip = 0, 2
                else:
                    end, skip = buf.find(b"\r\n\r\n"), 4
                if end < 0:
                    if len(buf) > MAX_HEADER_BYTES:
                        raise MalformedMultipartError(
                            f"a part's headers exceed {MAX_HEADER_BYTES} bytes"
                        )
                    break
                name, filename, content_type = _part_headers(bytes(buf[:end]))
                del buf[: end + skip]
                if name in names:
                    raise MalformedMultipartError(
                        f"two parts are named {name!r}: give every part its own name"
                    )
                if len(parts) >= max_parts:
                    raise TooManyPartsError(f"more than {max_parts} parts")
                names.add(name)
                current = Part(name, filename, content_type, b"", 0)
                limit = part_limit(name)
                state = "data"
            if state == "data":
                at = buf.find(delimiter)
                if at < 0:
                    movable = len(buf) - keep
                    if movable > 0:
                        assert current is not None
                        current.size += movable
                        if current.size > limit:
                            current.too_large = True
                            pieces.clear()
                        if not current.too_large:
                            pieces.append(bytes(buf[:movable]))
                        del buf[:movable]
                    break
                finish(at)
                del buf[: at + len(delimiter)]
                state = "delimiter"
            if state == "end":
                buf.clear()  # the epilogue is ignored
                break
    if state != "end":
        if state == "preamble":
            raise MalformedMultipartError(
                "the body holds no multipart part (no boundary line matching the Content-Type)"
            )
        raise MalformedMultipartError(
            "the multipart body ends before its closing boundary (truncated upload?)"
        )
    return parts

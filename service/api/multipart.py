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
from dataclasses import dataclass, field

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
    data: bytes = field(repr=False)  # a repr of megabytes of audio would cost milliseconds
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
    parser = _Parser(boundary, max_parts, part_limit)
    async for chunk in chunks:
        parser.feed(chunk)
    return parser.close()


class _Parser:
    """The state machine: a small buffer for boundary lines and headers; a part's data is
    searched in each chunk as it comes and kept as slices of it (one copy, the final join)."""

    def __init__(self, boundary: bytes, max_parts: int, part_limit: Callable[[str], int]):
        self.delimiter = b"\r\n--" + boundary
        self.max_parts = max_parts
        self.part_limit = part_limit
        self.buf = bytearray(b"\r\n")  # the first delimiter may open the body without a CRLF
        self.state = "preamble"
        self.parts: list[Part] = []
        self.names: set[str] = set()
        self.current: Part | None = None
        self.limit = 0
        self.pieces: list[bytes | memoryview] = []
        self.tail = b""  # a part's last bytes, held back: they may begin a delimiter

    def feed(self, chunk: bytes) -> None:
        if self.state == "end":
            return  # the epilogue is ignored
        if self.state == "data":
            rest = self._data(chunk)
            if rest is None:
                return
            self.buf += rest
        else:
            self.buf += chunk
        self._run()

    def close(self) -> list[Part]:
        if self.state == "end":
            return self.parts
        if self.state == "preamble":
            raise MalformedMultipartError(
                "the body holds no multipart part (no boundary line matching the Content-Type)"
            )
        raise MalformedMultipartError(
            "the multipart body ends before its closing boundary (truncated upload?)"
        )

    def _run(self) -> None:
        """Advance through the buffered bytes until more are needed."""
        buf, delimiter = self.buf, self.delimiter
        while True:
            if self.state == "preamble":
                at = buf.find(delimiter)
                if at < 0:
                    del buf[: max(0, len(buf) - len(delimiter))]
                    return
                del buf[: at + len(delimiter)]
                self.state = "delimiter"
            if self.state == "delimiter":  # after a delimiter: "--" closes, else CRLF, headers
                if len(buf) < 2:
                    return
                if buf[:2] == b"--":
                    self.state = "end"
                    buf.clear()
                    return
                eol = buf.find(b"\r\n")
                if eol < 0:
                    if len(buf) > 256:
                        raise MalformedMultipartError("a multipart boundary line does not end")
                    return
                if buf[:eol].strip(b" \t"):
                    raise MalformedMultipartError(
                        "text follows a multipart boundary on its line (is the boundary in "
                        "the Content-Type the one the body uses?)"
                    )
                del buf[: eol + 2]
                self.state = "headers"
            if self.state == "headers":
                if buf[:2] == b"\r\n":
                    end, skip = 0, 2
                else:
                    end, skip = buf.find(b"\r\n\r\n"), 4
                if end < 0:
                    if len(buf) > MAX_HEADER_BYTES:
                        raise MalformedMultipartError(
                            f"a part's headers exceed {MAX_HEADER_BYTES} bytes"
                        )
                    return
                self._start(*_part_headers(bytes(buf[:end])))
                del buf[: end + skip]
                rest = self._data(bytes(buf))
                buf.clear()
                if rest is None:
                    return
                buf += rest

    def _start(self, name: str, filename: str | None, content_type: str | None) -> None:
        if name in self.names:
            raise MalformedMultipartError(
                f"two parts are named {name!r}: give every part its own name"
            )
        if len(self.parts) >= self.max_parts:
            raise TooManyPartsError(f"more than {self.max_parts} parts")
        self.names.add(name)
        self.current = Part(name, filename, content_type, b"", 0)
        self.limit = self.part_limit(name)
        self.state = "data"

    def _add(self, piece: bytes | memoryview) -> None:
        part = self.current
        assert part is not None
        part.size += len(piece)
        if part.size > self.limit:
            part.too_large = True
            self.pieces.clear()
        elif piece:
            self.pieces.append(piece)

    def _data(self, chunk: bytes) -> memoryview | bytes | None:
        """Take a part's bytes from ``chunk``; what follows its closing delimiter (None:
        the part goes on past this chunk)."""
        delimiter, tail = self.delimiter, self.tail
        hold = len(delimiter) - 1
        if tail:  # a delimiter that began in the held-back bytes ends within hold bytes
            at = (tail + chunk[:hold]).find(delimiter)
            if at >= 0:
                self._add(tail[:at])
                self._finish()
                return memoryview(chunk)[at + len(delimiter) - len(tail) :]
        at = chunk.find(delimiter)
        if at >= 0:
            self._add(tail)
            self._add(memoryview(chunk)[:at])
            self._finish()
            return memoryview(chunk)[at + len(delimiter) :]
        if len(chunk) >= hold:
            self._add(tail)
            self._add(memoryview(chunk)[: len(chunk) - hold])
            self.tail = bytes(chunk[len(chunk) - hold :])
        else:
            joined = tail + chunk
            self._add(joined[: max(0, len(joined) - hold)])
            self.tail = joined[max(0, len(joined) - hold) :]
        return None

    def _finish(self) -> None:
        part = self.current
        assert part is not None
        if not part.too_large:
            part.data = b"".join(self.pieces)
        self.pieces.clear()
        self.tail = b""
        self.parts.append(part)
        self.current = None
        self.state = "delimiter"

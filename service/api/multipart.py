"""A strict, streaming ``multipart/form-data`` reader (RFC 7578) for the batch upload.

The body goes through python-multipart's streaming parser (the one Starlette's forms use) as
it arrives, so a request is held once (each part's bytes, never the whole body beside them)
and refused as soon as it passes a limit: the number of parts, a part's header block, a
part's size (``part_limit``; a part over it is kept as ``too_large`` without its bytes, so the
caller can refuse that part alone). What the parser refuses, and parts without a form-data
name or with a name used twice, are a 400 naming what is wrong.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from service.errors import PayloadTooLargeError, ServiceError

MAX_HEADER_BYTES = 16 * 1024  # one part's header block
MAX_HEADERS = 16  # header lines of one part
MAX_BOUNDARY_CHARS = 70  # RFC 2046


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
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary", b"")
    if not boundary:
        raise MalformedMultipartError(
            "the multipart/form-data Content-Type has no boundary parameter (let the HTTP "
            "client build the body: curl -F, or files= in Python's httpx/requests)"
        )
    if len(boundary) > MAX_BOUNDARY_CHARS or not boundary.isascii():
        raise MalformedMultipartError(
            f"the multipart boundary must be 1-{MAX_BOUNDARY_CHARS} ASCII characters"
        )
    return boundary


async def read_parts(
    chunks: AsyncIterator[bytes],
    boundary: bytes,
    *,
    max_parts: int,
    part_limit: Callable[[str], int],
) -> list[Part]:
    """Every part of the body in order; a limit passed raises at once (``TooManyPartsError``,
    and 400 for malformed input)."""
    reader = _Reader(max_parts, part_limit)
    parser = MultipartParser(
        boundary,
        reader.callbacks(),
        max_header_count=MAX_HEADERS,
        max_header_size=MAX_HEADER_BYTES,
    )
    try:
        async for chunk in chunks:
            if not reader.ended:  # the epilogue is ignored
                parser.write(chunk)
    except MultipartParseError as exc:
        if not reader.begun:
            raise MalformedMultipartError(
                f"the body does not begin with the boundary line the Content-Type names "
                f"(--{boundary.decode('ascii')}, nothing before it): {exc}"
            ) from exc
        raise MalformedMultipartError(
            f"part {len(reader.parts) + 1} of the body is not well-formed multipart: {exc}"
        ) from exc
    return reader.close()


class _Reader:
    """Collects the parser's callbacks into ``Part``s: a part's data is kept as the slices the
    parser hands over (one copy of each, the final join)."""

    def __init__(self, max_parts: int, part_limit: Callable[[str], int]) -> None:
        self.max_parts = max_parts
        self.part_limit = part_limit
        self.parts: list[Part] = []
        self.names: set[str] = set()
        self.headers: dict[bytes, bytes] = {}
        self.field, self.value = bytearray(), bytearray()
        self.header_bytes = 0
        self.current: Part | None = None
        self.limit = 0
        self.pieces: list[memoryview] = []
        self.begun = self.ended = False

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def close(self) -> list[Part]:
        if self.ended:
            return self.parts
        if not self.begun:
            raise MalformedMultipartError(
                "the body holds no multipart part (no boundary line matching the Content-Type)"
            )
        raise MalformedMultipartError(
            "the multipart body ends before its closing boundary (truncated upload?)"
        )

    def _part_begin(self) -> None:
        self.begun = True
        self.headers.clear()
        self.header_bytes = 0

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._count(end - start)
        self.field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._count(end - start)
        self.value += data[start:end]

    def _count(self, n: int) -> None:
        self.header_bytes += n
        if self.header_bytes > MAX_HEADER_BYTES:
            raise MalformedMultipartError(f"a part's headers exceed {MAX_HEADER_BYTES} bytes")

    def _header_end(self) -> None:
        self.headers[bytes(self.field).strip().lower()] = bytes(self.value).strip()
        self.field.clear()
        self.value.clear()

    def _headers_finished(self) -> None:
        disposition = self.headers.get(b"content-disposition")
        if disposition is None:
            raise MalformedMultipartError(
                "a part has no Content-Disposition header (each part must be "
                'Content-Disposition: form-data; name="...")'
            )
        kind, params = parse_options_header(disposition)
        if kind.lower() != b"form-data":
            raise MalformedMultipartError(
                f"a part's Content-Disposition is {kind.decode('latin-1')!r}, not form-data"
            )
        if b"name" not in params:
            raise MalformedMultipartError("a part's Content-Disposition has no name parameter")
        name = params[b"name"].decode("utf-8", errors="replace")
        filename = params.get(b"filename")
        content_type = self.headers.get(b"content-type")
        if name in self.names:
            raise MalformedMultipartError(
                f"two parts are named {name!r}: give every part its own name"
            )
        if len(self.parts) >= self.max_parts:
            raise TooManyPartsError(f"more than {self.max_parts} parts")
        self.names.add(name)
        self.current = Part(
            name,
            None if filename is None else filename.decode("utf-8", errors="replace"),
            None if content_type is None else content_type.decode("latin-1"),
            b"",
            0,
        )
        self.limit = self.part_limit(name)

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        part = self.current
        if part is None:
            return
        part.size += end - start
        if part.size > self.limit:
            part.too_large = True
            self.pieces.clear()
        elif end > start:
            self.pieces.append(memoryview(data)[start:end])  # the chunk's bytes, not a copy

    def _part_end(self) -> None:
        part = self.current
        if part is None:
            return
        if not part.too_large:
            part.data = b"".join(self.pieces)
        self.pieces.clear()
        self.parts.append(part)
        self.current = None

    def _end(self) -> None:
        self.ended = True

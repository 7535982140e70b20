"""The streaming multipart reader of the batch upload: the same parts however the body is cut
into chunks, and a clear refusal for what is not well-formed multipart."""

from __future__ import annotations

import anyio
import pytest

from service.api.multipart import (
    MalformedMultipartError,
    TooManyPartsError,
    boundary_of,
    read_parts,
)

AUDIO = bytes(range(256)) * 40 + b"\r\n--not-the-boundary\r\n" + b"\r\n" * 3
BODY = (
    b"--b0undary\r\n"
    b'Content-Disposition: form-data; name="manifest"\r\n'
    b"Content-Type: application/json\r\n\r\n"
    b'{"items": []}\r\n'
    b"--b0undary\r\n"
    b'content-disposition: form-data; name="a \\"quoted\\" name"; filename="a.flac"\r\n'
    b"Content-Type: audio/flac\r\n\r\n" + AUDIO + b"\r\n"
    b"--b0undary\r\n"
    b"Content-Disposition: form-data; name=empty\r\n\r\n"
    b"\r\n"
    b"--b0undary--\r\nepilogue, ignored"
)


def parse(body: bytes, chunk: int, *, max_parts: int = 10, limit: int = 1 << 20):
    async def chunks():
        for i in range(0, len(body), chunk):
            yield body[i : i + chunk]

    async def main():
        return await read_parts(
            chunks(), b"b0undary", max_parts=max_parts, part_limit=lambda _name: limit
        )

    return anyio.run(main)


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 13, 64, 4096, len(BODY)])
def test_the_same_parts_however_the_body_is_chunked(chunk):
    parts = parse(BODY, chunk)
    assert [(p.name, p.filename, p.content_type) for p in parts] == [
        ("manifest", None, "application/json"),
        ('a "quoted" name', "a.flac", "audio/flac"),
        ("empty", None, None),
    ]
    assert [p.data for p in parts] == [b'{"items": []}', AUDIO, b""]
    assert not any(p.too_large for p in parts)


@pytest.mark.parametrize("chunk", [1, 5, 4096])
def test_a_part_over_its_limit_is_flagged_without_its_bytes(chunk):
    parts = parse(BODY, chunk, limit=100)
    big = parts[1]
    assert big.too_large and big.data == b"" and big.size == len(AUDIO)
    assert not parts[0].too_large and parts[0].data == b'{"items": []}'


def test_too_many_parts_stops_the_read():
    with pytest.raises(TooManyPartsError):
        parse(BODY, 7, max_parts=2)


@pytest.mark.parametrize(
    "body, words",
    [
        (b"no boundary anywhere", "does not begin with the boundary line"),
        # A preamble and transport padding (RFC 2046) are refused: HTTP clients send neither.
        (b"preamble\r\n" + BODY, "does not begin with the boundary line"),
        (BODY.replace(b"--b0undary\r\n", b"--b0undary  \r\n", 1), "boundary line"),
        (b"", "no multipart part"),
        (BODY[:-40], "closing boundary"),
        (b"--b0undary\r\nContent-Type: audio/wav\r\n\r\nx\r\n--b0undary--", "Content-Disposition"),
        (
            b'--b0undary\r\nContent-Disposition: attachment; name="a"\r\n\r\nx\r\n--b0undary--',
            "form-data",
        ),
        (b"--b0undary\r\nno colon here\r\n\r\nx\r\n--b0undary--", "part 1 of the body"),
        (b"--b0undaryX\r\n\r\n", "boundary line"),
        (b"--b0undary\r\n" + b"X-Long: " + b"a" * 20_000, "header size"),
        (
            b'--b0undary\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n'
            b'--b0undary\r\nContent-Disposition: form-data; name="a"\r\n\r\n2\r\n--b0undary--',
            "two parts are named 'a'",
        ),
    ],
)
def test_malformed_bodies_are_refused_naming_the_problem(body, words):
    for chunk in (1, 4096):
        with pytest.raises(MalformedMultipartError) as err:
            parse(body, chunk)
        assert words in err.value.detail


def test_the_boundary_comes_from_the_content_type():
    assert boundary_of("multipart/form-data; boundary=abc") == b"abc"
    assert boundary_of('multipart/form-data; charset=utf-8; boundary="a b;c"') == b"a b;c"
    for header in (
        "multipart/form-data",
        "multipart/form-data; boundary=",
        "x; boundary=" + "a" * 71,
    ):
        with pytest.raises(MalformedMultipartError):
            boundary_of(header)

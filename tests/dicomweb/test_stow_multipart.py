"""The streaming multipart/related reader (RFC 2046 5.1) behind STOW-RS, on hostile input."""

from __future__ import annotations

import asyncio
import random

import pytest

from dicomweb.multipart import IncompleteBody, MultipartError, MultipartReader, boundary_of

BOUNDARY = "b0und'ary (x)"


def body(parts: list[bytes], eol: bytes = b"\r\n", padding: bytes = b"") -> bytes:
    out = b"a preamble to ignore" + eol
    for data in parts:
        out += b"--" + BOUNDARY.encode() + padding + eol
        out += b"Content-Type: application/dicom" + eol + b"Content-Location: x" + eol + eol
        out += data + eol
    return out + b"--" + BOUNDARY.encode() + b"--" + eol + b"an epilogue"


def parse(
    data: bytes, step: int, chunk_size: int = 4096
) -> tuple[list[tuple[dict[str, str], bytes]], int]:
    """The parts of ``data`` read ``step`` bytes at a time; and the largest piece handed on."""

    async def main() -> tuple[list[tuple[dict[str, str], bytes]], int]:
        position = 0

        async def read() -> bytes:
            nonlocal position
            piece = data[position : position + step]
            position += len(piece)
            return piece

        reader = MultipartReader(read, BOUNDARY, chunk_size=chunk_size)
        parts = []
        largest = 0
        while (headers := await reader.next_part()) is not None:
            content = bytearray()
            while piece := await reader.read_chunk():
                largest = max(largest, len(piece))
                content += piece
            parts.append((headers.fields, bytes(content)))
        return parts, largest

    return asyncio.run(main())


PARTS = [
    b"",
    b"x",
    b"\r\n",
    b"\r\n--b0und'ary",  # a prefix of the delimiter inside the content
    bytes(random.Random(7).randrange(256) for _ in range(50_000)),
    b"ends with CR\r",
]


@pytest.mark.parametrize("step", [1, 3, 64, 4095, 65536, 10**9])
def test_parts_come_out_whole_whatever_the_read_sizes(step: int) -> None:
    parts, largest = parse(body(PARTS, padding=b" \t"), step)
    assert [content for _h, content in parts] == PARTS
    assert parts[0][0] == {"content-type": "application/dicom", "content-location": "x"}
    assert largest <= 4096 + step + 64  # bounded pieces, whatever the part size


def test_lf_only_line_breaks_are_tolerated() -> None:
    parts, _ = parse(body(PARTS[:5], eol=b"\n"), 100)
    assert [content for _h, content in parts] == PARTS[:5]


def test_folded_header_and_no_headers() -> None:
    data = (
        b"--" + BOUNDARY.encode() + b"\r\nContent-Type: application/dicom;\r\n"
        b" transfer-syntax=1.2.840.10008.1.2.1\r\n\r\nA\r\n"
        b"--" + BOUNDARY.encode() + b"\r\n\r\nB\r\n--" + BOUNDARY.encode() + b"--"
    )
    parts, _ = parse(data, 7)
    assert parts[0][0]["content-type"] == "application/dicom; transfer-syntax=1.2.840.10008.1.2.1"
    assert parts == [(parts[0][0], b"A"), ({}, b"B")]


@pytest.mark.parametrize("cut", [40, 60, 200, 30_000, -40, -14])
def test_a_body_cut_short_is_incomplete(cut: int) -> None:
    data = body(PARTS[3:5])
    with pytest.raises(IncompleteBody):
        parse(data[:cut] if cut > 0 else data[: len(data) + cut - len(b"an epilogue")], 1000)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"", "empty"),
        (b"no delimiter here at all" * 5000, "no multipart delimiter"),
        (b"--" + BOUNDARY.encode() + b"garbage\r\n\r\nx", "delimiter line"),
        (b"--" + BOUNDARY.encode() + b"\r\nno colon line\r\n\r\nx", "malformed header"),
        (b"--" + BOUNDARY.encode() + b"\r\nX-Long: " + b"a" * 100_000, "too long"),
    ],
)
def test_malformed_bodies(data: bytes, words: str) -> None:
    with pytest.raises(MultipartError, match=words):
        parse(data, 4096)


def test_boundary_parameter() -> None:
    assert boundary_of({"boundary": "abc"}) == "abc"
    for bad in ({}, {"boundary": ""}, {"boundary": "x" * 71}, {"boundary": "ends with space "}):
        with pytest.raises(MultipartError):
            boundary_of(bad)


def test_connection_errors_are_an_incomplete_body() -> None:
    async def main() -> None:
        calls = 0

        async def read() -> bytes:
            nonlocal calls
            calls += 1
            if calls > 1:
                raise ConnectionResetError("peer went away")
            return b"--" + BOUNDARY.encode() + b"\r\n\r\npartial content"

        reader = MultipartReader(read, BOUNDARY)
        assert await reader.next_part() is not None
        with pytest.raises(IncompleteBody, match="connection was lost"):
            while await reader.read_chunk():
                pass

    asyncio.run(main())


def test_delimiter_split_anywhere_between_two_chunks() -> None:
    """The delimiter (with its CR) cut at every position between two large chunks, and
    chunks handed on as views when no delimiter is near."""
    content = bytes(random.Random(3).randrange(256) for _ in range(20_000)) + b"\r"
    data = body([content, b"second"])
    where = data.index(b"\r\n--" + BOUNDARY.encode(), 200)

    async def main(cut: int, first: int = 100) -> tuple[bytes, int]:
        chunks = [data[:first], data[first:cut], data[cut:]]

        async def read() -> bytes:
            return chunks.pop(0) if chunks else b""

        reader = MultipartReader(read, BOUNDARY, chunk_size=1 << 20)
        assert await reader.next_part() is not None
        pieces = await reader.read_pieces()
        views = sum(isinstance(p, memoryview) for p in pieces)
        assert await reader.read_pieces() == []
        assert await reader.next_part() is not None
        assert await reader.read_chunk() == b"second"
        return b"".join(pieces), views

    for cut in range(where - 40, where + 45):
        got, _views = asyncio.run(main(cut))
        assert got == content, cut
    got, views = asyncio.run(main(where - 100, first=5_000))  # no delimiter in the middle
    assert got == content and views >= 1  # chunks handed on as views


def test_the_large_chunk_search_finds_what_bytes_find_finds() -> None:
    """Large chunks are searched by the C library; every position, start and miss agrees."""
    import sys

    from dicomweb import multipart
    from dicomweb.multipart import MEMMEM_FROM, find

    if sys.platform.startswith("linux"):
        assert multipart._MEMMEM is not None, "the C library's memmem is used on Linux"
    rng = random.Random(11)
    needle = b"\r\n--" + BOUNDARY.encode()
    noise = rng.randbytes(3 * MEMMEM_FROM)
    for at in (0, 1, MEMMEM_FROM - 1, 2 * MEMMEM_FROM + 5, len(noise)):
        data = noise[:at] + needle + noise[at:]
        for start in (0, 1, at, at + 1, MEMMEM_FROM // 2):
            assert find(data, needle, start) == data.find(needle, start), (at, start)
    assert find(noise, needle) == -1
    twice = noise + needle + noise + needle
    assert find(twice, needle, len(noise) + 1) == twice.find(needle, len(noise) + 1)


def test_parts_larger_than_the_search_threshold_come_out_whole() -> None:
    from dicomweb.multipart import MEMMEM_FROM

    rng = random.Random(12)
    parts = [rng.randbytes(5 * MEMMEM_FROM + i) for i in range(3)]
    for step in (MEMMEM_FROM + 7, 4 * MEMMEM_FROM, len(body(parts))):
        got, _largest = parse(body(parts), step, chunk_size=1 << 20)
        assert [content for _headers, content in got] == parts

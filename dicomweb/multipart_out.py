"""Writing ``multipart/related`` payloads (RFC 2387, PS3.18 8.6.1.2).

Two ways: :func:`build` joins parts already in memory into one body (frames, bulk data,
renderings: small and known), and :class:`MultipartStream` writes parts one by one to a
chunked response, so a study of any size leaves the server without being held in memory.
The boundary is random (128 bits), so it cannot occur in a part by accident.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterable

from aiohttp import web

CRLF = b"\r\n"


def new_boundary() -> str:
    """A fresh boundary (token characters only, no quoting needed)."""
    return secrets.token_hex(16)


def content_type(part_type: str, boundary: str, transfer_syntax: str | None = None) -> str:
    """``multipart/related; type="…"; boundary=…`` (the type quoted, it holds a slash)."""
    value = f'multipart/related; type="{part_type}"'
    if transfer_syntax:
        value += f"; transfer-syntax={transfer_syntax}"
    return value + f"; boundary={boundary}"


def part_head(
    boundary: str, part_content_type: str, location: str | None, length: int | None
) -> bytes:
    """The delimiter and header fields of one part, up to the blank line."""
    lines = [f"--{boundary}", f"Content-Type: {part_content_type}"]
    if location:
        lines.append(f"Content-Location: {location}")
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def closing(boundary: str) -> bytes:
    """The close delimiter."""
    return f"--{boundary}--\r\n".encode("ascii")


def build(boundary: str, parts: Iterable[tuple[str, bytes, str | None]]) -> bytes:
    """One body of (content type, bytes, Content-Location or None) parts."""
    chunks: list[bytes] = []
    for part_content_type, body, location in parts:
        chunks.append(part_head(boundary, part_content_type, location, len(body)))
        chunks.append(body)
        chunks.append(CRLF)
    chunks.append(closing(boundary))
    return b"".join(chunks)


class MultipartStream:
    """A streamed multipart/related response: ``await start()``, parts, ``await finish()``."""

    def __init__(
        self,
        request: web.Request,
        part_type: str,
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.request = request
        self.boundary = new_boundary()
        self.response = web.StreamResponse(status=200, headers=headers)
        self.response.headers["Content-Type"] = content_type(part_type, self.boundary)
        self.response.enable_chunked_encoding()
        self.parts = 0

    async def start(self) -> None:
        """Send the status line and header fields."""
        await self.response.prepare(self.request)

    async def part(
        self,
        part_content_type: str,
        chunks: AsyncIterator[bytes] | Iterable[bytes],
        *,
        location: str | None = None,
        length: int | None = None,
    ) -> None:
        """Write one part whose body comes in ``chunks``."""
        await self.response.write(part_head(self.boundary, part_content_type, location, length))
        if isinstance(chunks, AsyncIterator):
            async for chunk in chunks:
                await self.response.write(chunk)
        else:
            for chunk in chunks:
                await self.response.write(chunk)
        await self.response.write(CRLF)
        self.parts += 1

    async def finish(self) -> web.StreamResponse:
        """Write the close delimiter and end the response."""
        await self.response.write(closing(self.boundary))
        await self.response.write_eof()
        return self.response

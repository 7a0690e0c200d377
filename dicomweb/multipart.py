"""A streaming reader of multipart/related bodies (RFC 2046 5.1, RFC 2387) for STOW-RS.

The body is read from the request stream in the chunks the connection delivers; a part's
content is handed on in pieces of about ``chunk_size`` bytes (to a spool file) and never
held whole. Memory per request is one piece plus the delimiter, whatever the size of a part
or of the body: a 2 GB upload costs the same memory as a 2 MB one.

Tolerant reading: the delimiter may be preceded by a bare LF instead of CRLF, a delimiter
line may carry transport padding (spaces, tabs), the preamble and epilogue are ignored.
A body that ends before the closing delimiter raises :class:`IncompleteBody`; the pieces of
the unfinished part already handed on belong to a part the caller must not keep.
"""

from __future__ import annotations

import ctypes
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from dicomweb.accept import parse_media_type
from vna.errors import BadRequest

#: Default size of the pieces a part's content is handed on in.
CHUNK_SIZE = 1 << 20
#: Most of a chunk buffered at a time for headers and delimiter lines.
MORE_STEP = 16 * 1024
#: Largest header block of one part.
MAX_HEADER_SIZE = 64 * 1024
#: Largest preamble (text before the first delimiter) read before giving up.
MAX_PREAMBLE = 64 * 1024
#: Largest epilogue (text after the closing delimiter) drained from the connection.
MAX_EPILOGUE = 64 * 1024
#: RFC 2046 5.1.1: 1 to 70 characters of bchars, not ending with a space.
BOUNDARY = re.compile(r"^[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]$")

#: Chunks at least this large are searched with the C library's memmem (see find).
MEMMEM_FROM = 32 * 1024

Reader = Callable[[], Awaitable[bytes]]
#: A piece of part content: a copy, or a view of a chunk as the connection delivered it.
Buffer = bytes | memoryview


class MultipartError(BadRequest):
    """The body is not a well-formed multipart body (HTTP 400)."""


class IncompleteBody(MultipartError):
    """The body ended (or the connection was lost) before the closing delimiter."""


def _load_memmem() -> Callable[..., int | None] | None:
    try:
        function = ctypes.CDLL(None).memmem
    except (OSError, AttributeError, TypeError):
        return None
    function.restype = ctypes.c_void_p
    function.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t]
    return function


_MEMMEM = _load_memmem()


def find(data: bytes, needle: bytes, start: int = 0) -> int:
    """``data.find(needle, start)``. A large chunk is searched by the C library's memmem,
    which skips ahead on random bytes (pixel data) about twice as fast as CPython's search
    and lets other threads run meanwhile (ctypes releases the GIL)."""
    length = len(data) - start
    if _MEMMEM is None or length < MEMMEM_FROM or type(data) is not bytes or not needle:
        return data.find(needle, start)
    base = ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value
    assert base is not None
    found = _MEMMEM(base + start, length, needle, len(needle))
    return -1 if found is None else found - base


@dataclass(frozen=True)
class PartHeaders:
    """The header fields of one part, names lower-cased."""

    number: int
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def content_type(self) -> str:
        return self.fields.get("content-type", "").strip()

    @property
    def media_type(self) -> str:
        """The part's media type without parameters, lower case ('' when absent)."""
        if not self.content_type:
            return ""
        try:
            return parse_media_type(self.content_type)[0]
        except BadRequest:
            return self.content_type.split(";", 1)[0].strip().lower()

    @property
    def content_location(self) -> str:
        return self.fields.get("content-location", "").strip()


def boundary_of(params: dict[str, str]) -> str:
    """The boundary parameter of a multipart media type, checked against RFC 2046 5.1.1.

    Raises:
        MultipartError: no boundary, or one that is not a valid boundary.
    """
    boundary = params.get("boundary")
    if boundary is None:
        raise MultipartError("the multipart Content-Type has no boundary parameter")
    if not BOUNDARY.match(boundary):
        raise MultipartError(f"the multipart boundary {boundary!r} is malformed (RFC 2046 5.1.1)")
    return boundary


class MultipartReader:
    """Parts of a multipart body, read from ``read`` (returns b'' at the end of the body).

    Use::

        while (part := await reader.next_part()) is not None:
            while piece := await reader.read_chunk():
                ...

    ``read`` may raise ConnectionError or an aiohttp payload error when the peer goes away;
    either is reported as :class:`IncompleteBody`.
    """

    def __init__(
        self,
        read: Reader,
        boundary: str,
        *,
        chunk_size: int = CHUNK_SIZE,
        max_header_size: int = MAX_HEADER_SIZE,
    ) -> None:
        self._read = read
        self._dash_boundary = b"--" + boundary.encode("ascii")
        self._delimiter = b"\n" + self._dash_boundary
        self._chunk_size = chunk_size
        self._max_header_size = max_header_size
        self._buf = bytearray()
        self._pending: tuple[bytes, int] | None = None  # a chunk's unread rest, and from where
        self._eof = False
        self._scan_from = 0
        self._state = "preamble"  # preamble | headers | body | end
        self._parts = 0
        #: Total bytes read from the body so far.
        self.bytes_read = 0

    @property
    def parts_started(self) -> int:
        return self._parts

    @property
    def in_part(self) -> bool:
        """True while the current part's content is not read to its end."""
        return self._state == "body"

    async def _more(self) -> bool:
        """Buffer more of the body (at most MORE_STEP bytes of a chunk: headers and
        delimiter lines need little, and the rest of the chunk is not copied); False at its
        end."""
        data, start = await self._next_data()
        if start >= len(data):
            return False
        stop = min(len(data), start + MORE_STEP)
        self._buf += memoryview(data)[start:stop]
        if stop < len(data):
            self._pending = (data, stop)
        return True

    async def _fill(self, size: int) -> bool:
        """Buffer at least ``size`` bytes; False when the body ends first."""
        while len(self._buf) < size:
            if not await self._more():
                return False
        return True

    async def next_part(self) -> PartHeaders | None:
        """Move to the next part and return its headers; None after the closing delimiter.

        The rest of the current part, if any, is skipped.

        Raises:
            MultipartError: a malformed body.
            IncompleteBody: the body ends before the closing delimiter.
        """
        if self._state == "body":
            while await self.read_chunk():
                pass
        if self._state == "preamble":
            await self._skip_preamble()
        if self._state == "end":
            return None
        headers = await self._read_headers()
        self._state = "body"
        self._scan_from = 0
        return headers

    async def read_chunk(self) -> bytes:
        """The next piece of the current part's content; b'' at its end.

        Raises:
            MultipartError: a malformed delimiter line.
            IncompleteBody: the body ends inside the part.
        """
        return b"".join(await self.read_pieces())

    async def read_pieces(self) -> list[Buffer]:
        """The next pieces of the current part's content, about ``chunk_size`` bytes in
        all (less at the part's end); an empty list at its end.

        The chunks the connection delivers are searched for the delimiter as they arrive
        and, when it is not in them, handed on as they are (views, not copies): a large
        part costs one pass over its bytes rather than a copy into a buffer and out again.

        Raises:
            MultipartError: a malformed delimiter line.
            IncompleteBody: the body ends inside the part.
        """
        if self._state != "body":
            return []
        delimiter = self._delimiter
        keep = len(delimiter)  # the tail kept back may hide a CR before the delimiter's LF
        out: list[Buffer] = []
        size = 0
        while True:
            buf = self._buf
            at = buf.find(delimiter, self._scan_from)
            if at >= 0:
                end = at - 1 if at > 0 and buf[at - 1] == 0x0D else at
                if end:
                    out.append(bytes(buf[:end]))
                del buf[: at + keep]
                self._scan_from = 0
                await self._after_delimiter()
                return out
            if len(buf) > keep:  # no delimiter in it: all but its tail is content
                cut = len(buf) - keep
                out.append(bytes(buf[:cut]))
                del buf[:cut]
                size += cut
            self._scan_from = 0
            if size >= self._chunk_size:
                return out
            data, start = await self._next_data()
            if start >= len(data):
                if out:
                    return out
                raise IncompleteBody(
                    f"the body ends inside part {self._parts} (no closing delimiter)"
                )
            view = memoryview(data)
            if len(data) - start <= 2 * keep or (
                delimiter in bytes(buf) + data[start : start + keep - 1]
            ):
                buf += view[start:]  # small, or a delimiter cut in two: find it in the buffer
                continue
            at = find(data, delimiter, start)
            if at >= 0:  # the part ends in this chunk, which is not copied either
                if at == start and buf and buf[-1] == 0x0D:
                    del buf[-1]  # the CR of the delimiter line
                if buf:
                    out.append(bytes(buf))
                    buf.clear()
                end = at - 1 if at > start and data[at - 1] == 0x0D else at
                if end > start:
                    out.append(view[start:end])
                if at + keep < len(data):
                    self._pending = (data, at + keep)
                self._scan_from = 0
                await self._after_delimiter()
                return out
            content = len(data) - keep
            if buf:
                out.append(bytes(buf))
                size += len(buf)
            out.append(view[start:content])
            size += content - start
            self._buf = bytearray(view[content:])

    async def _next_data(self) -> tuple[bytes, int]:
        """The next chunk of the body as delivered (counted) and where its unread bytes
        start; (b'', 0) at the end of the body."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            return pending
        if self._eof:
            return b"", 0
        try:
            data = await self._read()
        except MultipartError:
            raise
        except (ConnectionError, OSError) as exc:
            self._eof = True
            raise IncompleteBody(f"the connection was lost inside the body: {exc}") from exc
        except Exception as exc:  # aiohttp's payload errors (content length not reached…)
            if type(exc).__module__.startswith("aiohttp"):
                self._eof = True
                raise IncompleteBody(f"the body is incomplete: {exc}") from exc
            raise
        if not data:
            self._eof = True
            return b"", 0
        self.bytes_read += len(data)
        return data, 0

    async def _skip_preamble(self) -> None:
        """Find the first delimiter: at the very start of the body or after a line break."""
        while True:
            buf = self._buf
            if buf.startswith(self._dash_boundary):
                del buf[: len(self._dash_boundary)]
                await self._after_delimiter()
                return
            at = buf.find(self._delimiter)
            if at >= 0:
                del buf[: at + len(self._delimiter)]
                await self._after_delimiter()
                return
            if self.bytes_read > MAX_PREAMBLE:
                raise MultipartError("no multipart delimiter with the declared boundary found")
            if not await self._more():
                if self.bytes_read == 0:
                    raise MultipartError("the request body is empty")
                raise MultipartError("no multipart delimiter with the declared boundary found")

    async def _after_delimiter(self) -> None:
        """After ``--boundary``: ``--`` closes the body, else padding and a line break."""
        if not await self._fill(2):
            if self._buf.strip() == b"" and self._parts:
                raise IncompleteBody("the body ends after a delimiter, with no closing delimiter")
            raise IncompleteBody("the body ends inside a delimiter line")
        if self._buf.startswith(b"--"):
            self._state = "end"
            await self._drain_epilogue()
            return
        while True:
            stripped = self._buf.lstrip(b" \t")
            if stripped.startswith(b"\r\n") or stripped.startswith(b"\n"):
                skip = len(self._buf) - len(stripped) + (2 if stripped[:1] == b"\r" else 1)
                del self._buf[:skip]
                self._parts += 1
                self._state = "headers"
                return
            if stripped and stripped not in (b"\r",):
                raise MultipartError("malformed multipart delimiter line")
            if len(self._buf) > 1024:
                raise MultipartError("malformed multipart delimiter line")
            if not await self._more():
                raise IncompleteBody("the body ends inside a delimiter line")

    async def _read_headers(self) -> PartHeaders:
        fields: dict[str, str] = {}
        last = ""
        size = 0
        while True:
            line = await self._read_line()
            size += len(line) + 2
            if size > self._max_header_size:
                raise MultipartError(f"the headers of part {self._parts} are too long")
            if not line:
                return PartHeaders(self._parts, fields)
            text = line.decode("latin-1")
            if text[:1] in (" ", "\t") and last:  # obsolete line folding (RFC 5322 3.2.2)
                fields[last] += " " + text.strip()
                continue
            name, colon, value = text.partition(":")
            if not colon or not name.strip() or name != name.strip():
                raise MultipartError(f"malformed header line in part {self._parts}: {text[:80]!r}")
            last = name.lower()
            fields[last] = value.strip()

    async def _read_line(self) -> bytes:
        while True:
            at = self._buf.find(b"\n")
            if at >= 0:
                line = bytes(self._buf[:at])
                del self._buf[: at + 1]
                return line.removesuffix(b"\r")
            if len(self._buf) > self._max_header_size:
                raise MultipartError(f"the headers of part {self._parts} are too long")
            if not await self._more():
                raise IncompleteBody(f"the body ends inside the headers of part {self._parts}")

    async def _drain_epilogue(self) -> None:
        """Read what follows the closing delimiter (ignored) so the connection stays usable."""
        self._buf.clear()
        drained = 0
        while drained <= MAX_EPILOGUE and await self._more():
            drained += len(self._buf)
            self._buf.clear()

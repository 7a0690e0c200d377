"""The object store protocol shared by the filesystem and S3 back ends.

Keys are opaque to callers: the archive makes them (``[A-Za-z0-9][A-Za-z0-9._-]*``, at most
200 characters, no slashes) and records them with size and checksum in its index; each back
end decides how to lay them out. A put is atomic: a reader sees the whole object or nothing.
This package imports nothing of the archive's, so its errors are its own.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

KEY_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
CHUNK_SIZE = 1024 * 1024


class StoreError(Exception):
    """The store failed to do what was asked (I/O error, unreachable server)."""


class ObjectNotFound(StoreError):
    """No object under this key."""


class StoreFull(StoreError):
    """No space left in the store."""


class InvalidKey(StoreError):
    """The key does not follow KEY_PATTERN."""


def check_key(key: str) -> str:
    """Return the key unchanged, or raise InvalidKey."""
    if not KEY_PATTERN.fullmatch(key):
        raise InvalidKey(f"invalid object key {key!r}")
    return key


@runtime_checkable
class ObjectStore(Protocol):
    """What the archive needs from a place that keeps bytes."""

    #: A description of where objects go, without credentials (for logs and `vna stats`).
    location: str

    def put_file(self, key: str, path: Path, *, move: bool = False) -> int:
        """Store the file's bytes under ``key`` atomically and durably; return its size.

        With ``move=True`` the store may take the file (rename it) instead of copying; the
        caller must not use ``path`` afterwards. Overwrites an existing object atomically.
        """
        ...

    def put_stream(self, key: str, stream: BinaryIO, size: int | None = None) -> int:
        """Store everything read from ``stream`` under ``key``; return the byte count.

        Memory stays bounded whatever the size (chunked copy or multipart upload).
        """
        ...

    def open(self, key: str) -> BinaryIO:
        """A readable binary file object over the whole object (close it when done).

        Raises:
            ObjectNotFound: no such key.
        """
        ...

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        """Exactly ``length`` bytes from ``offset`` (fewer only at the end of the object).

        Raises:
            ObjectNotFound: no such key.
        """
        ...

    def iter_chunks(
        self, key: str, offset: int = 0, length: int | None = None, chunk_size: int = CHUNK_SIZE
    ) -> Iterator[bytes]:
        """The object's bytes from ``offset`` (to the end or ``length`` bytes) in chunks.

        Raises:
            ObjectNotFound: no such key (raised on the first ``next``).
        """
        ...

    def size(self, key: str) -> int:
        """Size in bytes.

        Raises:
            ObjectNotFound: no such key.
        """
        ...

    def exists(self, key: str) -> bool:
        """Whether an object is stored under ``key``."""
        ...

    def delete(self, key: str) -> None:
        """Remove the object; a missing key is not an error."""
        ...

    def keys(self) -> Iterator[str]:
        """Every key in the store (order unspecified); used by `vna verify`."""
        ...

    def close(self) -> None:
        """Release connections and handles."""
        ...

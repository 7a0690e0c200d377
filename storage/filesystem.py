"""An object store in a local directory tree.

Objects live at ``root/<key[0:2]>/<key[2:4]>/<key>`` so that no directory grows to millions
of entries. Every write goes to a temporary file in ``root/.tmp`` (same filesystem as the
objects), is flushed to disk and then renamed into place, so a reader sees either the old
object or the whole new one, and a crash never leaves a truncated object under its key. The
one exception is a file reserved for an object being received (storage/reserve.py): it has
no index row until it is whole and flushed, and a crash's leftovers are journaled.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, NoReturn, TypeVar

from storage.asyncflush import Flush
from storage.base import CHUNK_SIZE, ObjectNotFound, StoreError, StoreFull
from storage.layout import is_valid_key, shard_parts, sharded_name, valid_key
from storage.reserve import JOURNAL_PREFIX, Abandoned, Reservations, abandoned, journaled_keys

__all__ = ["STALE_TEMP_SECONDS", "TEMP_DIR_NAME", "FilesystemStore"]

#: Name of the directory (directly under the root) that holds writes in progress.
TEMP_DIR_NAME = ".tmp"
#: Temporary files older than this are leftovers of a crash and are removed on start.
STALE_TEMP_SECONDS = 3600.0

_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_MISSING_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR})

_T = TypeVar("_T")


def _raise_store_error(exc: OSError, what: str) -> NoReturn:
    """Translate an OSError into the store's own error classes."""
    if exc.errno in _FULL_ERRNOS:
        raise StoreFull(f"{what}: {exc.strerror or exc}") from exc
    raise StoreError(f"{what}: {exc.strerror or exc}") from exc


def _write_all(fd: int, data: bytes | memoryview) -> None:
    """Write every byte: os.write may write less than asked (signals, pipes, quotas)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_dir(path: Path) -> None:
    """Make a rename or unlink in ``path`` durable (the directory entry is data too)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FilesystemStore:
    """An :class:`~storage.base.ObjectStore` over a directory; see the module docstring."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).absolute()
        self._tmp = self.root / TEMP_DIR_NAME
        self.location = "file://" + str(self.root)
        try:
            self._tmp.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            _raise_store_error(exc, f"cannot create store directory {self.root}")
        self._reservations = Reservations(self._tmp, self.path_for)
        self.remove_stale_temp_files()

    # -- layout ------------------------------------------------------------------------------

    def path_for(self, key: str) -> Path:
        """Where the object for ``key`` lives (whether or not it exists)."""
        return self.root / sharded_name(key)

    def remove_stale_temp_files(self, max_age: float = STALE_TEMP_SECONDS) -> int:
        """Delete temporary files a crashed writer left behind; return how many went.

        Only files older than ``max_age`` go, so writes in progress in other processes that
        share the store are left alone.
        """
        removed = 0
        cutoff = time.time() - max_age
        try:
            entries = list(os.scandir(self._tmp))
        except FileNotFoundError:
            return 0
        except OSError as exc:
            _raise_store_error(exc, f"cannot list {self._tmp}")
        for entry in entries:
            if entry.name.startswith(JOURNAL_PREFIX):
                continue  # a journal of reserved files: see abandoned_reservations
            try:
                if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
            except (FileNotFoundError, IsADirectoryError, PermissionError):
                continue
            except OSError as exc:
                _raise_store_error(exc, f"cannot remove stale temporary file {entry.path}")
        return removed

    # -- reserved files (storage/reserve.py) -------------------------------------------------

    def reserve(self, new_key: Callable[[], str]) -> Path:
        """An empty file under a new key (made by ``new_key``), its name already durable: an
        object written into it and flushed is stored, without a rename or a folder flush.
        Its key stays undecided until :meth:`settle`.

        Raises:
            StoreError: the file (or its batch) could not be created.
        """
        try:
            return self._reservations.take(new_key)
        except OSError as exc:
            _raise_store_error(exc, "cannot reserve object files")

    def reserved_key(self, path: str | os.PathLike[str]) -> str | None:
        """The key of a file this process reserved and took, else None."""
        return self._reservations.key_of(path)

    def unreserve(self, path: str | os.PathLike[str], *, used: bool) -> None:
        """Give back a reserved file that will not be ingested: one nothing was written to
        (``used=False``) is kept for another object, any other is removed."""
        if used:
            self._reservations.drop(path)
        else:
            self._reservations.give_back(path)

    def settle(self, key: str) -> None:
        """A reserved key is decided: its object is indexed, or its file is removed."""
        self._reservations.settle(key)

    def abandoned_reservations(self) -> list[Abandoned]:
        """Batches of reserved files whose process ended with keys undecided."""
        return abandoned(self._tmp)

    def reserved_keys(self) -> set[str]:
        """Every key of a reserved batch still journaled (undecided, or not yet recovered)."""
        return journaled_keys(self._tmp)

    # -- writes ------------------------------------------------------------------------------

    def put_file(
        self,
        key: str,
        path: Path,
        *,
        move: bool = False,
        flush_folder: bool = True,
        flushed: bool = False,
    ) -> int:
        """Store the file under ``key``; with ``move=True`` rename it in when possible.

        With ``flush_folder=False`` the object's bytes are durable on return but its folder
        entry is not until :meth:`flush_folders` is called for it (or a :meth:`folder_flush`
        is awaited): several objects put together then share one flush of their folder
        (keys made together share one). ``flushed=True``: the caller has already flushed
        the file's bytes to disk (fsync), so a rename does not do it again.
        """
        dest = self.path_for(key)
        source = Path(path)
        if move:
            moved = self._try_move(source, dest, flush_folder, flushed)
            if moved is not None:
                return moved
        try:
            src = open(source, "rb")  # noqa: SIM115 - closed below, errors mapped separately
        except OSError as exc:
            _raise_store_error(exc, f"cannot read {source}")
        with src:
            size = self._write_atomically(
                dest,
                lambda: self._guard(lambda: src.read(CHUNK_SIZE), f"cannot read {source}"),
                None,
                flush_folder,
            )
        if move:
            try:
                os.unlink(source)
            except FileNotFoundError:
                pass
            except OSError as exc:
                _raise_store_error(exc, f"stored {key!r} but cannot remove {source}")
        return size

    def put_stream(self, key: str, stream: BinaryIO, size: int | None = None) -> int:
        """Copy the stream to a temporary file in chunks, then rename it into place."""
        dest = self.path_for(key)
        if size is None:
            return self._write_atomically(dest, lambda: stream.read(CHUNK_SIZE), None)
        if size < 0:
            raise ValueError("size must not be negative")
        remaining = size

        def read_chunk() -> bytes:
            # Never read past ``size``: the caller may hand us a longer stream (a socket).
            nonlocal remaining
            chunk = stream.read(min(CHUNK_SIZE, remaining)) if remaining else b""
            remaining -= len(chunk)
            return chunk

        return self._write_atomically(dest, read_chunk, size)

    def flush_folders(self, keys: Iterable[str]) -> None:
        """Make durable the folder entries of objects put with ``flush_folder=False``:
        one flush per distinct folder."""
        for folder in sorted({self.path_for(key).parent for key in keys}):
            try:
                _fsync_dir(folder)
            except OSError as exc:
                _raise_store_error(exc, f"cannot flush {folder}")

    def folder_flush(self, key: str) -> Flush:
        """Start flushing the folder entry of an object put with ``flush_folder=False``;
        it is durable once the returned flush is awaited.

        Raises:
            StoreError: the folder cannot be opened.
        """
        folder = self.path_for(key).parent
        try:
            return Flush(folder, folder=True)
        except OSError as exc:
            _raise_store_error(exc, f"cannot flush {folder}")

    def _try_move(
        self, source: Path, dest: Path, flush_folder: bool = True, flushed: bool = False
    ) -> int | None:
        """Rename ``source`` onto ``dest`` durably; None when it must be copied instead."""
        try:
            st = os.lstat(source)
        except OSError as exc:
            _raise_store_error(exc, f"cannot read {source}")
        if not stat.S_ISREG(st.st_mode):
            # A symlink must not be renamed into the store: copy what it points to instead.
            return None
        try:
            if not flushed:
                # The caller wrote the file: make its bytes durable before they become visible.
                fd = os.open(source, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            self._ensure_parent(dest)
            try:
                os.replace(source, dest)
            except OSError as exc:
                if exc.errno == errno.EXDEV:
                    return None
                raise
            # Only the new entry must be durable: the source's folder (a spool) may lose its
            # removal in a crash, which leaves at worst a spooled file to clean up.
            if flush_folder:
                _fsync_dir(dest.parent)
        except OSError as exc:
            _raise_store_error(exc, f"cannot move {source} to {dest}")
        return st.st_size

    def _write_atomically(
        self,
        dest: Path,
        read_chunk: Callable[[], bytes],
        expected: int | None,
        flush_folder: bool = True,
    ) -> int:
        """Write chunks to a temp file, fsync it, rename it to ``dest``, fsync the directory
        (unless ``flush_folder`` is false: see put_file).

        Errors of ``read_chunk`` (the caller's data source) propagate unchanged; errors of
        the store's own file operations become StoreError/StoreFull. Either way nothing is
        left behind.
        """
        fd, tmp_name = self._guard(lambda: self._mkstemp(dest.name), f"cannot write {dest}")
        committed = False
        try:
            total = 0
            fd_open = True
            try:
                while True:
                    chunk = read_chunk()
                    if not chunk:
                        break
                    try:
                        _write_all(fd, chunk)
                    except OSError as exc:
                        _raise_store_error(exc, f"cannot write {dest}")
                    total += len(chunk)
                if expected is not None and total != expected:
                    raise StoreError(
                        f"stream for {dest.name} ended after {total} of {expected} bytes"
                    )
                self._guard(lambda: os.fsync(fd), f"cannot flush {dest}")
                fd_open = False
                # close() can report a deferred write error (NFS, quotas): it counts too.
                self._guard(lambda: os.close(fd), f"cannot write {dest}")
            finally:
                if fd_open:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            self._guard(lambda: self._ensure_parent(dest), f"cannot create {dest.parent}")
            self._guard(lambda: os.replace(tmp_name, dest), f"cannot store {dest}")
            committed = True
            if flush_folder:
                self._guard(lambda: _fsync_dir(dest.parent), f"cannot flush {dest.parent}")
            return total
        finally:
            if not committed:
                with contextlib.suppress(OSError):
                    os.unlink(tmp_name)

    def _mkstemp(self, name: str) -> tuple[int, str]:
        """A new temporary file for ``name``; recreates ``.tmp`` if someone removed it."""
        try:
            return tempfile.mkstemp(prefix=name + ".", suffix=".part", dir=self._tmp)
        except FileNotFoundError:
            self._tmp.mkdir(parents=True, exist_ok=True)
            return tempfile.mkstemp(prefix=name + ".", suffix=".part", dir=self._tmp)

    def _ensure_parent(self, dest: Path) -> None:
        """Create the shard directories, making their creation durable too."""
        parent = dest.parent
        if parent.is_dir():
            return
        parent.mkdir(parents=True, exist_ok=True)
        _fsync_dir(parent.parent)
        _fsync_dir(self.root)

    @staticmethod
    def _guard(action: Callable[[], _T], what: str) -> _T:
        """Run a filesystem action, mapping OSError to the store's errors."""
        try:
            return action()
        except OSError as exc:
            _raise_store_error(exc, what)

    # -- reads -------------------------------------------------------------------------------

    @staticmethod
    def _pread(fd: int, size: int, offset: int, key: str) -> bytes:
        try:
            return os.pread(fd, size, offset)
        except OSError as exc:
            _raise_store_error(exc, f"cannot read object {key!r}")

    def _open_fd(self, key: str) -> int:
        path = self.path_for(key)
        try:
            return os.open(path, os.O_RDONLY)
        except OSError as exc:
            if exc.errno in _MISSING_ERRNOS or exc.errno == errno.EISDIR:
                raise ObjectNotFound(f"no object {key!r} in {self.location}") from exc
            _raise_store_error(exc, f"cannot open {path}")

    def open(self, key: str) -> BinaryIO:
        """A regular (seekable) file object over the object."""
        fd = self._open_fd(key)
        try:
            return os.fdopen(fd, "rb")
        except OSError as exc:
            os.close(fd)
            _raise_store_error(exc, f"cannot open object {key!r}")

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        """Read with os.pread, looping because pread may return fewer bytes than asked."""
        if offset < 0 or length < 0:
            raise ValueError("offset and length must not be negative")
        fd = self._open_fd(key)
        try:
            parts: list[bytes] = []
            got = 0
            while got < length:
                part = self._pread(fd, length - got, offset + got, key)
                if not part:
                    break
                parts.append(part)
                got += len(part)
            return b"".join(parts)
        finally:
            os.close(fd)

    def iter_chunks(
        self, key: str, offset: int = 0, length: int | None = None, chunk_size: int = CHUNK_SIZE
    ) -> Iterator[bytes]:
        """Stream a byte range without holding more than one chunk."""
        if offset < 0 or (length is not None and length < 0):
            raise ValueError("offset and length must not be negative")
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        valid_key(key)
        return self._chunks(key, offset, length, chunk_size)

    def _chunks(
        self, key: str, offset: int, length: int | None, chunk_size: int
    ) -> Iterator[bytes]:
        fd = self._open_fd(key)
        try:
            position = offset
            remaining = length
            while remaining is None or remaining > 0:
                want = chunk_size if remaining is None else min(chunk_size, remaining)
                chunk = self._pread(fd, want, position, key)
                if not chunk:
                    return
                position += len(chunk)
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk
        finally:
            os.close(fd)

    def size(self, key: str) -> int:
        path = self.path_for(key)
        try:
            st = os.stat(path)
        except OSError as exc:
            if exc.errno in _MISSING_ERRNOS:
                raise ObjectNotFound(f"no object {key!r} in {self.location}") from exc
            _raise_store_error(exc, f"cannot stat {path}")
        if not stat.S_ISREG(st.st_mode):
            raise ObjectNotFound(f"no object {key!r} in {self.location}")
        return st.st_size

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except ObjectNotFound:
            return False
        return True

    def delete(self, key: str) -> None:
        """Unlink the object and make the removal durable; a missing key is fine."""
        path = self.path_for(key)
        try:
            os.unlink(path)
        except OSError as exc:
            if exc.errno in _MISSING_ERRNOS:
                return
            _raise_store_error(exc, f"cannot delete {path}")
        self._guard(lambda: _fsync_dir(path.parent), f"cannot flush {path.parent}")

    def keys(self) -> Iterator[str]:
        """Walk the two shard levels; skip ``.tmp`` and anything not laid out by this store."""
        for first in self._subdirs(self.root, skip_hidden=True):
            for second in self._subdirs(self.root / first, skip_hidden=False):
                folder = self.root / first / second
                try:
                    entries = list(os.scandir(folder))
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    _raise_store_error(exc, f"cannot list {folder}")
                for entry in entries:
                    name = entry.name
                    if (
                        is_valid_key(name)
                        and shard_parts(name) == (first, second)
                        and entry.is_file(follow_symlinks=False)
                    ):
                        yield name

    @staticmethod
    def _subdirs(folder: Path, *, skip_hidden: bool) -> list[str]:
        """Names of two-character subdirectories.

        At the top level hidden ones (``.tmp``) are skipped; a second-level shard may start
        with a dot, since keys may have one in their third character.
        """
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            return []
        except OSError as exc:
            _raise_store_error(exc, f"cannot list {folder}")
        return sorted(
            entry.name
            for entry in entries
            if not (skip_hidden and entry.name.startswith("."))
            and len(entry.name) == 2
            and entry.is_dir(follow_symlinks=False)
        )

    def close(self) -> None:
        """Remove the reserved files never taken (every other operation opens and closes its
        own descriptors)."""
        self._reservations.close()

    def __repr__(self) -> str:
        return f"FilesystemStore({str(self.root)!r})"

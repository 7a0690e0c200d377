"""Object files created ahead of their objects, so that one folder flush serves a batch.

A received object written to a spool file and renamed into its folder needs two flushes
before it may be acknowledged: its bytes, and its folder (a new name is data of the folder).
The second costs as much as the first. Here the files are created empty, a batch at a time,
under the keys their objects will get, and one flush of their folder makes every name of
the batch durable; an object received straight into such a file then needs only its own
flush, and no rename.

A crash leaves reserved files that were never indexed (empty, or partly written). So every
batch is first written to a journal in the store's ``.tmp`` folder, made durable before any
of its files exists, and locked (``flock``) by its process for as long as one of its keys
is undecided. :meth:`Reservations.abandoned` gives the journals no live process holds; the
archive, which knows the index, removes the files of their keys that have no index row.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

#: Files created per batch (and per folder flush).
BATCH = 32
#: Journals of batches: ``reserved-<random>``; ``reserving-`` while being written.
JOURNAL_PREFIX = "reserved-"
_PARTIAL_PREFIX = "reserving-"


def _fsync_path(path: Path, *, folder: bool = False) -> None:
    flags = os.O_RDONLY | os.O_CLOEXEC | (getattr(os, "O_DIRECTORY", 0) if folder else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class _Batch:
    journal: Path
    fd: int  # the journal, locked while a key of the batch is undecided
    undecided: int


@dataclass
class Abandoned:
    """The journal of a batch whose process ended before every key was decided. Locked by
    this process until :meth:`finish`."""

    journal: Path
    keys: list[str]
    _fd: int = field(repr=False)

    def finish(self) -> None:
        """Remove the journal (every key it names has been dealt with)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.journal)
        self.release()

    def release(self) -> None:
        """Leave the journal for a later recovery."""
        with contextlib.suppress(OSError):
            os.close(self._fd)


class Reservations:
    """The reserved files of one process in one filesystem store (thread-safe)."""

    def __init__(self, tmp: Path, path_for: Callable[[str], Path]) -> None:
        self._tmp = tmp
        self._path_for = path_for
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._free: list[tuple[str, Path]] = []  # (key, its file)
        self._in_use: dict[str, str] = {}  # path -> key
        self._batch_of: dict[str, _Batch] = {}  # every undecided key, free or in use

    def take(self, new_key: Callable[[], str]) -> Path:
        """The path of an empty object file whose name is durable; its key is undecided
        until :meth:`settle` (or :meth:`give_back`).

        Raises:
            OSError: a file, the journal or a flush failed.
        """
        with self._lock:
            self._forget_if_forked()
            if not self._free:
                self._add_batch(new_key)
            key, path = self._free.pop()
            self._in_use[str(path)] = key
            return path

    def key_of(self, path: str | os.PathLike[str]) -> str | None:
        """The key of a reserved file this process has taken, else None."""
        return self._in_use.get(str(path)) if os.getpid() == self._pid else None

    def give_back(self, path: str | os.PathLike[str]) -> None:
        """A taken file that nothing was written to goes back to the free ones."""
        with self._lock:
            key = self._in_use.pop(str(path), None)
            if key is not None:
                self._free.append((key, Path(path)))

    def drop(self, path: str | os.PathLike[str]) -> None:
        """A taken file will not be ingested: remove it."""
        with self._lock:
            key = self._in_use.pop(str(path), None)
            if key is None:
                return
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            self._decided(key)

    def settle(self, key: str) -> None:
        """The key is decided: its object is indexed, or its file is removed."""
        with self._lock:
            for path, taken in list(self._in_use.items()):
                if taken == key:
                    del self._in_use[path]
                    break
            self._decided(key)

    def close(self) -> None:
        """Remove the files never taken; a batch with keys still in use keeps its journal
        (a later recovery decides them)."""
        with self._lock:
            if os.getpid() != self._pid:
                return
            free, self._free = self._free, []
            for key, path in free:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                self._decided(key)

    def _decided(self, key: str) -> None:
        batch = self._batch_of.pop(key, None)
        if batch is None:
            return
        batch.undecided -= 1
        if batch.undecided == 0:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(batch.journal)
            with contextlib.suppress(OSError):
                os.close(batch.fd)

    def _forget_if_forked(self) -> None:
        """A forked child must not hand out its parent's files (nor release its journals)."""
        if os.getpid() != self._pid:
            self._pid = os.getpid()
            self._free = []
            self._in_use = {}
            self._batch_of = {}

    def _add_batch(self, new_key: Callable[[], str]) -> None:
        keys = [new_key() for _ in range(BATCH)]
        self._tmp.mkdir(parents=True, exist_ok=True)
        name = uuid.uuid4().hex
        partial = self._tmp / f"{_PARTIAL_PREFIX}{name}"
        journal = self._tmp / f"{JOURNAL_PREFIX}{name}"
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            data = "".join(key + "\n" for key in keys).encode("ascii")
            written = 0
            while written < len(data):
                written += os.write(fd, data[written:])
            os.fsync(fd)
            os.rename(partial, journal)  # under its final name only once complete
            _fsync_path(self._tmp, folder=True)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(partial)
            raise
        batch = _Batch(journal, fd, 0)
        created: list[tuple[str, Path]] = []
        try:
            folders: set[Path] = set()
            for key in keys:
                path = self._path_for(key)
                if path.parent not in folders and not path.parent.is_dir():
                    path.parent.mkdir(parents=True, exist_ok=True)
                    _fsync_path(path.parent.parent, folder=True)
                    _fsync_path(path.parent.parent.parent, folder=True)
                folders.add(path.parent)
                file_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
                os.close(file_fd)
                created.append((key, path))
            for folder in folders:
                _fsync_path(folder, folder=True)
        except BaseException:
            for _key, path in created:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(journal)
            os.close(fd)
            raise
        batch.undecided = len(keys)
        for key in keys:
            self._batch_of[key] = batch
        self._free.extend(reversed(created))


def abandoned(tmp: Path) -> list[Abandoned]:
    """Journals no live process holds (each locked by this process once returned)."""
    found: list[Abandoned] = []
    try:
        names = sorted(os.listdir(tmp))
    except FileNotFoundError:
        return found
    for name in names:
        if not name.startswith(JOURNAL_PREFIX):
            continue
        path = tmp / name
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)  # its process is alive
            continue
        if not os.path.exists(path):  # finished by its process meanwhile
            os.close(fd)
            continue
        with os.fdopen(os.dup(fd), "rb") as journal:
            keys = [line.strip().decode("ascii", "replace") for line in journal if line.strip()]
        found.append(Abandoned(path, keys, fd))
    return found


def journaled_keys(tmp: Path) -> set[str]:
    """Every key a journal names, whether its process is alive or not."""
    keys: set[str] = set()
    try:
        names = os.listdir(tmp)
    except FileNotFoundError:
        return keys
    for name in names:
        if name.startswith(JOURNAL_PREFIX):
            with contextlib.suppress(FileNotFoundError):
                text = (tmp / name).read_text("ascii", "replace")
                keys.update(line.strip() for line in text.splitlines() if line.strip())
    return keys

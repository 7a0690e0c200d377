"""fsync started now, awaited later: the disk works while the caller goes on.

A small object's ingest waits for two flushes (its bytes, then its folder entry), each a
disk round trip of 0.1-0.3 ms, longer than parsing and indexing the object. Started early
and awaited only where durability is required, they overlap that work instead of adding to
it. POSIX AIO (``aio_fsync``) is used because glibc runs the flush on a thread of its own
that never needs Python's interpreter lock, so the flush starts at once even while the
calling thread is busy in Python. Where that is not available (another C library, a 32-bit
build) a file's data only starts going to disk early (Linux's sync_file_range), and the
flush itself happens, synchronously, when it is awaited.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import platform
import threading
from typing import Any

#: struct aiocb of 64-bit glibc: aio_fildes at 0, aio_sigevent.sigev_notify at 44, 168
#: bytes in all (a larger buffer is harmless).
_AIOCB_SIZE = 256
_FILDES_OFFSET = 0
_NOTIFY_OFFSET = 44
_SIGEV_NONE = 1


def _load_libc() -> Any:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    if ctypes.sizeof(ctypes.c_void_p) != 8:
        return None
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        for name in ("aio_fsync", "aio_error", "aio_return", "aio_suspend"):
            getattr(libc, name)
    except (OSError, AttributeError):
        return None
    libc.aio_fsync.argtypes = [ctypes.c_int, ctypes.c_void_p]
    libc.aio_error.argtypes = [ctypes.c_void_p]
    libc.aio_return.argtypes = [ctypes.c_void_p]
    libc.aio_return.restype = ctypes.c_ssize_t
    libc.aio_suspend.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
    return libc


_LIBC = _load_libc()


def _load_sync_file_range() -> Any:
    """Linux's sync_file_range(2) from the C library, or None where there is none."""
    if platform.system() != "Linux":
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_SYNC_FILE_RANGE = _load_sync_file_range()
_SYNC_FILE_RANGE_WRITE = 2  # start writing dirty pages back; do not wait


def available() -> bool:
    """Whether flushes really run in the background here."""
    return _LIBC is not None


class Flush:
    """An fsync of one file or folder, started on construction; ``wait`` makes it durable.

    The flush owns the descriptor it opened and closes it in ``wait`` or ``close``.

    Raises (from the constructor):
        OSError: the path cannot be opened.
    """

    def __init__(self, path: str | os.PathLike[str], *, folder: bool = False) -> None:
        flags = os.O_RDONLY | os.O_CLOEXEC
        if folder:
            flags |= getattr(os, "O_DIRECTORY", 0)
        _reap()
        self._fd: int | None = os.open(path, flags)
        self._lock = threading.RLock()
        self._cb: Any = None
        self._error: OSError | None = None
        if _LIBC is not None:
            cb = ctypes.create_string_buffer(_AIOCB_SIZE)
            ctypes.c_int.from_buffer(cb, _FILDES_OFFSET).value = self._fd
            ctypes.c_int.from_buffer(cb, _NOTIFY_OFFSET).value = _SIGEV_NONE
            if _LIBC.aio_fsync(os.O_SYNC, cb) == 0:
                self._cb = cb  # running; otherwise wait() flushes synchronously
        if self._cb is None and not folder and _SYNC_FILE_RANGE is not None:
            # a head start only (wait() still flushes); its errors are wait()'s to report
            _SYNC_FILE_RANGE(self._fd, 0, 0, _SYNC_FILE_RANGE_WRITE)

    def wait(self) -> None:
        """Return once the flush is done, and close the descriptor (idempotent).

        Raises:
            OSError: the flush failed (the data may not be on disk).
        """
        with self._lock:
            if self._fd is None:
                if self._error is not None:
                    raise self._error
                return
            try:
                if self._cb is None:
                    os.fsync(self._fd)
                else:
                    self._await_aio()
            except OSError as exc:
                self._error = exc
                raise
            finally:
                fd, self._fd = self._fd, None
                with contextlib.suppress(OSError):
                    os.close(fd)

    def close(self) -> None:
        """Give the flush up without waiting for it (an object found to be a duplicate):
        a flush still running is finished and its descriptor closed later."""
        with self._lock:
            if self._fd is None:
                return
            if self._cb is None:  # nothing runs in the background: nothing to wait for
                fd, self._fd = self._fd, None
                with contextlib.suppress(OSError):
                    os.close(fd)
                return
            if not self._running():
                self._finish_quietly()
                return
        with _abandoned_lock:
            _abandoned.append(self)
            overflow = _abandoned[:-_ABANDONED_MAX] if len(_abandoned) > _ABANDONED_MAX else []
            del _abandoned[: len(overflow)]
        for flush in overflow:  # the disk is far behind: wait rather than pile up
            flush._finish_quietly()

    def _running(self) -> bool:
        cb = self._cb
        return cb is not None and _LIBC is not None and _LIBC.aio_error(cb) == errno.EINPROGRESS

    def _finish_quietly(self) -> None:
        with contextlib.suppress(OSError):
            self.wait()

    def _await_aio(self) -> None:
        cb = self._cb
        if _LIBC is None:  # started before this process was forked: its AIO thread is gone
            self._cb = None
            assert self._fd is not None
            os.fsync(self._fd)
            return
        waiting = (ctypes.c_void_p * 1)(ctypes.addressof(cb))
        while (code := _LIBC.aio_error(cb)) == errno.EINPROGRESS:
            _LIBC.aio_suspend(waiting, 1, None)  # an interrupted wait just loops
        self._cb = None
        if _LIBC.aio_return(cb) != 0:
            raise OSError(code, f"fsync failed: {os.strerror(code)}")

    def __del__(self) -> None:
        # dropped without close(): glibc still writes the result into the control block, so
        # a flush that runs is kept (given up) until it finishes
        if getattr(self, "_cb", None) is not None and getattr(self, "_fd", None) is not None:
            with contextlib.suppress(Exception):
                self.close()

    def __enter__(self) -> Flush:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: Flushes given up while still running (see Flush.close), finished by later flushes.
_abandoned: list[Flush] = []
_abandoned_lock = threading.Lock()
#: Most flushes left running at once; beyond it, giving one up waits for the oldest.
_ABANDONED_MAX = 64


def _reap() -> None:
    """Close the descriptors of given-up flushes that have finished."""
    if not _abandoned:
        return
    with _abandoned_lock:
        done = [flush for flush in _abandoned if not flush._running()]
        for flush in done:
            _abandoned.remove(flush)
    for flush in done:
        flush._finish_quietly()


def _after_fork_in_child() -> None:
    """A forked child flushes synchronously. glibc's AIO threads are not copied into it,
    while its bookkeeping may say an idle one is waiting: a request there could wait
    forever. Flushes given up by the parent are the parent's business."""
    global _LIBC, _abandoned, _abandoned_lock
    _LIBC = None
    for flush in _abandoned:
        fd, flush._fd, flush._cb = flush._fd, None, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
    _abandoned = []
    _abandoned_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

"""Flushes started early and awaited later (storage.asyncflush)."""

from __future__ import annotations

import errno
import os
import platform
import time
from pathlib import Path

import pytest

from storage import asyncflush
from storage.asyncflush import Flush


def _open_descriptors() -> int:
    """Open descriptors, once the flushes given up by earlier tests have been closed."""
    deadline = time.monotonic() + 10
    while asyncflush._abandoned and time.monotonic() < deadline:
        asyncflush._reap()
        time.sleep(0.005)
    return len(os.listdir("/proc/self/fd"))


needs_proc = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="no /proc")


def test_runs_in_the_background_on_glibc() -> None:
    """On Linux with glibc (the supported servers) the flush really overlaps the caller's
    work; elsewhere it falls back to a plain fsync when awaited."""
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert asyncflush.available()


@needs_proc
@pytest.mark.parametrize("background", [True, False])
def test_wait_flushes_and_closes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, background: bool
) -> None:
    if not background:
        monkeypatch.setattr(asyncflush, "_LIBC", None)
    path = tmp_path / "object"
    path.write_bytes(b"x" * 10_000)
    before = _open_descriptors()
    flush = Flush(path)
    assert _open_descriptors() == before + 1
    flush.wait()
    flush.wait()  # idempotent
    assert _open_descriptors() == before
    with Flush(tmp_path, folder=True) as folder:
        folder.wait()
    assert path.read_bytes() == b"x" * 10_000


@pytest.mark.parametrize("background", [True, False])
def test_a_failed_flush_raises_when_awaited(
    monkeypatch: pytest.MonkeyPatch, background: bool
) -> None:
    """/dev/null cannot be synchronised (EINVAL): the error reaches whoever waits, every
    time they wait, so nothing is acknowledged as durable."""
    if not background:
        monkeypatch.setattr(asyncflush, "_LIBC", None)
    flush = Flush("/dev/null")
    for _ in range(2):
        with pytest.raises(OSError) as caught:
            flush.wait()
        assert caught.value.errno == errno.EINVAL


def test_a_missing_file_fails_at_once(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        Flush(tmp_path / "gone")


@needs_proc
def test_flushes_given_up_leave_no_descriptor_behind(tmp_path: Path) -> None:
    """close() does not wait (a duplicate is answered at once), but the descriptors of
    flushes given up are closed once they finish."""
    before = _open_descriptors()
    for i in range(20):
        path = tmp_path / f"dup{i}"
        path.write_bytes(os.urandom(5000))
        Flush(path).close()
        path.unlink()
    deadline = time.monotonic() + 10
    while _open_descriptors() > before and time.monotonic() < deadline:
        Flush(tmp_path, folder=True).wait()  # each new flush closes the finished ones
        time.sleep(0.01)
    assert _open_descriptors() == before


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork")
def test_a_forked_child_flushes_without_the_parents_threads(tmp_path: Path) -> None:
    """glibc's AIO threads stay in the parent: a child forked while flushes run (a worker
    pool) must still get its own flushes done, not wait forever for a thread it lacks."""
    path = tmp_path / "object"
    path.write_bytes(os.urandom(100_000))
    running = [Flush(path) for _ in range(4)]
    running[0].close()  # one given up, still running maybe
    pid = os.fork()
    if pid == 0:  # the child: exit 0 only if its flushes complete
        try:
            child = Flush(path)
            child.wait()
            running[1].wait()
            os._exit(0)
        except BaseException:
            os._exit(1)
    for flush in running[1:]:
        flush.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.02)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    pytest.fail("the forked child's flush never finished")


@needs_proc
def test_a_flush_dropped_without_close_is_finished_safely(tmp_path: Path) -> None:
    before = _open_descriptors()
    for i in range(20):
        path = tmp_path / f"x{i}"
        path.write_bytes(os.urandom(5000))
        Flush(path)  # dropped at once
    deadline = time.monotonic() + 10
    while _open_descriptors() > before and time.monotonic() < deadline:
        Flush(tmp_path, folder=True).wait()
        time.sleep(0.01)
    assert _open_descriptors() == before

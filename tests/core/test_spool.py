"""The spool file: what is written is what is on disk, whatever the sizes and the file system."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import sys
from dataclasses import replace
from typing import Any

import pytest

from vna import spool as spool_module
from vna.errors import OutOfResources
from vna.spool import ALIGN, HEAD, STAGE, Spool

SIZES = [0, 1, 4095, HEAD - 1, HEAD, HEAD + 1, HEAD + 4096, HEAD + 4097]
SIZES += [STAGE - 1, STAGE, STAGE + 1, STAGE + ALIGN, 3 * STAGE + 123]


def _fill(spool: Spool, data: bytes, rng: random.Random) -> None:
    """Write ``data`` in pieces of random sizes, as a network read would deliver them."""
    position = 0
    while position < len(data):
        step = rng.choice([1, 7, 4096, 16384, 100_000, STAGE + 5])
        spool.write(memoryview(data)[position : position + step])
        position += step


@pytest.mark.parametrize("size", SIZES)
def test_content_size_and_hash_survive_every_boundary(archive: Any, size: int) -> None:
    data = random.Random(size).randbytes(size)
    with Spool(archive) as spool:
        _fill(spool, data, random.Random(size + 1))
        digest = spool.finish()
        assert spool.path.read_bytes() == data
        assert spool.size == size
        assert digest == hashlib.sha256(data).hexdigest()
        # a small object's content stays in memory, to be parsed without reading it back
        assert spool.content == (data if 0 < size <= HEAD else None)


def test_a_file_system_without_direct_io_gets_the_same_bytes(
    archive: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tmpfs and some network file systems refuse O_DIRECT: everything goes buffered."""
    real_open = os.open

    def refusing_open(path: Any, flags: int, *args: Any) -> int:
        if flags & spool_module._O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *args)

    monkeypatch.setattr(spool_module.os, "open", refusing_open)
    data = random.Random(3).randbytes(2 * STAGE + 999)
    with Spool(archive) as spool:
        _fill(spool, data, random.Random(4))
        digest = spool.finish()
        assert spool.path.read_bytes() == data
        assert digest == hashlib.sha256(data).hexdigest()


def test_a_direct_write_refused_midway_leaves_no_padding(
    archive: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A device with a larger sector than ALIGN refuses the write: the rest goes buffered and
    the file keeps its exact length."""
    real_pwrite = os.pwrite
    calls = {"direct": 0}

    def pwrite(fd: int, data: Any, offset: int) -> int:
        if fd == getattr(current, "_direct_fd", None):
            calls["direct"] += 1
            if calls["direct"] == 2:
                real_pwrite(fd, memoryview(data)[:4096], offset)  # a short write, then refusal
                raise OSError(errno.EINVAL, "Invalid argument")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(spool_module.os, "pwrite", pwrite)
    data = random.Random(5).randbytes(3 * STAGE + 17)
    with Spool(archive) as current:
        _fill(current, data, random.Random(6))
        current.finish()
        assert calls["direct"] >= 2
        assert current.path.read_bytes() == data


def test_a_full_disk_is_out_of_resources(archive: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(*_args: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(spool_module.os, "pwrite", full)
    with Spool(archive) as spool:
        spool.write(b"x" * 100)
        with pytest.raises(OutOfResources, match="No space left"):
            spool.finish()
    assert not spool.path.exists()


def test_discard_removes_the_file_and_returns_the_buffer(archive: Any) -> None:
    with Spool(archive) as spool:
        spool.write(b"partial object")
        path = spool.path
    assert not path.exists()
    assert spool_module._free, "the staging buffer goes back for reuse"
    with pytest.raises(ValueError):
        spool.write(b"more")


@pytest.fixture
def open_flags(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The flags of every os.open the spool makes."""
    real_open = os.open
    seen: list[int] = []

    def recording_open(path: Any, flags: int, *args: Any) -> int:
        seen.append(flags)
        return real_open(path, flags, *args)

    monkeypatch.setattr(spool_module.os, "open", recording_open)
    return seen


def test_direct_io_can_be_turned_off(
    archive: Any, monkeypatch: pytest.MonkeyPatch, open_flags: list[int]
) -> None:
    """VNA_SPOOL_DIRECT_IO=false: every byte goes through the page cache."""
    monkeypatch.setattr(archive, "settings", replace(archive.settings, spool_direct_io=False))
    data = random.Random(7).randbytes(2 * STAGE + 1)
    with Spool(archive) as spool:
        spool.write(data)
        spool.finish()
        assert spool.path.read_bytes() == data
    assert open_flags and not any(f & spool_module._O_DIRECT for f in open_flags)


def test_direct_io_is_used_where_the_file_system_allows_it(
    archive: Any, open_flags: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    truncations: list[int] = []
    real_truncate = os.ftruncate
    monkeypatch.setattr(
        spool_module.os, "ftruncate", lambda fd, n: truncations.append(n) or real_truncate(fd, n)
    )
    data = random.Random(3).randbytes(HEAD + 3 * ALIGN + 5)
    with Spool(archive) as spool:
        spool.write(data)
        spool.finish()
        assert spool.path.read_bytes() == data
    if sys.platform.startswith("linux"):
        assert any(f & spool_module._O_DIRECT for f in open_flags)
    # the last 5 bytes went through the page cache: no padding to truncate afterwards (a
    # truncation made the file system read the last block back from disk)
    assert truncations == []


def test_a_removed_spool_folder_is_made_again(archive: Any) -> None:
    with Spool(archive) as first:
        first.write(b"x")
    archive.spool_dir.rmdir()
    with Spool(archive) as spool:
        spool.write(b"again")
        spool.finish()
        assert spool.path.read_bytes() == b"again"
    assert archive.spool_dir.is_dir()

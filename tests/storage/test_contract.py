"""One contract for every object store back end, plus what only one back end can show.

The ``store`` fixture runs each contract test against a filesystem store and against an S3
store on a real SeaweedFS gateway (``tests.support.seaweed``), so both behave the same for
the archive: same errors, same edge cases, same atomicity.
"""

from __future__ import annotations

import errno
import hashlib
import io
import logging
import os
import random
import socket
import stat
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, cast
from urllib.parse import quote

import pytest

import storage.filesystem
from storage import (
    CHUNK_SIZE,
    FilesystemStore,
    InvalidKey,
    ObjectNotFound,
    ObjectStore,
    S3Store,
    StoreError,
    StoreFull,
    open_store,
)
from storage.filesystem import TEMP_DIR_NAME
from tests.support.seaweed import S3Server

MiB = 1024 * 1024
BLOCK = 64 * 1024


# -- helpers ---------------------------------------------------------------------------------


def payload(size: int, seed: int = 0) -> bytes:
    """Reproducible incompressible bytes."""
    return random.Random(seed).randbytes(size)


def generated_block(index: int) -> bytes:
    """Block ``index`` of a generated stream: different per block, cheap to make again."""
    return index.to_bytes(8, "big") * (BLOCK // 8)


class StreamBroke(Exception):
    """The caller's data source failed (a client hung up mid-upload)."""


class GeneratedStream:
    """A stream of unknown length made block by block, like a request body off a socket.

    It never holds more than one block, refuses unbounded ``read()``, and can fail after
    a number of bytes.
    """

    def __init__(self, total: int, fail_after: int | None = None) -> None:
        self.total = total
        self.fail_after = fail_after
        self.served = 0
        self._blocks = self._generate()
        self._pending = b""

    def _generate(self) -> Iterator[bytes]:
        left, index = self.total, 0
        while left > 0:
            block = generated_block(index)[:left]
            left -= len(block)
            index += 1
            yield block

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            raise AssertionError("the store asked for the whole stream at once")
        if self.fail_after is not None and self.served >= self.fail_after:
            raise StreamBroke(f"source failed after {self.served} bytes")
        if not self._pending:
            self._pending = next(self._blocks, b"")
        piece, self._pending = self._pending[:size], self._pending[size:]
        self.served += len(piece)
        return piece

    def digest(self) -> str:
        """SHA-256 of everything this stream would yield, computed independently."""
        digest = hashlib.sha256()
        for block in GeneratedStream(self.total)._generate():
            digest.update(block)
        return digest.hexdigest()

    def as_binary(self) -> BinaryIO:
        return cast(BinaryIO, self)


def stored_digest(store: ObjectStore, key: str) -> str:
    digest = hashlib.sha256()
    for chunk in store.iter_chunks(key):
        digest.update(chunk)
    return digest.hexdigest()


def read_all(store: ObjectStore, key: str) -> bytes:
    with store.open(key) as handle:
        return handle.read()


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the back ends ---------------------------------------------------------------------------


@pytest.fixture(params=["filesystem", pytest.param("s3", marks=pytest.mark.s3)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    """Each back end in turn; the S3 one on a fresh bucket of the test gateway."""
    if request.param == "filesystem":
        backend: ObjectStore = FilesystemStore(tmp_path / "store")
    else:
        backend = open_store(request.getfixturevalue("s3_bucket_url"))
    yield backend
    backend.close()


@pytest.fixture
def fs_store(tmp_path: Path) -> FilesystemStore:
    return FilesystemStore(tmp_path / "store")


# -- contract: both back ends ----------------------------------------------------------------


def test_satisfies_protocol(store: ObjectStore) -> None:
    assert isinstance(store, ObjectStore)
    assert store.location


def test_put_file_round_trip(store: ObjectStore, tmp_path: Path) -> None:
    data = payload(300_000)
    source = tmp_path / "in.bin"
    source.write_bytes(data)
    assert store.put_file("obj-1", source) == len(data)
    assert source.read_bytes() == data, "a copy must leave the source alone"
    assert store.exists("obj-1")
    assert store.size("obj-1") == len(data)
    assert read_all(store, "obj-1") == data


def test_put_file_move_removes_source(store: ObjectStore, tmp_path: Path) -> None:
    data = payload(123_457, seed=2)
    source = tmp_path / "moved.bin"
    source.write_bytes(data)
    assert store.put_file("moved", source, move=True) == len(data)
    assert not source.exists()
    assert read_all(store, "moved") == data


def test_put_stream_unknown_size(store: ObjectStore) -> None:
    stream = GeneratedStream(3 * MiB + 17)
    assert store.put_stream("streamed", stream.as_binary()) == stream.total
    assert store.size("streamed") == stream.total
    assert stored_digest(store, "streamed") == stream.digest()


def test_put_stream_known_size(store: ObjectStore) -> None:
    data = payload(2 * MiB + 3, seed=3)
    assert store.put_stream("known", io.BytesIO(data), size=len(data)) == len(data)
    assert read_all(store, "known") == data


def test_put_stream_known_size_stores_exactly_size_bytes(store: ObjectStore) -> None:
    data = payload(10_000, seed=4)
    assert store.put_stream("prefix-only", io.BytesIO(data + b"trailing"), size=len(data)) == len(
        data
    )
    assert read_all(store, "prefix-only") == data


def test_put_stream_shorter_than_announced_stores_nothing(store: ObjectStore) -> None:
    with pytest.raises(StoreError):
        store.put_stream("short", io.BytesIO(b"x" * 100), size=1000)
    assert not store.exists("short")


def test_open_is_a_seekable_reader(store: ObjectStore) -> None:
    data = payload(3 * MiB, seed=5)
    store.put_stream("seekable", io.BytesIO(data))
    with store.open("seekable") as handle:
        assert handle.read(10) == data[:10]
        handle.seek(2 * MiB + 5)
        assert handle.tell() == 2 * MiB + 5
        assert handle.read(100) == data[2 * MiB + 5 : 2 * MiB + 105]
        handle.seek(-7, os.SEEK_END)
        assert handle.read() == data[-7:]
        assert handle.read(10) == b""
        handle.seek(1000)
        assert handle.read(5) == data[1000:1005]
        handle.seek(len(data) + 10)
        assert handle.read(5) == b""
    assert handle.closed


def test_read_range(store: ObjectStore) -> None:
    data = payload(100_000, seed=6)
    store.put_stream("ranged", io.BytesIO(data))
    assert store.read_range("ranged", 0, len(data)) == data
    assert store.read_range("ranged", 1234, 5678) == data[1234 : 1234 + 5678]
    assert store.read_range("ranged", len(data) - 10, 100) == data[-10:], "short at the end"
    assert store.read_range("ranged", len(data), 10) == b""
    assert store.read_range("ranged", len(data) + 50, 10) == b""
    assert store.read_range("ranged", 500, 0) == b""
    with pytest.raises(ValueError):
        store.read_range("ranged", -1, 10)


def test_iter_chunks(store: ObjectStore) -> None:
    data = payload(200_000, seed=7)
    store.put_stream("chunky", io.BytesIO(data))
    assert b"".join(store.iter_chunks("chunky")) == data
    chunks = list(store.iter_chunks("chunky", 10, 1000, chunk_size=64))
    assert b"".join(chunks) == data[10:1010]
    assert all(0 < len(chunk) <= 64 for chunk in chunks)
    assert b"".join(store.iter_chunks("chunky", offset=150_000)) == data[150_000:]
    assert b"".join(store.iter_chunks("chunky", 199_990, 100)) == data[-10:]
    assert list(store.iter_chunks("chunky", len(data), 10)) == []
    assert list(store.iter_chunks("chunky", len(data) + 10)) == []
    assert list(store.iter_chunks("chunky", 5, 0)) == []


def test_iter_chunks_default_chunk_size(store: ObjectStore) -> None:
    data = payload(2 * CHUNK_SIZE + 5, seed=8)
    store.put_stream("big-chunks", io.BytesIO(data))
    sizes = [len(chunk) for chunk in store.iter_chunks("big-chunks")]
    assert sum(sizes) == len(data)
    assert max(sizes) <= CHUNK_SIZE


def test_iter_chunks_stopped_early(store: ObjectStore) -> None:
    data = payload(3 * MiB, seed=9)
    store.put_stream("partial", io.BytesIO(data))
    chunks = store.iter_chunks("partial", chunk_size=1000)
    assert next(chunks) == data[:1000]
    chunks.close()  # type: ignore[attr-defined]  # a generator: releases file or connection
    assert store.read_range("partial", 0, 5) == data[:5]


def test_exists_size_delete(store: ObjectStore) -> None:
    assert not store.exists("gone")
    store.put_stream("gone", io.BytesIO(b"12345"))
    assert store.exists("gone")
    assert store.size("gone") == 5
    store.delete("gone")
    assert not store.exists("gone")
    store.delete("gone")  # idempotent
    store.delete("never-there")
    with pytest.raises(ObjectNotFound):
        store.size("gone")


def test_keys(store: ObjectStore) -> None:
    assert list(store.keys()) == []
    names = ["a", "ab", "abc", "abcd", "ab.c", "1.2.840.10008", "Z_-.9", "x" * 200]
    for index, name in enumerate(names):
        store.put_stream(name, io.BytesIO(str(index).encode()))
    assert sorted(store.keys()) == sorted(names)
    store.delete("abc")
    assert sorted(store.keys()) == sorted(set(names) - {"abc"})
    assert read_all(store, "ab.c") == str(names.index("ab.c")).encode()


def test_overwrite_replaces_whole_object(store: ObjectStore) -> None:
    store.put_stream("over", io.BytesIO(b"a" * 100_000))
    store.put_stream("over", io.BytesIO(b"b" * 10))
    assert read_all(store, "over") == b"b" * 10
    assert store.size("over") == 10
    assert list(store.keys()) == ["over"]


@pytest.mark.parametrize("fail_after", [100_000, 9 * MiB], ids=["single-part", "multipart"])
def test_failed_overwrite_keeps_old_object(store: ObjectStore, fail_after: int) -> None:
    store.put_stream("keep", io.BytesIO(b"old object"))
    with pytest.raises(StreamBroke):
        store.put_stream("keep", GeneratedStream(20 * MiB, fail_after=fail_after).as_binary())
    assert read_all(store, "keep") == b"old object"
    assert list(store.keys()) == ["keep"]


def test_failed_put_leaves_no_object(store: ObjectStore) -> None:
    with pytest.raises(StreamBroke):
        store.put_stream("never", GeneratedStream(5 * MiB, fail_after=2 * MiB).as_binary())
    assert not store.exists("never")
    assert list(store.keys()) == []


def test_readers_never_see_a_partial_overwrite(store: ObjectStore) -> None:
    versions = [bytes([65 + n]) * (256 * 1024 + n * 1000) for n in range(3)]
    store.put_stream("hot", io.BytesIO(versions[0]))
    stop = threading.Event()
    failures: list[BaseException] = []

    def writer() -> None:
        try:
            n = 0
            while not stop.is_set():
                n += 1
                store.put_stream("hot", io.BytesIO(versions[n % len(versions)]))
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(25):
            assert read_all(store, "hot") in versions
            head = store.read_range("hot", 0, 16)
            assert len(head) == 16 and len(set(head)) == 1
    finally:
        stop.set()
        thread.join()
    assert not failures


def test_missing_key_on_every_read(store: ObjectStore) -> None:
    reads: dict[str, Callable[[], object]] = {
        "open": lambda: store.open("missing"),
        "read_range": lambda: store.read_range("missing", 0, 10),
        "read_range empty": lambda: store.read_range("missing", 0, 0),
        "read_range offset": lambda: store.read_range("missing", 100, 10),
        "size": lambda: store.size("missing"),
    }
    for name, read in reads.items():
        with pytest.raises(ObjectNotFound):
            read()
            pytest.fail(f"{name} did not raise")
    for offset, length in [(0, None), (5, 10), (0, 0)]:
        chunks = store.iter_chunks("missing", offset, length)  # lazy: no error yet
        with pytest.raises(ObjectNotFound):
            next(chunks)
    assert store.exists("missing") is False
    store.delete("missing")


BAD_KEYS = ["../x", "a/b", "", "x" * 201, ".hidden", "-dash", "a b", "a\\b", "caf\u00e9", "a\n"]


@pytest.mark.parametrize("key", BAD_KEYS, ids=repr)
def test_invalid_keys_rejected_everywhere(store: ObjectStore, key: str, tmp_path: Path) -> None:
    source = tmp_path / "src.bin"
    source.write_bytes(b"data")
    calls: list[Callable[[], Any]] = [
        lambda: store.put_file(key, source),
        lambda: store.put_file(key, source, move=True),
        lambda: store.put_stream(key, io.BytesIO(b"data")),
        lambda: store.open(key),
        lambda: store.read_range(key, 0, 1),
        lambda: list(store.iter_chunks(key)),
        lambda: store.size(key),
        lambda: store.exists(key),
        lambda: store.delete(key),
    ]
    for call in calls:
        with pytest.raises(InvalidKey):
            call()
    assert source.exists()
    assert list(store.keys()) == []


def test_all_byte_values_round_trip(store: ObjectStore, tmp_path: Path) -> None:
    data = bytes(range(256)) * 4099
    store.put_stream("bytes-stream", io.BytesIO(data))
    source = tmp_path / "bytes.bin"
    source.write_bytes(data)
    store.put_file("bytes-file", source)
    for key in ("bytes-stream", "bytes-file"):
        assert read_all(store, key) == data
        assert store.read_range(key, 255, 258) == bytes(range(255, 256)) + bytes(range(256)) + b"\0"
        assert b"".join(store.iter_chunks(key, chunk_size=1000)) == data


def test_empty_object(store: ObjectStore, tmp_path: Path) -> None:
    assert store.put_stream("empty", io.BytesIO(b"")) == 0
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    assert store.put_file("empty-file", empty) == 0
    for key in ("empty", "empty-file"):
        assert store.exists(key)
        assert store.size(key) == 0
        assert read_all(store, key) == b""
        assert store.read_range(key, 0, 10) == b""
        assert list(store.iter_chunks(key)) == []
    assert sorted(store.keys()) == ["empty", "empty-file"]


@pytest.mark.slow
def test_large_stream_of_unknown_size_uses_bounded_memory(store: ObjectStore) -> None:
    stream = GeneratedStream(40 * MiB)
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        baseline, _ = tracemalloc.get_traced_memory()
        written = store.put_stream("large", stream.as_binary())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        if not was_tracing:
            tracemalloc.stop()
    assert written == stream.total
    assert peak - baseline < 20 * 1000 * 1000, f"put_stream peaked at {peak - baseline} bytes"
    assert store.size("large") == stream.total
    assert stored_digest(store, "large") == stream.digest()


# -- filesystem only -------------------------------------------------------------------------


def temp_files(fs: FilesystemStore) -> list[str]:
    return sorted(os.listdir(fs.root / TEMP_DIR_NAME))


def test_fs_layout_is_sharded(fs_store: FilesystemStore) -> None:
    fs_store.put_stream("abcdef", io.BytesIO(b"1"))
    fs_store.put_stream("a", io.BytesIO(b"2"))
    assert (fs_store.root / "ab" / "cd" / "abcdef").read_bytes() == b"1"
    assert fs_store.path_for("a").read_bytes() == b"2"
    assert fs_store.path_for("a").parent.parent.parent == fs_store.root
    assert temp_files(fs_store) == []


def test_fs_location_and_open_store(tmp_path: Path) -> None:
    root = tmp_path / "with space" / "store"
    opened = open_store("file://" + quote(str(root)))
    assert isinstance(opened, FilesystemStore)
    assert opened.root == root
    assert opened.location == "file://" + str(root)
    assert (root / TEMP_DIR_NAME).is_dir()


def test_fs_open_returns_regular_file(fs_store: FilesystemStore) -> None:
    fs_store.put_stream("regular", io.BytesIO(b"0123456789"))
    with fs_store.open("regular") as handle:
        assert handle.seekable()
        assert stat.S_ISREG(os.fstat(handle.fileno()).st_mode)
        handle.seek(4)
        assert handle.read(3) == b"456"


def test_fs_failed_write_leaves_no_object_and_no_temp(fs_store: FilesystemStore) -> None:
    with pytest.raises(StreamBroke):
        fs_store.put_stream("broken", GeneratedStream(8 * MiB, fail_after=3 * MiB).as_binary())
    assert not fs_store.exists("broken")
    assert not fs_store.path_for("broken").exists()
    assert temp_files(fs_store) == []


def test_fs_stale_temp_files_removed_on_start(tmp_path: Path) -> None:
    root = tmp_path / "store"
    FilesystemStore(root)
    stale = root / TEMP_DIR_NAME / "abcd.x1y2.part"
    fresh = root / TEMP_DIR_NAME / "efgh.z3w4.part"
    stale.write_bytes(b"left by a crash")
    fresh.write_bytes(b"being written by another process")
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))
    FilesystemStore(root)
    assert not stale.exists()
    assert fresh.exists()


def test_fs_keys_ignore_temp_and_foreign_files(fs_store: FilesystemStore) -> None:
    fs_store.put_stream("abcd", io.BytesIO(b"real"))
    root = fs_store.root
    (root / TEMP_DIR_NAME / "abcd.tmp1.part").write_bytes(b"in progress")
    (root / TEMP_DIR_NAME / "ab").mkdir()
    (root / "README").write_text("not an object")
    (root / "zz" / "yy").mkdir(parents=True)
    (root / "zz" / "yy" / "abcd").write_bytes(b"wrong shard")
    (root / "ab" / "cd" / "bad name").write_bytes(b"not a key")
    (root / "ab" / "cd" / "nested").mkdir()
    assert list(fs_store.keys()) == ["abcd"]


def test_fs_keys_of_empty_store_without_shards(fs_store: FilesystemStore) -> None:
    assert list(fs_store.keys()) == []


@pytest.mark.parametrize(
    ("code", "error"),
    [(errno.ENOSPC, StoreFull), (errno.EDQUOT, StoreFull), (errno.EIO, StoreError)],
    ids=["ENOSPC", "EDQUOT", "EIO"],
)
@pytest.mark.parametrize("how", ["put_stream", "put_file"])
def test_fs_write_errors_are_mapped(
    fs_store: FilesystemStore,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    code: int,
    error: type[StoreError],
    how: str,
) -> None:
    fs_store.put_stream("victim", io.BytesIO(b"old"))
    source = tmp_path / "source.bin"
    source.write_bytes(payload(3 * MiB))
    real_write = os.write
    written = 0

    def failing_write(fd: int, data: Any) -> int:
        nonlocal written
        if fd <= 2:
            return real_write(fd, data)
        if written >= MiB:
            raise OSError(code, os.strerror(code))
        written += len(data)
        return real_write(fd, data)

    monkeypatch.setattr(storage.filesystem.os, "write", failing_write)
    with pytest.raises(error) as raised:
        if how == "put_stream":
            fs_store.put_stream("victim", io.BytesIO(source.read_bytes()))
        else:
            fs_store.put_file("victim", source)
    monkeypatch.undo()
    assert (error is StoreFull) == isinstance(raised.value, StoreFull)
    assert read_all(fs_store, "victim") == b"old"
    assert temp_files(fs_store) == []
    assert source.exists()


def test_fs_put_syncs_file_and_directory(
    fs_store: FilesystemStore, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        mode = os.fstat(fd).st_mode
        synced.append("dir" if stat.S_ISDIR(mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(storage.filesystem.os, "fsync", spy)
    fs_store.put_stream("durable", io.BytesIO(b"x"))
    assert "file" in synced and "dir" in synced
    synced.clear()
    source = tmp_path / "move-me"
    source.write_bytes(b"y")
    fs_store.put_file("durable-2", source, move=True)
    assert "file" in synced and "dir" in synced


def test_fs_folder_flush_deferred_to_flush_folders(
    fs_store: FilesystemStore, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Objects put with flush_folder=False are flushed at once, their folders later: once
    each, however many objects share one."""
    fs_store.put_stream("aa00-0", io.BytesIO(b"0"))  # the shard folders exist already
    fs_store.put_stream("bb00-0", io.BytesIO(b"0"))
    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        st = os.fstat(fd)
        synced.append("dir" if stat.S_ISDIR(st.st_mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(storage.filesystem.os, "fsync", spy)
    keys = ["aa00-1", "aa00-2", "bb00-1"]
    for i, key in enumerate(keys):
        source = tmp_path / f"src{i}"
        source.write_bytes(key.encode())
        fs_store.put_file(key, source, move=i % 2 == 0, flush_folder=False)
    assert synced == ["file"] * 3
    fs_store.flush_folders(keys)
    assert synced == ["file"] * 3 + ["dir"] * 2
    assert [read_all(fs_store, key) for key in keys] == [k.encode() for k in keys]


def test_fs_move_renames_on_same_filesystem(fs_store: FilesystemStore, tmp_path: Path) -> None:
    source = tmp_path / "same-fs.bin"
    source.write_bytes(b"payload")
    inode = source.stat().st_ino
    fs_store.put_file("renamed", source, move=True)
    assert fs_store.path_for("renamed").stat().st_ino == inode
    assert not source.exists()


def test_fs_move_falls_back_to_copy_across_filesystems(
    fs_store: FilesystemStore, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    source = tmp_path / "elsewhere.bin"
    data = payload(2 * MiB + 1, seed=11)
    source.write_bytes(data)
    real_replace = os.replace

    def replace(src: Any, dst: Any) -> None:
        if Path(src) == source:
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))
        real_replace(src, dst)

    monkeypatch.setattr(storage.filesystem.os, "replace", replace)
    assert fs_store.put_file("copied", source, move=True) == len(data)
    assert not source.exists()
    assert read_all(fs_store, "copied") == data
    assert temp_files(fs_store) == []


def test_fs_move_of_a_symlink_copies_its_target(fs_store: FilesystemStore, tmp_path: Path) -> None:
    target = tmp_path / "target.bin"
    target.write_bytes(b"pointed at")
    link = tmp_path / "link.bin"
    link.symlink_to(target)
    fs_store.put_file("via-link", link, move=True)
    stored = fs_store.path_for("via-link")
    assert not stored.is_symlink()
    assert stored.read_bytes() == b"pointed at"
    assert not link.exists() and not link.is_symlink()
    assert target.read_bytes() == b"pointed at"


def test_fs_missing_source_is_a_store_error(fs_store: FilesystemStore, tmp_path: Path) -> None:
    for move in (False, True):
        with pytest.raises(StoreError):
            fs_store.put_file("nosource", tmp_path / "absent", move=move)
    assert not fs_store.exists("nosource")


# -- S3 only ---------------------------------------------------------------------------------


def s3_store(server: S3Server, bucket: str, **params: str) -> S3Store:
    opened = open_store(server.url(bucket, **params))
    assert isinstance(opened, S3Store)
    return opened


@pytest.mark.s3
def test_s3_bucket_created_on_first_put(s3_server: S3Server, s3_bucket_url: str) -> None:
    opened = open_store(s3_bucket_url)
    assert isinstance(opened, S3Store)
    client = s3_server.client()
    assert not client.bucket_exists(opened.bucket)
    # Reads do not create it: a missing bucket holds no objects.
    assert not opened.exists("abcd")
    assert list(opened.keys()) == []
    opened.delete("abcd")
    with pytest.raises(ObjectNotFound):
        opened.read_range("abcd", 0, 1)
    assert not client.bucket_exists(opened.bucket)
    opened.put_stream("abcd", io.BytesIO(b"first"))
    assert client.bucket_exists(opened.bucket)
    assert client.stat_object(opened.bucket, "ab/cd/abcd").size == 5


@pytest.mark.s3
def test_s3_concurrent_bucket_creation(s3_bucket_url: str) -> None:
    stores = [open_store(s3_bucket_url) for _ in range(4)]
    barrier = threading.Barrier(len(stores))
    failures: list[BaseException] = []

    def put(index: int) -> None:
        try:
            barrier.wait()
            stores[index].put_stream(f"key{index}", io.BytesIO(b"x"))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=put, args=(n,)) for n in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
    assert sorted(stores[0].keys()) == [f"key{n}" for n in range(len(stores))]


@pytest.mark.s3
def test_s3_prefix_isolates_stores(s3_server: S3Server, s3_bucket_url: str) -> None:
    bucket = cast(S3Store, open_store(s3_bucket_url)).bucket
    one = s3_store(s3_server, bucket, prefix="one")
    two = s3_store(s3_server, bucket, prefix="/two/deep/")
    bare = s3_store(s3_server, bucket)
    one.put_stream("same-key", io.BytesIO(b"1"))
    two.put_stream("same-key", io.BytesIO(b"2"))
    assert read_all(one, "same-key") == b"1"
    assert read_all(two, "same-key") == b"2"
    assert list(one.keys()) == ["same-key"]
    assert list(two.keys()) == ["same-key"]
    assert list(bare.keys()) == [], "objects under a prefix are not laid out as bare keys"
    names = sorted(
        str(obj.object_name) for obj in s3_server.client().list_objects(bucket, recursive=True)
    )
    assert names == ["one/sa/me/same-key", "two/deep/sa/me/same-key"]


@pytest.mark.s3
def test_s3_close_releases_connections(
    s3_bucket_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = open_store(s3_bucket_url)
    assert isinstance(store, S3Store)
    data = payload(4 * MiB, seed=12)
    store.put_stream("pooled", io.BytesIO(data))
    caplog.set_level(logging.WARNING, logger="urllib3")
    for _ in range(40):
        with store.open("pooled") as handle:
            assert handle.read(10) == data[:10]
            handle.seek(3 * MiB)
            assert handle.read(10) == data[3 * MiB : 3 * MiB + 10]
        chunks = store.iter_chunks("pooled", chunk_size=1000)
        next(chunks)
        chunks.close()  # type: ignore[attr-defined]
        assert store.read_range("pooled", 5, 5) == data[5:10]
    assert not [r for r in caplog.records if "pool is full" in r.getMessage()]
    pool = store._http.connection_from_url(store.settings.endpoint)
    assert pool.pool is not None
    assert pool.pool.qsize() == pool.pool.maxsize, "a connection was never given back"


@pytest.mark.s3
def test_s3_location_has_no_credentials(s3_server: S3Server, s3_bucket_url: str) -> None:
    opened = open_store(s3_bucket_url)
    assert opened.location.startswith("s3://")
    assert s3_server.endpoint in opened.location
    for text in (opened.location, repr(opened), repr(cast(S3Store, opened).settings)):
        assert s3_server.secret_key not in text


@pytest.mark.s3
def test_s3_dead_endpoint_fails_fast() -> None:
    dead = S3Store(f"http://127.0.0.1:{closed_port()}", "dead-bucket", "key", "secret")
    calls: list[Callable[[], object]] = [
        lambda: dead.put_stream("abcd", io.BytesIO(b"x")),
        lambda: dead.read_range("abcd", 0, 1),
        lambda: dead.size("abcd"),
        lambda: dead.exists("abcd"),
        lambda: dead.open("abcd"),
        lambda: list(dead.keys()),
    ]
    for call in calls:
        started = time.monotonic()
        with pytest.raises(StoreError) as raised:
            call()
        assert not isinstance(raised.value, ObjectNotFound), "unreachable is not missing"
        assert time.monotonic() - started < 10
    dead.close()


# -- open_store URLs (parsing only: no server needed) ----------------------------------------


def test_open_store_s3_credentials_from_query_win() -> None:
    url = "s3://bucket-a?endpoint=http://127.0.0.1:9&access_key=qk&secret_key=qs&region=eu-1"
    opened = open_store(url, access_key="kw", secret_key="kws")
    assert isinstance(opened, S3Store)
    assert (opened.settings.access_key, opened.settings.secret_key) == ("qk", "qs")
    assert opened.settings.region == "eu-1"
    assert opened.bucket == "bucket-a"
    assert opened.location == "s3://bucket-a@http://127.0.0.1:9"


def test_open_store_s3_credentials_from_keywords() -> None:
    opened = open_store(
        "s3://bucket-b?endpoint=https%3A%2F%2Fs3.example.org&prefix=vna/objects",
        access_key="kw",
        secret_key="kws",
    )
    assert isinstance(opened, S3Store)
    assert (opened.settings.access_key, opened.settings.secret_key) == ("kw", "kws")
    assert opened.settings.endpoint == "https://s3.example.org"
    assert opened.prefix == "vna/objects/"
    assert opened.object_name("abcdef") == "vna/objects/ab/cd/abcdef"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("s3://bucket-c?endpoint=http://127.0.0.1:9", "access_key or secret_key"),
        ("s3://bucket-c?endpoint=http://127.0.0.1:9&access_key=k", "secret_key"),
        ("s3://bucket-c?access_key=k&secret_key=hidden-secret", "endpoint"),
        ("s3://?endpoint=http://127.0.0.1:9&access_key=k&secret_key=hidden-secret", "bucket"),
        ("s3://bucket-c?endpoint=http://h&access_key=k&secret_key=hidden-secret&x=1", "'x'"),
        ("s3://bucket-c?endpoint=ftp://h&access_key=k&secret_key=hidden-secret", "endpoint"),
        ("s3://Bad_Bucket?endpoint=http://h&access_key=k&secret_key=hidden-secret", "bucket"),
        ("ftp://host/path?secret_key=hidden-secret", "'ftp'"),
        ("/just/a/path", "scheme"),
        ("file://remote-host/path", "local"),
        ("file:relative/path", "absolute"),
    ],
)
def test_open_store_rejects_bad_urls(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as raised:
        open_store(url)
    assert "hidden-secret" not in str(raised.value)

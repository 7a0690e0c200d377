"""An object store in an S3 bucket (AWS, MinIO, SeaweedFS, Ceph RGW...) through ``minio``.

Objects are named ``<prefix><key[0:2]>/<key[2:4]>/<key>``, the same layout as the filesystem
store, so a bucket can be browsed or synced to disk and back. S3 itself makes every put
atomic: a single PUT or a completed multipart upload replaces the object in one step.
"""

from __future__ import annotations

import io
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, NoReturn
from urllib.parse import urlsplit

import certifi
import urllib3
from minio import Minio
from minio.error import MinioException, S3Error

from storage.base import CHUNK_SIZE, ObjectNotFound, StoreError
from storage.layout import is_valid_key, shard_parts, sharded_name

__all__ = ["PART_SIZE", "S3Settings", "S3Store"]

#: Multipart part size: S3's minimum, because minio holds up to three parts in memory at
#: once (the part being uploaded, the next one being read, and a copy while it slices off
#: the look-ahead byte of an unknown-size stream), so an upload peaks at ~16 MB whatever
#: the object size. 5 MiB x 10,000 parts caps unknown-size streams at 48.8 GiB; uploads of
#: known size (put_file, put_stream with size) scale the part size up to fit instead.
PART_SIZE = 5 * 1024 * 1024
_MAX_PARTS = 10_000
_MIN_PART_SIZE = 5 * 1024 * 1024

#: Seconds to wait for a TCP connection: a dead endpoint must fail fast, not hang a request.
CONNECT_TIMEOUT = 3.0
#: Seconds of silence on an open connection before giving up (not the whole transfer time).
READ_TIMEOUT = 60.0
#: Concurrent connections kept per host (the archive serves many readers at once).
POOL_SIZE = 32

_MISSING_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "NoSuchObject"})
_BUCKET_EXISTS_CODES = frozenset({"BucketAlreadyOwnedByYou", "BucketAlreadyExists"})
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
# Errors of the transport and of minio itself; anything else is a bug or the caller's.
_TRANSPORT_ERRORS = (MinioException, urllib3.exceptions.HTTPError, OSError)


@dataclass(frozen=True)
class S3Settings:
    """Where an S3 store lives and how to sign in (the secret stays out of repr)."""

    endpoint: str
    bucket: str
    access_key: str
    secret_key: str = field(repr=False)
    region: str | None = None
    prefix: str = ""


class _SourceFailed(Exception):
    """Carries an error of the caller's stream through minio, so it is not taken for ours."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(str(original))
        self.original = original


class _PartReader:
    """Feeds minio full parts from the caller's stream.

    minio concatenates whatever ``read`` returns with ``+=``; a stream returning small
    pieces would make that quadratic. Here each ``read(n)`` returns exactly ``n`` bytes (or
    what is left at the end) with one join, and errors of the stream are tagged.
    """

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            raise ValueError("refusing an unbounded read")
        pieces: list[bytes] = []
        got = 0
        while got < size:
            try:
                piece = self._stream.read(size - got)
            except Exception as exc:
                raise _SourceFailed(exc) from exc
            if not piece:
                break
            if not isinstance(piece, bytes):
                piece = bytes(piece)  # minio insists on bytes (bytearray, memoryview...)
            pieces.append(piece)
            got += len(piece)
        self.count += got
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)


def _part_size_for(size: int) -> int:
    """A part size that keeps a known-size upload within S3's 10,000-part limit."""
    needed = -(-size // _MAX_PARTS)
    needed = -(-needed // _MIN_PART_SIZE) * _MIN_PART_SIZE
    return max(PART_SIZE, needed)


def _release(response: Any) -> None:
    """Close a urllib3 response and hand its connection back to the pool."""
    try:
        response.close()
    finally:
        response.release_conn()


class _ObjectReader(io.RawIOBase):
    """A seekable raw stream over an object: one GET, reissued from the new offset on seek.

    Seeking matters because DICOM and TIFF readers jump around; a seek only drops the
    current response, and the next read starts a ranged GET where it is needed.
    """

    def __init__(self, store: S3Store, key: str, response: Any, size: int) -> None:
        super().__init__()
        self._store = store
        self._key = key
        self._response: Any = response
        self._size = size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        self._check_open()
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._check_open()
        if whence == io.SEEK_SET:
            target = offset
        elif whence == io.SEEK_CUR:
            target = self._pos + offset
        elif whence == io.SEEK_END:
            target = self._size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if target < 0:
            raise ValueError(f"negative seek position {target}")
        if target != self._pos:
            self._drop_response()
            self._pos = target
        return self._pos

    def readinto(self, buffer: Any) -> int:
        self._check_open()
        if self._pos >= self._size or len(buffer) == 0:
            return 0
        if self._response is None:
            self._response = self._store._get(self._key, self._pos, 0)
        with self._store._mapped(f"cannot read object {self._key!r}"):
            count = self._response.readinto(buffer)
        if count == 0:
            raise StoreError(
                f"object {self._key!r} ended at byte {self._pos} of {self._size}"
                " (changed or connection cut)"
            )
        self._pos += count
        return int(count)

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed file")

    def _drop_response(self) -> None:
        response, self._response = self._response, None
        if response is not None:
            _release(response)

    def close(self) -> None:
        """Release the HTTP connection (response.close() and release_conn())."""
        if not self.closed:
            self._drop_response()
        super().close()


class S3Store:
    """An :class:`~storage.base.ObjectStore` over one S3 bucket; see the module docstring."""

    def __init__(
        self,
        endpoint: str,
        bucket: str,
        access_key: str,
        secret_key: str,
        region: str | None = None,
        prefix: str = "",
    ) -> None:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"S3 endpoint must be http(s)://host[:port], got {endpoint!r}")
        if parts.username or parts.password:
            raise ValueError("S3 endpoint must not carry credentials; pass them separately")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(f"S3 endpoint must not have a path or query, got {endpoint!r}")
        if not _BUCKET_NAME.match(bucket) or ".." in bucket:
            raise ValueError(f"invalid S3 bucket name {bucket!r}")
        if not access_key or not secret_key:
            raise ValueError("S3 store needs both an access key and a secret key")
        prefix = prefix.strip("/")
        if prefix:
            prefix += "/"
        endpoint = f"{parts.scheme}://{parts.netloc}"
        self.settings = S3Settings(endpoint, bucket, access_key, secret_key, region, prefix)
        self.bucket = bucket
        self.prefix = prefix
        self.location = f"s3://{bucket}@{endpoint}"
        self._http = urllib3.PoolManager(
            maxsize=POOL_SIZE,
            timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT, read=READ_TIMEOUT),
            # Few retries and a short backoff: callers see a dead endpoint in seconds.
            retries=urllib3.Retry(
                total=3,
                connect=1,
                read=1,
                backoff_factor=0.2,
                status_forcelist=[500, 502, 503, 504],
            ),
            cert_reqs="CERT_REQUIRED",
            ca_certs=certifi.where(),
        )
        self._client = Minio(
            parts.netloc,
            access_key=access_key,
            secret_key=secret_key,
            secure=parts.scheme == "https",
            region=region,
            http_client=self._http,
        )
        self._bucket_ready = False
        self._bucket_lock = threading.Lock()

    # -- helpers -----------------------------------------------------------------------------

    def object_name(self, key: str) -> str:
        """The S3 object name for ``key``."""
        return self.prefix + sharded_name(key)

    @contextmanager
    def _mapped(self, what: str, key: str | None = None) -> Iterator[None]:
        """Turn minio and urllib3 errors into store errors (ObjectNotFound when ``key``)."""
        try:
            yield
        except S3Error as exc:
            if key is not None and exc.code in _MISSING_CODES:
                raise ObjectNotFound(f"no object {key!r} in {self.location}") from exc
            if exc.code == "NoSuchBucket":
                self._bucket_ready = False
            raise StoreError(f"{what}: {exc.code}: {exc.message}") from exc
        except _TRANSPORT_ERRORS as exc:
            raise StoreError(f"{what} ({self.location}): {exc}") from exc

    def _raise_missing(self, key: str) -> NoReturn:
        raise ObjectNotFound(f"no object {key!r} in {self.location}")

    def _get(self, key: str, offset: int, length: int) -> Any:
        """Start a GET (ranged when offset/length are set); the caller releases it."""
        with self._mapped(f"cannot read object {key!r}", key):
            return self._client.get_object(
                self.bucket, self.object_name(key), offset=offset, length=length
            )

    def ensure_bucket(self) -> None:
        """Create the bucket once if it is missing; another creator winning the race is fine."""
        if self._bucket_ready:
            return
        with self._bucket_lock:
            if self._bucket_ready:
                return
            with self._mapped(f"cannot create bucket {self.bucket!r}"):
                if not self._client.bucket_exists(self.bucket):
                    try:
                        self._client.make_bucket(self.bucket)
                    except S3Error as exc:
                        if exc.code not in _BUCKET_EXISTS_CODES:
                            raise
            self._bucket_ready = True

    # -- writes ------------------------------------------------------------------------------

    def put_file(self, key: str, path: Path, *, move: bool = False) -> int:
        """Upload from an open file (minio reads it part by part), then drop it if moved."""
        name = self.object_name(key)
        source = Path(path)
        try:
            src = open(source, "rb")  # noqa: SIM115 - closed below, errors mapped separately
        except OSError as exc:
            raise StoreError(f"cannot read {source}: {exc.strerror or exc}") from exc
        with src:
            try:
                size = int(source.stat().st_size)
            except OSError as exc:
                raise StoreError(f"cannot read {source}: {exc.strerror or exc}") from exc
            try:
                self._upload(key, name, src, size)
            except OSError as exc:
                raise StoreError(f"cannot read {source}: {exc.strerror or exc}") from exc
        if move:
            try:
                source.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise StoreError(f"stored {key!r} but cannot remove {source}: {exc}") from exc
        return size

    def put_stream(self, key: str, stream: BinaryIO, size: int | None = None) -> int:
        """Single PUT or multipart upload; an unknown size streams ``PART_SIZE`` parts."""
        name = self.object_name(key)
        if size is not None and size < 0:
            raise ValueError("size must not be negative")
        return self._upload(key, name, stream, size)

    def _upload(self, key: str, name: str, stream: BinaryIO, size: int | None) -> int:
        self.ensure_bucket()
        reader = _PartReader(stream)
        try:
            with self._mapped(f"cannot store object {key!r}"):
                self._client.put_object(
                    self.bucket,
                    name,
                    reader,  # type: ignore[arg-type]  # minio only calls read()
                    length=-1 if size is None else size,
                    part_size=PART_SIZE if size is None else _part_size_for(size),
                    # One part in flight: memory stays at ~2 parts whatever the object size.
                    num_parallel_uploads=1,
                )
        except _SourceFailed as exc:
            # minio has aborted the multipart upload; the old object (if any) is untouched.
            raise exc.original from None
        return reader.count

    # -- reads -------------------------------------------------------------------------------

    def open(self, key: str) -> BinaryIO:
        """A buffered, seekable reader over one streaming GET; close() frees the connection."""
        response = self._get(key, 0, 0)
        try:
            length = response.headers.get("Content-Length")
            size = int(length) if length is not None else self.size(key)
        except BaseException:
            _release(response)
            raise
        return io.BufferedReader(_ObjectReader(self, key, response, size), CHUNK_SIZE)

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        """One ranged GET; a range starting at or past the end yields ``b""``."""
        if offset < 0 or length < 0:
            raise ValueError("offset and length must not be negative")
        if length == 0:
            self.size(key)  # raises ObjectNotFound; a zero length would mean "whole object"
            return b""
        try:
            response = self._get(key, offset, length)
        except StoreError as exc:
            if isinstance(exc.__cause__, S3Error) and exc.__cause__.code == "InvalidRange":
                self.size(key)
                return b""
            raise
        try:
            with self._mapped(f"cannot read object {key!r}"):
                return bytes(response.read())
        finally:
            _release(response)

    def iter_chunks(
        self, key: str, offset: int = 0, length: int | None = None, chunk_size: int = CHUNK_SIZE
    ) -> Iterator[bytes]:
        """Stream one (ranged) GET in chunks; the connection is freed when iteration ends."""
        if offset < 0 or (length is not None and length < 0):
            raise ValueError("offset and length must not be negative")
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        self.object_name(key)
        return self._chunks(key, offset, length, chunk_size)

    def _chunks(
        self, key: str, offset: int, length: int | None, chunk_size: int
    ) -> Iterator[bytes]:
        if length == 0:
            self.size(key)
            return
        try:
            response = self._get(key, offset, length or 0)
        except StoreError as exc:
            if isinstance(exc.__cause__, S3Error) and exc.__cause__.code == "InvalidRange":
                self.size(key)
                return
            raise
        try:
            while True:
                with self._mapped(f"cannot read object {key!r}"):
                    chunk = response.read(chunk_size)
                if not chunk:
                    return
                yield chunk
        finally:
            _release(response)

    def size(self, key: str) -> int:
        with self._mapped(f"cannot stat object {key!r}", key):
            stat = self._client.stat_object(self.bucket, self.object_name(key))
        if stat.size is None:
            raise StoreError(f"server sent no size for object {key!r}")
        return int(stat.size)

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except ObjectNotFound:
            return False
        return True

    def delete(self, key: str) -> None:
        """DELETE is idempotent in S3; a missing bucket means nothing to delete either."""
        name = self.object_name(key)
        try:
            with self._mapped(f"cannot delete object {key!r}", key):
                self._client.remove_object(self.bucket, name)
        except ObjectNotFound:
            return

    def keys(self) -> Iterator[str]:
        """List everything under the prefix; yield the keys of names laid out by this store."""
        try:
            with self._mapped(f"cannot list {self.location}", ""):
                for obj in self._client.list_objects(
                    self.bucket, prefix=self.prefix or None, recursive=True
                ):
                    name = obj.object_name
                    if not name or obj.is_dir:
                        continue
                    first, _, rest = name[len(self.prefix) :].partition("/")
                    second, _, key = rest.partition("/")
                    if is_valid_key(key) and shard_parts(key) == (first, second):
                        yield key
        except ObjectNotFound:
            return

    def close(self) -> None:
        """Drop pooled connections."""
        self._http.clear()

    def __repr__(self) -> str:
        return f"S3Store({self.location!r}, prefix={self.prefix!r})"

"""The one ingest path every door uses: spool → parse → validate → policy → store → index.

Invariant (ARCHITECTURE.md): the object is written (atomically, durably) before its index row
is committed, and removed again when the commit fails. A crash in between leaves a complete
object without a row, which `vna verify --repair` indexes from the object itself; it never
leaves a row without its object.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import struct
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError, OperationalError

from storage import FilesystemStore, StoreError, StoreFull
from storage.asyncflush import Flush
from vna import routes
from vna.archive import Archive
from vna.dicomfile import ParsedObject, read_object
from vna.errors import (
    DuplicateRejected,
    OutOfResources,
    SopClassMismatch,
    StorageError,
    StudyConflict,
    VnaError,
)
from vna.index import writer
from vna.index.attributes import patient_key
from vna.spool import COPY_CHUNK, Spool

log = logging.getLogger(__name__)

#: Identifies this software in the File Meta Information it writes (PS3.7 D.3.3.2).
IMPLEMENTATION_CLASS_UID = UID("1.2.826.0.1.3680043.8.498.7786.1")
IMPLEMENTATION_VERSION_NAME = "VNA_0_1"
STORED = "stored"
DUPLICATE = "duplicate"


@dataclass
class IngestResult:
    """What happened to one object. ``warnings`` non-empty means a warning status."""

    status: str  # STORED or DUPLICATE
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str
    size: int
    sha256: str
    version: int = 1
    warnings: list[str] = field(default_factory=list)

    @property
    def has_warnings(self) -> bool:
        return bool(self.warnings)


def file_sha256(path: Path) -> tuple[str, int]:
    """SHA-256 and size of a file, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fp:
        while chunk := fp.read(COPY_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _meta_element(element: int, vr: bytes, value: bytes) -> bytes:
    """One explicit VR little endian element of group 0002 (PS3.10 7.1)."""
    if vr in (b"OB", b"UN", b"SQ", b"UT"):
        return struct.pack("<HH2sHI", 0x0002, element, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value


def _padded(text: str, pad: bytes) -> bytes:
    data = text.encode("ascii")
    return data + pad if len(data) % 2 else data


def part10_meta(
    sop_class: str, sop_instance: str, transfer_syntax: str, source_ae: str = ""
) -> bytes:
    """Preamble, ``DICM`` and a File Meta Information group (PS3.10 7.1) as bytes.

    Written by hand: it is the same ten elements for every received object, and building
    them through pydicom costs more than the rest of a small object's ingest.
    """
    body = b"".join(
        [
            _meta_element(0x0001, b"OB", b"\x00\x01"),
            _meta_element(0x0002, b"UI", _padded(sop_class, b"\x00")),
            _meta_element(0x0003, b"UI", _padded(sop_instance, b"\x00")),
            _meta_element(0x0010, b"UI", _padded(transfer_syntax, b"\x00")),
            _meta_element(0x0012, b"UI", _padded(str(IMPLEMENTATION_CLASS_UID), b"\x00")),
            _meta_element(0x0013, b"SH", _padded(IMPLEMENTATION_VERSION_NAME, b" ")),
            _meta_element(0x0016, b"AE", _padded(source_ae[:16], b" ")) if source_ae else b"",
        ]
    )
    group_length = _meta_element(0x0000, b"UL", struct.pack("<I", len(body)))
    return b"\x00" * 128 + b"DICM" + group_length + body


def ingest_stream(
    archive: Archive,
    stream: BinaryIO,
    *,
    source: str,
    expected_study_uid: str | None = None,
    route: str | None = None,
) -> IngestResult:
    """Spool a Part 10 stream to disk (bounded memory), then ingest it."""
    with Spool(archive) as spool:
        spool.copy_from(stream)
        sha = spool.finish()
        return ingest_spooled(
            archive,
            spool.path,
            sha,
            spool.size,
            source=source,
            expected_study_uid=expected_study_uid,
            route=route,
        )


def ingest_file(
    archive: Archive,
    path: Path,
    *,
    source: str,
    expected_sop_class: str | None = None,
    expected_study_uid: str | None = None,
    route: str | None = None,
) -> IngestResult:
    """Ingest a file the caller keeps (the store copies it)."""
    routed = routes.apply(archive, route, path)
    if routed is not None:
        sha, size = file_sha256(routed)
        return ingest_spooled(
            archive,
            routed,
            sha,
            size,
            source=source,
            expected_sop_class=expected_sop_class,
            expected_study_uid=expected_study_uid,
        )
    sha, size = file_sha256(path)
    parsed = read_object(path)
    return _ingest(
        archive,
        parsed,
        sha,
        size,
        source=source,
        move=False,
        expected_sop_class=expected_sop_class,
        expected_study_uid=expected_study_uid,
    )


def ingest_spooled(
    archive: Archive,
    path: Path,
    sha256: str,
    size: int,
    *,
    source: str,
    expected_sop_class: str | None = None,
    expected_study_uid: str | None = None,
    route: str | None = None,
    content: bytes | None = None,
) -> IngestResult:
    """Ingest a spooled file; the store takes it (rename) when it is stored.

    With a ``route`` whose transformation produces another file (vna.routes), that file is
    stored instead and the received one is removed. ``content``: the spooled file's whole
    content when the caller still has it (a small object is then parsed from memory).
    """
    store = archive.store
    reserved = store.reserved_key(path) if isinstance(store, FilesystemStore) else None
    kept = False
    try:
        result = _ingest_spool(
            archive, path, sha256, size, source, expected_sop_class, expected_study_uid, route,
            content,
        )  # fmt: skip
        kept = reserved is not None and result.status == STORED and path.exists()
        return result
    finally:
        # A file reserved in the store (dimse/receive.py) is the object once indexed, so
        # every other outcome removes it; its key is decided either way.
        if reserved is not None:
            assert isinstance(store, FilesystemStore)
            if not kept:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            store.settle(reserved)


def _ingest_spool(
    archive: Archive,
    path: Path,
    sha256: str,
    size: int,
    source: str,
    expected_sop_class: str | None,
    expected_study_uid: str | None,
    route: str | None,
    content: bytes | None,
) -> IngestResult:
    routed = routes.apply(archive, route, path)
    if routed is not None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        path = routed
        sha256, size = file_sha256(path)
        content = None
    flush = _start_flush(archive, path)
    try:
        parsed = read_object(path, content)
        if not parsed.has_preamble:
            path, sha256, size = _add_file_meta(archive, parsed, source)
            earlier = parsed.warnings
            parsed = read_object(path)
            parsed.warnings[:0] = earlier
            if flush is not None:  # the file with the header added is flushed by the store
                flush.close()
                flush = None
        return _ingest(
            archive,
            parsed,
            sha256,
            size,
            source=source,
            move=True,
            expected_sop_class=expected_sop_class,
            expected_study_uid=expected_study_uid,
            flush=flush,
        )
    finally:
        if flush is not None:
            flush.close()


def _start_flush(archive: Archive, path: Path) -> Flush | None:
    """A received file the filesystem store will take starts going to disk (fsync) now,
    while it is parsed and checked; the store then only waits for what is left of it."""
    if not isinstance(archive.store, FilesystemStore):
        return None
    try:
        return Flush(path)
    except OSError:
        return None  # the store reports what is wrong with the file


def _await_flush(flush: Flush, what: str) -> None:
    """Wait for a flush started earlier, with the archive's errors.

    Raises:
        OutOfResources: the disk is full.
        StorageError: the disk failed.
    """
    try:
        flush.wait()
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise OutOfResources(f"the object store is full: cannot flush {what}") from exc
        raise StorageError(f"the object store failed: cannot flush {what}: {exc}") from exc


def _flush_now(path: Path, what: str) -> None:
    """Flush a file's bytes to disk now, with the archive's errors (see _await_flush)."""
    try:
        flush = Flush(path)
    except OSError as exc:
        raise StorageError(f"the object store failed: cannot flush {what}: {exc}") from exc
    _await_flush(flush, what)


def _add_file_meta(archive: Archive, parsed: ParsedObject, source: str) -> tuple[Path, str, int]:
    """A bare data set gets a File Meta Information header (PS3.10) before it is stored."""
    meta = part10_meta(parsed.sop_class_uid, parsed.sop_instance_uid, parsed.transfer_syntax)
    spool = Spool(archive)
    try:
        spool.write(meta)
        with parsed.path.open("rb") as fp:
            fp.seek(parsed.dataset_offset)
            spool.copy_from(fp)
        sha = spool.finish()
    except BaseException:
        spool.discard()
        raise
    with contextlib.suppress(FileNotFoundError):
        parsed.path.unlink()
    parsed.warnings.append("received without File Meta Information; a header was added")
    return spool.path, sha, spool.size


def _check_expectations(
    parsed: ParsedObject, expected_sop_class: str | None, expected_study_uid: str | None
) -> None:
    if expected_sop_class and parsed.sop_class_uid != expected_sop_class:
        raise SopClassMismatch(
            f"the data set's SOP Class UID {parsed.sop_class_uid} does not match "
            f"the request's {expected_sop_class}"
        )
    if expected_study_uid and parsed.study_instance_uid != expected_study_uid:
        raise SopClassMismatch(
            f"the data set's Study Instance UID {parsed.study_instance_uid} is not "
            f"the study the request names ({expected_study_uid})"
        )


def new_storage_key() -> str:
    """An opaque, unique object key (32 hex digits).

    The first four digits change once a minute, so objects received together share a shard
    folder of the filesystem store (fewer folder creations, better locality) while keys
    still spread over all 65,536 shards within six weeks; the rest is random.
    """
    minute = (int(time.time()) // 60) & 0xFFFF
    return f"{minute:04x}{uuid.uuid4().hex[4:]}"


def _ingest(
    archive: Archive,
    parsed: ParsedObject,
    sha256: str,
    size: int,
    *,
    source: str,
    move: bool,
    expected_sop_class: str | None,
    expected_study_uid: str | None,
    flush: Flush | None = None,
) -> IngestResult:
    """Store and index a parsed object. ``flush``: the fsync of the file, started earlier
    (ingest_spooled); the file's folder entry is then flushed while the object is indexed,
    and awaited before the index commits, so the disk and the index work at once."""
    _check_expectations(parsed, expected_sop_class, expected_study_uid)
    result = _new_result(parsed, sha256, size)
    # A check before storing: most duplicates and refusals end here without touching the
    # store (it is repeated, authoritatively, inside the write transaction).
    settings = archive.settings
    with archive.db.connection() as conn:  # a plain connection: cheaper than a session
        previous = _check_policies_in(
            conn, settings.duplicate_policy, settings.study_conflict_policy, parsed, sha256
        )
    if previous is not None and previous.sha256 == sha256:
        return _duplicate(result, parsed, previous, move)
    store = archive.store
    reserved = store.reserved_key(parsed.path) if isinstance(store, FilesystemStore) else None
    key = reserved if move and reserved is not None else new_storage_key()
    # the index row's values are worked out while the file's flush still runs
    values = writer.instance_values(parsed)
    folder: Flush | None = None
    if key == reserved:  # already in place under its key, its name durable: only its bytes
        if flush is not None:
            _await_flush(flush, key)
        else:
            _flush_now(parsed.path, key)
    elif flush is not None and move and isinstance(store, FilesystemStore):
        folder = _put_flushed(archive, store, key, parsed.path, flush)
    else:
        _put(archive, key, parsed.path, move)
    try:
        before_commit = (lambda: _await_flush(folder, key)) if folder is not None else None
        outcome = _index(
            archive, parsed, key, size, sha256, source, before_commit, values,
            absent=previous is None,
        )  # fmt: skip
    except BaseException:
        _remove_quietly(archive, key)
        raise
    finally:
        if folder is not None:
            folder.close()
    if outcome is None:  # another writer stored the same bytes meanwhile
        _remove_quietly(archive, key)
        with archive.db.connection() as conn:
            previous = writer.current_version(conn, parsed.sop_instance_uid)
        assert previous is not None
        return _duplicate(result, parsed, previous, move=False)
    if outcome.replaced_key:
        _remove_quietly(archive, outcome.replaced_key)
    result.version = outcome.version
    result.warnings = outcome.warnings
    return result


def _duplicate(
    result: IngestResult, parsed: ParsedObject, previous: writer.Existing, move: bool
) -> IngestResult:
    result.status = DUPLICATE
    result.version = previous.version
    result.warnings = [*parsed.warnings, "already stored with identical content"]
    if move:
        with contextlib.suppress(FileNotFoundError):
            parsed.path.unlink()
    return result


def _check_policies_in(
    conn: Connection,
    duplicate_policy: str,
    conflict_policy: str,
    parsed: ParsedObject,
    sha256: str,
) -> writer.Existing | None:
    previous = writer.current_version(conn, parsed.sop_instance_uid)
    if previous is not None and previous.sha256 != sha256 and duplicate_policy == "reject":
        raise DuplicateRejected(
            f"SOP Instance {parsed.sop_instance_uid} is already stored with other content "
            "(duplicate policy: reject)"
        )
    if conflict_policy == "reject":
        indexed_patient = writer.study_patient_key(conn, parsed.study_instance_uid)
        if indexed_patient is not None and indexed_patient != patient_key(parsed.metadata):
            raise StudyConflict(
                f"Study {parsed.study_instance_uid} is indexed under another patient "
                "(study conflict policy: reject)"
            )
    return previous


def _put_flushed(
    archive: Archive, store: FilesystemStore, key: str, path: Path, flush: Flush
) -> Flush:
    """Rename a received file into the store once its own flush is done; return the flush
    of its folder entry, running (await it before the object is indexed)."""
    _await_flush(flush, str(path))
    _put(archive, key, path, move=True, flush_folder=False, flushed=True)
    try:
        return store.folder_flush(key)
    except StoreError as exc:
        _remove_quietly(archive, key)
        raise StorageError(f"the object store failed: {exc}") from exc


def _index(
    archive: Archive,
    parsed: ParsedObject,
    key: str,
    size: int,
    sha256: str,
    source: str,
    before_commit: Callable[[], None] | None = None,
    values: dict[str, Any] | None = None,
    *,
    absent: bool = False,
) -> writer.AddOutcome | None:
    """Index a stored object; None when an identical object was indexed concurrently.
    ``before_commit`` runs last inside the write transaction (what must be durable before
    the row is); ``values``: writer.instance_values of the object, when already worked out.

    The checks are repeated inside the write transaction, which is authoritative: on SQLite
    it holds the write lock; on PostgreSQL a concurrent insert of the same SOP Instance UID
    fails on the partial unique index and the attempt is repeated. ``absent``: the caller's
    check just found no current version, so the first attempt relies on that unique index
    instead of looking again (unless study conflicts are refused, which needs the look).
    """
    settings = archive.settings
    if values is None:
        values = writer.instance_values(parsed)  # before the write lock is taken
    for attempt in range(5):
        try:
            with archive.db.transaction() as conn:
                if absent and not attempt and settings.study_conflict_policy != "reject":
                    # found absent just before: an object indexed since under the same SOP
                    # Instance UID makes the insert fail on the unique index of current
                    # versions, and the next attempt checks
                    previous = None
                else:
                    previous = _check_policies_in(
                        conn,
                        settings.duplicate_policy,
                        settings.study_conflict_policy,
                        parsed,
                        sha256,
                    )
                if previous is not None and previous.sha256 == sha256:
                    return None
                outcome = writer.add_instance(
                    conn,
                    parsed,
                    storage_key=key,
                    size=size,
                    sha256=sha256,
                    source=source,
                    previous=previous,
                    duplicate_policy=settings.duplicate_policy,
                    values=values,
                )
                if before_commit is not None:
                    before_commit()
                return outcome
        except IntegrityError:
            log.debug("concurrent ingest of %s, retrying", parsed.sop_instance_uid)
        except OperationalError as exc:
            if not _is_transient(exc):
                raise
            log.debug("transient database conflict on %s, retrying", parsed.sop_instance_uid)
    raise StorageError(f"could not index {parsed.sop_instance_uid}: too many concurrent writers")


@dataclass
class Staged:
    """An object stored and waiting for its index row (bulk import). Picklable once
    detached, so that worker processes can stage and one process can index."""

    index: int
    parsed: ParsedObject
    key: str
    result: IngestResult
    flushed: bool = True  # False: its store folder entry waits for index_staged's flush

    def detach(self) -> Staged:
        """Drop the pydicom data sets (the index needs only the metadata)."""
        self.parsed.dataset = Dataset()
        self.parsed.file_meta = FileMetaDataset()
        return self


Outcome = IngestResult | VnaError | None


def stage_files(
    archive: Archive,
    paths: list[Path],
    *,
    move: bool = False,
    hashes: list[tuple[str, int]] | None = None,
    defer_flush: bool = False,
) -> tuple[list[Outcome], list[Staged]]:
    """Hash, parse, check and store each file (durably); the index rows are not written.

    With ``move`` the store takes the files (a rename on the filesystem store: spooled
    uploads are not copied); ``hashes`` gives (SHA-256, size) already computed while the
    files were received. Returns the outcome of every path that is already decided
    (refused, duplicate) and the stored objects that still need their row (index_staged).
    With ``defer_flush`` the store folder entries are made durable by index_staged, once
    for everything it indexes together (a STOW-RS request stages its parts one by one).
    """
    out: list[Outcome] = [None] * len(paths)
    staged: list[Staged] = []
    settings = archive.settings
    # Objects of a batch share one flush of their store folder (filesystem store), made
    # before this returns (or by index_staged): each is durable before any row is written.
    store = archive.store
    deferred = defer_flush and isinstance(store, FilesystemStore)
    together = (len(paths) > 1 or deferred) and isinstance(store, FilesystemStore)
    with archive.db.engine.connect() as conn:
        for i, path in enumerate(paths):
            try:
                sha, size = hashes[i] if hashes is not None else file_sha256(path)
                flush = _start_flush(archive, path) if move else None
                try:
                    parsed = read_object(path)
                    result = _new_result(parsed, sha, size)
                    previous = _check_policies_in(
                        conn, settings.duplicate_policy, settings.study_conflict_policy, parsed, sha
                    )
                    if previous is not None and previous.sha256 == sha:
                        out[i] = _duplicate(result, parsed, previous, move=False)
                        continue
                    key = new_storage_key()
                    if flush is not None:
                        _await_flush(flush, str(path))
                    _put(
                        archive,
                        key,
                        path,
                        move=move,
                        flush_folder=not together,
                        flushed=flush is not None,
                    )
                finally:
                    if flush is not None:
                        flush.close()
                staged.append(Staged(i, parsed, key, result, flushed=not deferred))
            except VnaError as exc:
                out[i] = exc
            except OSError as exc:
                out[i] = StorageError(f"cannot read {path}: {exc.strerror or exc}")
    if together and not deferred and staged:
        staged = _flush_staged(archive, staged, out)
    return out, staged


def _flush_staged(archive: Archive, staged: list[Staged], out: list[Outcome]) -> list[Staged]:
    """Make the store folder entries of staged objects durable (one flush per folder);
    returns them, or, when the flush fails, removes them, records the error and returns
    none."""
    store = archive.store
    if not isinstance(store, FilesystemStore):
        return staged
    keys = [item.key for item in staged]
    try:
        _store_call(lambda: store.flush_folders(keys))
    except VnaError as exc:
        for item in staged:
            _remove_quietly(archive, item.key)
            out[item.index] = exc
        return []
    for item in staged:
        item.flushed = True
    return staged


def index_staged(archive: Archive, staged: list[Staged], source: str, out: list[Outcome]) -> None:
    """Write the rows of stored objects in one transaction (one by one if that fails);
    each outcome lands in ``out`` at the object's index."""
    waiting = [item for item in staged if not item.flushed]
    if waiting:  # staged with defer_flush: durable names first, then rows
        flushed = {id(item) for item in _flush_staged(archive, waiting, out)}
        staged = [item for item in staged if item.flushed or id(item) in flushed]
    if not staged:
        return
    try:
        _index_together(archive, staged, source, out)
    except Exception:
        log.debug("bulk index failed, indexing one by one", exc_info=True)
        for item in staged:
            out[item.index] = _index_one_staged(archive, item, source)


def ingest_files(
    archive: Archive, paths: list[Path], *, source: str
) -> list[IngestResult | VnaError]:
    """Ingest files the caller keeps, indexing them together in one transaction.

    Bulk import spends most of its time in per-object transactions; here every file is
    parsed, checked and stored (durably) first, then all rows commit at once. Each file is
    still judged on its own: the list holds a result or the error of each path, in order.
    """
    out, staged = stage_files(archive, paths)
    index_staged(archive, staged, source, out)
    return [r if r is not None else StorageError("not processed") for r in out]


def _new_result(parsed: ParsedObject, sha256: str, size: int) -> IngestResult:
    return IngestResult(
        status=STORED,
        sop_class_uid=parsed.sop_class_uid,
        sop_instance_uid=parsed.sop_instance_uid,
        study_instance_uid=parsed.study_instance_uid,
        series_instance_uid=parsed.series_instance_uid,
        transfer_syntax_uid=parsed.transfer_syntax,
        size=size,
        sha256=sha256,
    )


def _index_together(
    archive: Archive,
    staged: list[Staged],
    source: str,
    out: list[Outcome],
) -> None:
    settings = archive.settings
    to_remove: list[str] = []
    done: list[tuple[Staged, IngestResult]] = []
    values = [writer.instance_values(item.parsed) for item in staged]  # before the lock
    with archive.db.transaction() as conn:
        for item, item_values in zip(staged, values, strict=True):
            sha = item.result.sha256
            previous = _check_policies_in(
                conn,
                settings.duplicate_policy,
                settings.study_conflict_policy,
                item.parsed,
                sha,
            )
            if previous is not None and previous.sha256 == sha:
                to_remove.append(item.key)  # the same bytes arrived twice in this batch
                done.append((item, _duplicate(item.result, item.parsed, previous, move=False)))
                continue
            outcome = writer.add_instance(
                conn,
                item.parsed,
                storage_key=item.key,
                size=item.result.size,
                sha256=sha,
                source=source,
                previous=previous,
                duplicate_policy=settings.duplicate_policy,
                values=item_values,
            )
            if outcome.replaced_key:
                to_remove.append(outcome.replaced_key)
            item.result.version = outcome.version
            item.result.warnings = outcome.warnings
            done.append((item, item.result))
    for item, result in done:
        out[item.index] = result
    for key in to_remove:
        _remove_quietly(archive, key)


def _index_one_staged(archive: Archive, item: Staged, source: str) -> IngestResult | VnaError:
    try:
        outcome = _index(
            archive, item.parsed, item.key, item.result.size, item.result.sha256, source
        )
    except VnaError as exc:
        _remove_quietly(archive, item.key)
        return exc
    except Exception as exc:
        _remove_quietly(archive, item.key)
        return StorageError(f"could not index {item.parsed.sop_instance_uid}: {exc}")
    if outcome is None:
        _remove_quietly(archive, item.key)
        item.result.status = DUPLICATE
        item.result.warnings = [*item.parsed.warnings, "already stored with identical content"]
        return item.result
    if outcome.replaced_key:
        _remove_quietly(archive, outcome.replaced_key)
    item.result.version = outcome.version
    item.result.warnings = outcome.warnings
    return item.result


def _is_transient(exc: OperationalError) -> bool:
    """A deadlock or serialization failure (PostgreSQL SQLSTATE 40P01 / 40001), or a busy
    SQLite: the transaction can simply be run again."""
    code = getattr(exc.orig, "sqlstate", None)
    return code in ("40P01", "40001") or "database is locked" in str(exc.orig)


def _put(
    archive: Archive,
    key: str,
    path: Path,
    move: bool,
    *,
    flush_folder: bool = True,
    flushed: bool = False,
) -> None:
    """Store an object durably; with ``flush_folder=False`` (filesystem store only) its
    folder entry waits for ``flush_folders``; ``flushed``: the file's own flush is done."""
    store = archive.store
    if (flushed or not flush_folder) and isinstance(store, FilesystemStore):
        _store_call(
            lambda: store.put_file(key, path, move=move, flush_folder=flush_folder, flushed=flushed)
        )
    else:
        _store_call(lambda: store.put_file(key, path, move=move))


def _store_call(action: Callable[[], object]) -> None:
    """Run a store operation, mapping its errors to the archive's."""
    try:
        action()
    except StoreFull as exc:
        raise OutOfResources(f"the object store is full: {exc}") from exc
    except StoreError as exc:
        raise StorageError(f"the object store failed: {exc}") from exc


def _remove_quietly(archive: Archive, key: str) -> None:
    try:
        archive.store.delete(key)
    except Exception:  # the object becomes an orphan; `vna verify` reports it
        log.exception("could not remove object %s", key)


def iter_files(paths: Iterable[Path]) -> Iterable[Path]:
    """Every regular file under the given files and folders, in a stable order.

    Inside folders, hidden files and folders (a leading dot: ``.DS_Store``, ``._x``, version
    control) are not DICOM media content and are skipped; a file named explicitly is not.
    """
    for path in paths:
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if not name.startswith("."):
                        yield Path(root) / name
        else:
            yield path

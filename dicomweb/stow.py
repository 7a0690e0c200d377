"""STOW-RS (PS3.18 10.5): store instances sent over HTTP.

Accepted request bodies (PS3.18 10.5.1.2):

* ``multipart/related; type="application/dicom"``: each part one PS3.10 file;
* ``multipart/related; type="application/dicom+json"``: metadata and bulk data — a first part
  holding a JSON array of DICOM JSON objects, further parts (photo, video, sound, PDF)
  named by the objects' BulkDataURI values through their Content-Location; each object is
  converted (vna.convert.stow) and the resulting objects stored;
* a bare ``application/dicom`` body (one object), as many tools send it.

Each part is streamed to a spool file as it arrives (dicomweb.multipart), then parsed,
checked and put in the object store on the worker threads while the next part arrives; the
index rows of the whole request are written in one transaction at the end, before the
response, so everything reported stored can be retrieved at once. A part that fails leaves
nothing behind and does not stop the others.

A body that breaks off (connection lost, no closing delimiter): the parts received in full
before the break are stored, the unfinished one is not; with nothing received in full the
answer is 400. The response is the Store Instances Response Module (PS3.18 Table 10.5.3-2)
as DICOM JSON or, when asked for, native DICOM XML.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
from aiohttp import web

from dicomweb.accept import accepted, parse_accept, parse_media_type
from dicomweb.errors import error_response
from dicomweb.http import archive_of, route_of, run, service_url
from dicomweb.multipart import (
    Buffer,
    IncompleteBody,
    MultipartError,
    MultipartReader,
    PartHeaders,
    boundary_of,
)
from dicomweb.xml import to_native_xml
from vna.archive import Archive
from vna.convert.stow import objects_from_bulk
from vna.errors import (
    BadRequest,
    Conflict,
    DuplicateRejected,
    InvalidObject,
    NotAcceptable,
    OutOfResources,
    SopClassMismatch,
    StorageError,
    VnaError,
)
from vna.ingest import (
    DUPLICATE,
    IngestResult,
    Outcome,
    Spool,
    Staged,
    file_sha256,
    index_staged,
    ingest_file,
    ingest_spooled,
    stage_files,
)

log = logging.getLogger(__name__)

DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
DICOM_XML = "application/dicom+xml"
JSON = "application/json"
MULTIPART = "multipart/related"
#: Part media types taken as a PS3.10 file in an application/dicom request.
DICOM_PART_TYPES = ("", DICOM, "application/octet-stream")
#: Parts being parsed and stored on the worker threads while the next one arrives.
IN_FLIGHT = 4
#: Staged objects whose index rows are written together while later parts arrive.
INDEX_BATCH = 16
#: Largest metadata part of a metadata-and-bulk-data request.
MAX_METADATA = 64 * 1024 * 1024
#: At most this many Warning header fields in a response.
MAX_WARNINGS = 20

# -- Failure and warning reasons (PS3.18 10.5.3, PS3.4 B.2.3, PS3.7 C.4) ------------------
PROCESSING_FAILURE = 0x0110
DUPLICATE_SOP_INSTANCE = 0x0111
OUT_OF_RESOURCES = 0xA700
DATA_SET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC000
REFERENCED_TRANSFER_SYNTAX_NOT_SUPPORTED = 0xC122
COERCION_OF_DATA_ELEMENTS = 0xB000
DATA_SET_DOES_NOT_MATCH_SOP_CLASS_WARNING = 0xB007

#: The one table of Failure Reasons (0008,1197): the first class an error is an instance
#: of decides. A Study Instance UID other than the one of ``/studies/{study}`` is 0xA900
#: (PS3.18 10.5.3: "Data Set does not match SOP Class" covers the study mismatch).
FAILURE_REASON: tuple[tuple[type[BaseException], int], ...] = (
    (SopClassMismatch, DATA_SET_DOES_NOT_MATCH_SOP_CLASS),
    (DuplicateRejected, DUPLICATE_SOP_INSTANCE),
    (NotAcceptable, REFERENCED_TRANSFER_SYNTAX_NOT_SUPPORTED),
    (InvalidObject, CANNOT_UNDERSTAND),
    (BadRequest, CANNOT_UNDERSTAND),
    (Conflict, PROCESSING_FAILURE),
    (OutOfResources, OUT_OF_RESOURCES),
    (StorageError, OUT_OF_RESOURCES),
    (BaseException, PROCESSING_FAILURE),
)

# -- HTTP statuses (PS3.18 Table 10.5.3-1) ------------------------------------------------
ALL_STORED = 200
SOME_STORED = 202  # some failed, or stored with warnings
NONE_STORED = 409


def failure_reason(exc: BaseException) -> int:
    """The Failure Reason (0008,1197) of an error."""
    for cls, code in FAILURE_REASON:
        if isinstance(exc, cls):
            return code
    return PROCESSING_FAILURE


def warning_reason(result: IngestResult, received_sha256: str) -> int | None:
    """The Warning Reason (0008,1196) of a stored object, None for a plain success.

    Stored bytes other than those received (a File Meta Information added, a route's
    de-identification) are 0xB000 "Coercion of Data Elements"; an object accepted with
    warnings (a non-conformant value, an index-level note) is 0xB007 "Data Set does not
    match SOP Class", as C-STORE answers it. An identical duplicate is a success: the
    object is in the archive (a Warning header field says so).
    """
    if result.status == DUPLICATE:
        return None
    if received_sha256 and result.sha256 != received_sha256:
        return COERCION_OF_DATA_ELEMENTS
    if result.warnings:
        return DATA_SET_DOES_NOT_MATCH_SOP_CLASS_WARNING
    return None


class WrongPartType(InvalidObject):
    """A part of a media type the request's type does not allow (0xC000)."""


class TooLarge(Exception):
    """The body passed ``dicomweb_max_upload``."""


@dataclass
class Slot:
    """One part (or one converted object) of a request and what became of it."""

    number: int
    outcome: Outcome = None
    staged: Staged | None = None
    received_sha256: str = ""
    sop_class: str = ""
    sop_instance: str = ""


# -- the handler ---------------------------------------------------------------------------


async def store(request: web.Request) -> web.StreamResponse:
    """POST /studies and /studies/{study} (PS3.18 10.5.1)."""
    response_type = _response_type(request)
    media_type, params = _content_type(request)
    archive = archive_of(request)
    limit = archive.settings.dicomweb_max_upload
    length = request.content_length
    if limit and length is not None and length > limit:
        return error_response(
            413, f"the request body ({length} bytes) is larger than the limit ({limit} bytes)"
        )
    stow = Stow(request, archive)
    try:
        if media_type == DICOM:
            await stow.receive_single()
        else:
            await stow.receive_multipart(params)
    except TooLarge:
        stored = await stow.finish()
        return error_response(
            413,
            f"the request body is larger than the limit ({limit} bytes); {stored} "
            "object(s) received in full before it were stored",
        )
    except MultipartError:
        await stow.finish()
        if not stow.complete_parts:
            raise  # nothing was received in full: 400
    except BaseException:
        await stow.abandon()
        raise
    else:
        await stow.finish()
    if not stow.slots:
        raise BadRequest("the request holds no parts")
    if stow.nothing_acceptable():
        return error_response(
            415, f"no part of the request is {DICOM}: " + "; ".join(stow.failure_texts())
        )
    return stow.render(response_type)


def _response_type(request: web.Request) -> str:
    """The response media type; 406 when the client accepts none (before the body is read)."""
    offered = [DICOM_JSON, JSON, DICOM_XML]
    chosen = accepted(parse_accept(request.headers.get("Accept")), offered)
    if chosen is None:
        raise NotAcceptable("a STOW-RS response can be given as " + ", ".join(offered) + " only")
    return chosen


def _content_type(request: web.Request) -> tuple[str, dict[str, str]]:
    header = request.headers.get("Content-Type", "")
    if not header.strip():
        raise web.HTTPUnsupportedMediaType(
            text=f"a STOW-RS request needs a Content-Type ({MULTIPART} or {DICOM})"
        )
    try:
        media_type, params = parse_media_type(header)
    except BadRequest as exc:
        raise web.HTTPUnsupportedMediaType(text=str(exc)) from exc
    if media_type not in (MULTIPART, DICOM):
        raise web.HTTPUnsupportedMediaType(
            text=f"{media_type} is not accepted; send {MULTIPART} (type {DICOM} or "
            f"{DICOM_JSON}) or a single {DICOM} body"
        )
    if media_type == MULTIPART:
        kind = params.get("type", "").strip().lower()
        if kind and kind not in (DICOM, DICOM_JSON):
            raise web.HTTPUnsupportedMediaType(
                text=f"multipart/related of type {kind} is not accepted; the type must be "
                f"{DICOM} or {DICOM_JSON}"
            )
        boundary_of(params)
    return media_type, params


class Stow:
    """One STOW-RS request: its parts, their outcomes, and the response."""

    def __init__(self, request: web.Request, archive: Archive) -> None:
        self.request = request
        self.archive = archive
        self.expected_study = request.match_info.get("study") or None
        self.route = route_of(request)
        self.source = f"stow-rs:{request.remote or '-'}"
        self.slots: list[Slot] = []
        self._pending: set[asyncio.Future[None]] = set()
        self._ready: list[Slot] = []  # staged, waiting for their index rows
        self._indexing: asyncio.Future[None] | None = None
        self._spools: list[Spool] = []
        self._scratch: list[Path] = []
        self._received = 0
        self._limit = archive.settings.dicomweb_max_upload
        self._over_limit = False
        #: Parts received in full (stored or not).
        self.complete_parts = 0

    # -- reading the body ----------------------------------------------------------------

    async def _read(self) -> bytes:
        """The next chunk of the body; past ``dicomweb_max_upload`` TooLarge (the bytes up
        to the limit are still handed on, so parts complete within it can be stored)."""
        if self._over_limit:
            raise TooLarge()
        data, _end_of_chunk = await self.request.content.readchunk()  # no joining
        self._received += len(data)
        if self._limit and self._received > self._limit:
            self._over_limit = True
            data = data[: len(data) - (self._received - self._limit)]
            if not data:
                raise TooLarge()
        return data

    def _slot(self) -> Slot:
        slot = Slot(len(self.slots) + 1)
        self.slots.append(slot)
        return slot

    async def receive_single(self) -> None:
        """A bare application/dicom body: one object."""
        slot = self._slot()
        spool = await self._new_spool()
        buffered = bytearray()
        try:
            while True:
                try:
                    data = await self._read()
                except (ConnectionError, OSError) as exc:
                    raise IncompleteBody(f"the connection was lost inside the body: {exc}") from exc
                except TooLarge:
                    raise
                except Exception as exc:
                    if type(exc).__module__.startswith("aiohttp"):
                        raise IncompleteBody(f"the body is incomplete: {exc}") from exc
                    raise
                if data:
                    buffered += data
                if len(buffered) >= (1 << 20) or (not data and buffered):
                    await run(self.request, spool.write, bytes(buffered))
                    buffered.clear()
                if not data:
                    break
        except BaseException:
            self._forget(spool)
            raise
        if spool.size == 0:
            self._forget(spool)
            self.slots.clear()
            raise BadRequest("the request body is empty")
        self._submit(slot, spool)

    async def receive_multipart(self, params: dict[str, str]) -> None:
        """A multipart/related body, parts dispatched on the request's ``type``."""
        reader = MultipartReader(self._read, boundary_of(params))
        kind = params.get("type", "").strip().lower()
        first = await reader.next_part()
        if first is None:
            return
        if not kind:
            kind = DICOM_JSON if first.media_type == DICOM_JSON else DICOM
        if kind == DICOM_JSON:
            await self._receive_bulk(reader, first.media_type)
            return
        part: PartHeaders | None = first
        while part is not None:
            slot = self._slot()
            if part.media_type not in DICOM_PART_TYPES:
                slot.outcome = WrongPartType(
                    f"part {part.number} is {part.media_type}, not {DICOM}"
                )
                self.complete_parts += 1
            else:
                try:
                    pieces = await reader.read_pieces()
                    whole = not reader.in_part
                    spool = None if whole else await self._spool_part(reader, pieces)
                except MultipartError as exc:
                    slot.outcome = exc
                    raise
                await self._throttle()
                if spool is None:  # the whole part came in one read: spool it on the worker
                    self._submit_job(slot, self._take_pieces, pieces)
                else:
                    self._submit(slot, spool)
            try:
                part = await reader.next_part()
            except MultipartError as exc:
                self._slot().outcome = exc  # the part whose headers broke off
                raise

    async def _new_spool(self) -> Spool:
        spool = await run(self.request, Spool, self.archive)
        self._spools.append(spool)
        return spool

    def _forget(self, spool: Spool) -> None:
        spool.discard()
        with contextlib.suppress(ValueError):
            self._spools.remove(spool)

    async def _spool_part(
        self, reader: MultipartReader, first: list[Buffer] | None = None
    ) -> Spool:
        spool: Spool | None = None
        try:
            if first:
                spool = await run(self.request, self._open_spool, first)
            while pieces := await reader.read_pieces():
                if spool is None:
                    spool = await run(self.request, self._open_spool, pieces)
                else:
                    await run(self.request, spool.write_all, pieces)
            if spool is None:
                spool = await run(self.request, self._open_spool, [])
        except BaseException:
            if spool is not None:
                self._forget(spool)
            raise
        return spool

    def _open_spool(self, first: list[Buffer]) -> Spool:
        spool = Spool(self.archive)
        self._spools.append(spool)
        spool.write_all(first)
        return spool

    def _submit(self, slot: Slot, spool: Spool) -> None:
        """Parse, check and store a received part on the worker threads."""
        with contextlib.suppress(ValueError):
            self._spools.remove(spool)  # the job discards it
        self._submit_job(slot, self._take_spool, spool)

    def _submit_job(self, slot: Slot, job: Callable[[Slot, Any], None], arg: Any) -> None:
        self.complete_parts += 1
        future = asyncio.ensure_future(run(self.request, job, slot, arg))
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)
        future.add_done_callback(lambda _f: self._staged(slot))

    def _staged(self, slot: Slot) -> None:
        """A part is stored; its row is written with the next batch."""
        if slot.staged is not None:
            self._ready.append(slot)
        self._index_ready(INDEX_BATCH)

    def _index_ready(self, at_least: int) -> None:
        """Write the rows of the staged objects on a worker thread (one batch at a time)
        while later parts are still arriving."""
        if self._indexing is not None and not self._indexing.done():
            return
        if len(self._ready) < max(1, at_least):
            return
        batch, self._ready = self._ready, []
        future = asyncio.ensure_future(run(self.request, self._index_slots, batch))
        self._indexing = future
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)
        future.add_done_callback(lambda _f: self._index_ready(INDEX_BATCH))

    async def _throttle(self) -> None:
        while len(self._pending) >= IN_FLIGHT:
            await asyncio.wait(set(self._pending), return_when=asyncio.FIRST_COMPLETED)

    # -- metadata and bulk data (PS3.18 10.5.1.2.2) ----------------------------------------

    async def _receive_bulk(self, reader: MultipartReader, first_type: str) -> None:
        if first_type not in (DICOM_JSON, JSON):
            raise BadRequest(
                f"the first part of a {DICOM_JSON} request must be the metadata "
                f"({DICOM_JSON}), not {first_type or 'untyped'}"
            )
        metadata = await self._spool_part(reader)
        if metadata.size > MAX_METADATA:
            raise BadRequest(f"the metadata part is larger than {MAX_METADATA} bytes")
        parts: dict[str, tuple[str, Path]] = {}
        while (part := await reader.next_part()) is not None:
            spool = await self._spool_part(reader)
            location = part.content_location or f"part-{part.number}"
            parts[location] = (part.content_type or "application/octet-stream", spool.path)
        await run(self.request, self._convert_all, metadata, parts)

    def _convert_all(self, metadata: Spool, parts: dict[str, tuple[str, Path]]) -> None:
        """Convert each metadata object with the parts it names, and stage the results."""
        metadata.finish()
        for spool in self._spools:
            spool.finish()
        try:
            objects = json.loads(metadata.path.read_bytes())
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(f"the metadata part is not JSON: {exc}") from exc
        if isinstance(objects, dict):
            objects = [objects]
        if not isinstance(objects, list) or not objects:
            raise BadRequest("the metadata part must be a JSON array of DICOM JSON objects")
        scratch = self.archive.spool_dir / f"{uuid.uuid4().hex}.bulk"
        self._scratch.append(scratch)
        for number, obj in enumerate(objects, start=1):
            slot = self._slot()
            slot.sop_class, slot.sop_instance = _json_uids(obj)
            try:
                files = objects_from_bulk(obj, parts, scratch / str(number))
            except VnaError as exc:
                slot.outcome = exc
                continue
            except Exception as exc:  # a converter bug: this object fails, not the request
                log.exception("STOW-RS conversion of metadata object %d failed", number)
                slot.outcome = VnaError(f"conversion failed: {exc}")
                continue
            for index, path in enumerate(files):
                target = slot if index == 0 else self._slot()
                sha, size = file_sha256(path)
                self._take(target, path, sha, size, spooled=False)

    # -- the worker-thread side ----------------------------------------------------------

    def _take_pieces(self, slot: Slot, pieces: list[Buffer]) -> None:
        """A part received whole: spool it, then as :meth:`_take_spool`."""
        try:
            spool = Spool(self.archive)
        except VnaError as exc:
            slot.outcome = exc
            return
        except OSError as exc:
            slot.outcome = StorageError(f"cannot spool the part: {exc.strerror or exc}")
            return
        try:
            spool.write_all(pieces)
        except VnaError as exc:
            slot.outcome = exc
            spool.discard()
            return
        self._take_spool(slot, spool)

    def _take_spool(self, slot: Slot, spool: Spool) -> None:
        try:
            sha = spool.finish()
            self._take(slot, spool.path, sha, spool.size, spooled=True)
        except VnaError as exc:
            slot.outcome = exc
        finally:
            spool.discard()

    def _take(self, slot: Slot, path: Path, sha: str, size: int, *, spooled: bool) -> None:
        """Parse, check and store one object; its index row waits for :meth:`finish`
        unless a route transforms it (then it is ingested whole, here)."""
        slot.received_sha256 = sha
        try:
            if self.route is not None or not _has_preamble(path):
                if spooled:
                    slot.outcome = ingest_spooled(
                        self.archive,
                        path,
                        sha,
                        size,
                        source=self.source,
                        expected_study_uid=self.expected_study,
                        route=self.route,
                    )
                else:
                    slot.outcome = ingest_file(
                        self.archive,
                        path,
                        source=self.source,
                        expected_study_uid=self.expected_study,
                        route=self.route,
                    )
            else:
                done, staged = stage_files(
                    self.archive, [path], move=spooled, hashes=[(sha, size)], defer_flush=True
                )
                if staged:
                    item = staged[0]
                    mismatch = self._study_mismatch(item.result)
                    if mismatch is not None:
                        self._unstore(item.key)
                        slot.outcome = mismatch
                        slot.sop_class = item.result.sop_class_uid
                        slot.sop_instance = item.result.sop_instance_uid
                    else:
                        slot.staged = item
                else:
                    outcome = done[0]
                    if isinstance(outcome, IngestResult):
                        outcome = self._study_mismatch(outcome) or outcome
                    slot.outcome = outcome or StorageError("the object was not processed")
        except VnaError as exc:
            slot.outcome = exc
        except OSError as exc:
            slot.outcome = StorageError(f"cannot read the received object: {exc.strerror or exc}")
        except Exception as exc:  # a bug: this part fails, the others go on
            log.exception("STOW-RS part %d failed", slot.number)
            slot.outcome = VnaError(f"processing failure: {exc}")
        result = slot.outcome if slot.staged is None else slot.staged.result
        if isinstance(result, IngestResult):
            slot.sop_class, slot.sop_instance = result.sop_class_uid, result.sop_instance_uid
        elif not slot.sop_instance:
            slot.sop_class, slot.sop_instance = _peek_uids(path)

    def _study_mismatch(self, result: IngestResult) -> SopClassMismatch | None:
        if self.expected_study and result.study_instance_uid != self.expected_study:
            return SopClassMismatch(
                f"the object's Study Instance UID {result.study_instance_uid} is not the "
                f"study of the request ({self.expected_study})"
            )
        return None

    def _unstore(self, key: str) -> None:
        try:
            self.archive.store.delete(key)
        except Exception:  # an orphan object; `vna verify` reports it
            log.exception("could not remove object %s", key)

    def _index_slots(self, slots: list[Slot]) -> None:
        """Write the index rows of staged objects in one transaction."""
        staged: list[Staged] = []
        out: list[Outcome] = [None] * len(slots)
        for position, slot in enumerate(slots):
            if slot.staged is not None:
                slot.staged.index = position
                staged.append(slot.staged)
        index_staged(self.archive, staged, self.source, out)
        for position, slot in enumerate(slots):
            if slot.staged is not None:
                slot.outcome = out[position] or StorageError("the object was not indexed")
                slot.staged = None

    def _index_all(self) -> int:
        """Write the rows of every object still staged; the number of objects stored."""
        self._ready.clear()
        self._index_slots([slot for slot in self.slots if slot.staged is not None])
        return sum(isinstance(slot.outcome, IngestResult) for slot in self.slots)

    # -- finishing -----------------------------------------------------------------------

    async def finish(self) -> int:
        """Wait for the parts in progress, write the index rows, clean up; the number of
        objects stored."""
        try:
            await self._wait_pending()
            return await run(self.request, self._index_all)
        finally:
            await run(self.request, self._cleanup)

    async def abandon(self) -> None:
        """After an unexpected error: nothing staged stays in the store unindexed."""
        with contextlib.suppress(Exception):
            await self._wait_pending()
        for slot in self.slots:
            if slot.staged is not None:
                self._unstore(slot.staged.key)
                slot.staged = None
        self._cleanup()

    async def _wait_pending(self) -> None:
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    def _cleanup(self) -> None:
        for spool in self._spools:
            spool.discard()
        self._spools.clear()
        for folder in self._scratch:
            shutil.rmtree(folder, ignore_errors=True)
        self._scratch.clear()

    # -- the response ----------------------------------------------------------------------

    def nothing_acceptable(self) -> bool:
        """Every part was of a media type this request does not take."""
        return bool(self.slots) and all(isinstance(s.outcome, WrongPartType) for s in self.slots)

    def failure_texts(self) -> list[str]:
        return [str(s.outcome) for s in self.slots if isinstance(s.outcome, BaseException)]

    def render(self, response_type: str) -> web.Response:
        """The Store Instances Response Module (PS3.18 Table 10.5.3-2) and its status."""
        base = service_url(self.request)
        referenced: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        warnings: list[str] = []
        studies: set[str] = set()
        warned = False
        for slot in self.slots:
            outcome = slot.outcome
            if isinstance(outcome, IngestResult):
                url = (
                    f"{base}/studies/{outcome.study_instance_uid}/series/"
                    f"{outcome.series_instance_uid}/instances/{outcome.sop_instance_uid}"
                )
                item = _sop_item(outcome.sop_class_uid, outcome.sop_instance_uid)
                item["00081190"] = {"vr": "UR", "Value": [url]}
                reason = warning_reason(outcome, slot.received_sha256)
                if reason is not None:
                    item["00081196"] = {"vr": "US", "Value": [reason]}
                    warned = True
                    warnings.append(
                        f"{outcome.sop_instance_uid}: " + "; ".join(outcome.warnings or ["coerced"])
                    )
                elif outcome.status == DUPLICATE:
                    warnings.append(f"{outcome.sop_instance_uid}: already stored, identical")
                studies.add(outcome.study_instance_uid)
                referenced.append(item)
            else:
                error = outcome if outcome is not None else StorageError("not processed")
                item = _sop_item(slot.sop_class, slot.sop_instance)
                item["00081197"] = {"vr": "US", "Value": [failure_reason(error)]}
                failed.append(item)
                warnings.append(f"part {slot.number}: {error}")
        body: dict[str, Any] = {}
        if len(studies) == 1:
            body["00081190"] = {"vr": "UR", "Value": [f"{base}/studies/{studies.pop()}"]}
        if failed:
            body["00081198"] = {"vr": "SQ", "Value": failed}
        if referenced:
            body["00081199"] = {"vr": "SQ", "Value": referenced}
        if not referenced:
            status = NONE_STORED
        elif failed or warned:
            status = SOME_STORED
        else:
            status = ALL_STORED
        response: web.Response
        if response_type == DICOM_XML:
            response = web.Response(status=status, body=to_native_xml(body), content_type=DICOM_XML)
        else:
            # no charset parameter: DICOM JSON is UTF-8 by definition (PS3.18 F.2), and
            # clients (dicomweb-client) compare the media type exactly
            text = json.dumps(body, ensure_ascii=False)
            response = web.Response(
                status=status, body=text.encode("utf-8"), content_type=response_type
            )
        for text in warnings[:MAX_WARNINGS]:
            response.headers.add("Warning", _warning_value(text))
        return response


# -- helpers -------------------------------------------------------------------------------


def _sop_item(sop_class: str, sop_instance: str) -> dict[str, Any]:
    """Referenced SOP Class/Instance UID of a sequence item (left out when unknown)."""
    item: dict[str, Any] = {}
    if sop_class:
        item["00081150"] = {"vr": "UI", "Value": [sop_class]}
    if sop_instance:
        item["00081155"] = {"vr": "UI", "Value": [sop_instance]}
    return item


def _warning_value(text: str) -> str:
    """A Warning header field value (RFC 9111 5.5; PS3.18 8.10.3): code 299, quoted text."""
    clean = " ".join(text.split())
    clean = "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in clean)
    clean = clean.replace("\\", "/").replace('"', "'")
    if len(clean) > 300:
        clean = clean[:297] + "..."
    return f'299 - "{clean}"'


def _has_preamble(path: Path) -> bool:
    with path.open("rb") as fp:
        head = fp.read(132)
    return len(head) == 132 and head[128:132] == b"DICM"


def _peek_uids(path: Path) -> tuple[str, str]:
    """SOP Class and Instance UID of an object that failed, when they can be read."""
    try:
        ds = pydicom.dcmread(
            path,
            stop_before_pixels=True,
            force=True,
            specific_tags=["SOPClassUID", "SOPInstanceUID"],
        )
        return str(ds.get("SOPClassUID", "") or ""), str(ds.get("SOPInstanceUID", "") or "")
    except Exception:
        return "", ""


def _json_uids(obj: Any) -> tuple[str, str]:
    """SOP Class and Instance UID of a DICOM JSON object, when given."""
    values = []
    for tag in ("00080016", "00080018"):
        element = obj.get(tag) if isinstance(obj, dict) else None
        value = element.get("Value") if isinstance(element, dict) else None
        values.append(str(value[0]) if isinstance(value, list) and value else "")
    return values[0], values[1]

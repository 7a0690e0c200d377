"""WADO-RS (PS3.18 10.4): instances, metadata, frames and bulk data.

Instances stream part by part (one instance in memory at most, large ones in chunks);
metadata is the precomputed DICOM JSON of the index joined as text, its relative
BulkDataURIs made absolute by string replacement; frames are one index session and one
ranged read each. Every representation carries an ETag derived from the SHA-256 of the
instances it comes from, and ``If-None-Match`` is answered with 304.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

from aiohttp import web

from dicomweb import multipart_out, wado_media
from dicomweb.accept import MediaRange
from dicomweb.http import archive_of, json_response, run, service_url
from dicomweb.wado_media import CACHE_CONTROL, OCTET, caching, not_modified
from vna import retrieve as core
from vna import transcode
from vna.archive import Archive
from vna.errors import BadRequest, NotAcceptable
from vna.retrieve import InstanceRef

log = logging.getLogger(__name__)

#: Instances up to this size are read in one go (and the next one read ahead).
WHOLE_READ = 8 << 20
#: Media types of metadata.
JSON_TYPES = ("application/dicom+json", "application/json")
DICOM_XML = "application/dicom+xml"
#: Bulk data paths of pixel data (served frame by frame when encapsulated).
PIXEL_PATHS = ("7FE00010", "7FE00008", "7FE00009")


def instance_url(base: str, ref: InstanceRef) -> str:
    """Absolute URL of an instance resource."""
    return (
        f"{base}/studies/{ref.study_uid}/series/{ref.series_uid}/instances/{ref.sop_instance_uid}"
    )


def _uids(request: web.Request) -> tuple[str, str | None, str | None]:
    info = request.match_info
    return info["study"], info.get("series"), info.get("instance")


# -- instances ---------------------------------------------------------------------------------


def _read_whole(archive: Archive, ref: InstanceRef) -> bytes:
    return b"".join(core.iter_instance(archive, ref, chunk_size=WHOLE_READ))


def _transcoded(archive: Archive, ref: InstanceRef, ts: str) -> bytes:
    with core.open_instance(archive, ref) as fp:
        return transcode.transcode_file(fp, ts)


def _read_video(archive: Archive, ref: InstanceRef) -> bytes:
    span = core.video_span(archive, ref)
    return core.read_spans(archive, ref, [span])[0]


async def _chunks(request: web.Request, ref: InstanceRef) -> AsyncIterator[bytes]:
    """The stored bytes of a large instance, chunk by chunk off the event loop."""
    iterator = core.iter_instance(archive_of(request), ref)
    while True:
        chunk = await run(request, next, iterator, None)
        if chunk is None:
            return
        yield chunk


def part10_header(ref: InstanceRef, head: bytes) -> bytes:
    """A File Meta Information header (PS3.10 7.1) for an object stored as a bare data set
    (application/dicom is a Part 10 file, PS3.18 8.7.3.1); empty when it has one."""
    if head[128:132] == b"DICM":
        return b""
    from vna.ingest import part10_meta

    return part10_meta(ref.sop_class_uid, ref.sop_instance_uid, ref.transfer_syntax_uid)


def _body_job(
    archive: Archive, ref: InstanceRef, choice: wado_media.InstanceChoice
) -> bytes | None:
    """The whole body of one part, or None when it is streamed in chunks."""
    if choice.part_type != wado_media.DICOM:
        return _read_video(archive, ref)
    if choice.convert:
        return _transcoded(archive, ref, choice.ts)
    if ref.size <= WHOLE_READ:
        body = _read_whole(archive, ref)
        prefix = part10_header(ref, body[:132])
        return prefix + body if prefix else body
    return None


async def _large(request: web.Request, ref: InstanceRef) -> tuple[int, AsyncIterator[bytes]]:
    """Length and chunks of a large stored instance (a header added when it has none)."""
    chunks = _chunks(request, ref)
    first = await chunks.__anext__()
    prefix = part10_header(ref, first[:132])

    async def body() -> AsyncIterator[bytes]:
        yield prefix + first
        async for chunk in chunks:
            yield chunk

    return len(prefix) + ref.size, body()


async def retrieve_instances(request: web.Request) -> web.StreamResponse:
    """Study, series or instance (PS3.18 10.4.1.1.1): multipart/related of Part 10 objects
    (or single-part application/dicom for one instance), or of video bitstreams."""
    archive = archive_of(request)
    study, series, instance = _uids(request)
    ranges = wado_media.accept_of(request)
    refs = await run(request, core.find_instances, archive, study, series, instance)
    chosen: list[tuple[InstanceRef, wado_media.InstanceChoice]] = []
    skipped: list[str] = []
    for ref in refs:
        choice = wado_media.choose_instance(ranges, ref, allow_single=instance is not None)
        if choice is None:
            skipped.append(ref.sop_instance_uid)
        else:
            chosen.append((ref, choice))
    if not chosen:
        raise NotAcceptable(
            "no acceptable representation: ask for multipart/related; "
            'type="application/dicom" with a transfer-syntax this server can produce '
            "(transfer-syntax=* gives the stored one)"
        )
    etag = core.representation_tag(
        "instances", *[(r.sha256, c.part_type, c.ts, c.single) for r, c in chosen]
    )
    cached = not_modified(request, etag)
    if cached is not None:
        return cached
    headers = caching(etag)
    if skipped:
        headers["Warning"] = (
            f'299 {request.host} "{len(skipped)} instance(s) left out: no acceptable '
            'transfer syntax"'
        )
    base = service_url(request)
    first = chosen[0][1]
    if first.single:
        ref, choice = chosen[0]
        body = await run(request, _body_job, archive, ref, choice)
        content_type = wado_media.part_content_type(choice.part_type, choice.ts)
        if body is not None:
            headers["Content-Location"] = instance_url(base, ref)
            return web.Response(body=body, headers={**headers, "Content-Type": content_type})
        response = web.StreamResponse(headers={**headers, "Content-Type": content_type})
        response.content_length, chunks = await _large(request, ref)
        await response.prepare(request)
        async for chunk in chunks:
            await response.write(chunk)
        await response.write_eof()
        return response
    # the first body is made before the status line goes out, so that an object that
    # cannot be converted is still answered 406; later ones that fail are left out (logged)
    first_body = await run(request, _body_job, archive, chosen[0][0], chosen[0][1])
    stream = multipart_out.MultipartStream(request, first.part_type, headers=headers)
    await stream.start()
    pending: asyncio.Future[bytes | None] | None = None
    for index, (ref, choice) in enumerate(chosen):
        try:
            body = first_body if index == 0 else await pending if pending is not None else None
        except NotAcceptable as exc:
            log.warning("instance %s left out of a retrieve: %s", ref.sop_instance_uid, exc)
            body, choice = b"", None
        pending = None
        if index + 1 < len(chosen):  # read the next one while this one is written
            nref, nchoice = chosen[index + 1]
            pending = asyncio.ensure_future(run(request, _body_job, archive, nref, nchoice))
        if choice is None:
            continue
        part_type = wado_media.part_content_type(choice.part_type, choice.ts)
        location = instance_url(base, ref)
        if body is not None:
            await stream.part(part_type, [body], location=location, length=len(body))
        else:
            length, chunks = await _large(request, ref)
            await stream.part(part_type, chunks, location=location, length=length)
    return await stream.finish()


async def retrieve(request: web.Request) -> web.StreamResponse:
    """GET a study, series or instance (PS3.18 10.4.1.1.1)."""
    return await retrieve_instances(request)


# -- metadata ----------------------------------------------------------------------------------


def _xml_encoder() -> Any:
    """``dicomweb.xml.to_native_xml`` when that module is present, else None."""
    try:
        from importlib import import_module

        return getattr(import_module("dicomweb.xml"), "to_native_xml", None)
    except ImportError:
        return None


def metadata_text(archive: Archive, refs: Sequence[InstanceRef], base: str) -> str:
    """The DICOM JSON array of the instances, BulkDataURIs absolute (no parsing)."""
    relative = '"BulkDataURI":"' + retrieve_bulk_prefix()
    pieces = []
    for ref, text in zip(refs, core.metadata_texts(archive, refs), strict=True):
        absolute = json.dumps(instance_url(base, ref) + "/", ensure_ascii=False)[1:-1]
        pieces.append(text.replace(relative, '"BulkDataURI":"' + absolute + retrieve_bulk_prefix()))
    return "[" + ",".join(pieces) + "]"


def _json_metadata(
    archive: Archive,
    uids: tuple[str | None, str | None, str | None],
    base: str,
    if_none_match: str | None,
) -> tuple[str, str | None]:
    """The entity tag of a metadata answer and its DICOM JSON text (None when the client's
    If-None-Match already holds the tag)."""
    refs = core.find_instances(archive, *uids)
    etag = core.representation_tag(
        "metadata", "application/dicom+json", base, *[r.sha256 for r in refs]
    )
    if if_none_match:
        tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
        if "*" in tags or etag in tags:
            return etag, None
    return etag, metadata_text(archive, refs, base)


def retrieve_bulk_prefix() -> str:
    """The relative prefix of BulkDataURIs in precomputed metadata."""
    from vna.dicomjson import BULK_URI_PREFIX

    return BULK_URI_PREFIX


def _metadata_xml(archive: Archive, refs: Sequence[InstanceRef], base: str) -> list[bytes]:
    encoder = _xml_encoder()
    objects = json.loads(metadata_text(archive, refs, base))
    return [encoder(obj) for obj in objects]


def _metadata_type(ranges: list[MediaRange]) -> str | None:
    xml = _xml_encoder() is not None
    for r in ranges:
        if r.type in JSON_TYPES:
            return "application/dicom+json"
        if r.type in ("*/*", "*", "application/*"):
            return "application/dicom+json"
        if xml and r.type == "multipart/related" and r.params.get("type", "").lower() == DICOM_XML:
            return DICOM_XML
    return None


async def metadata(request: web.Request) -> web.StreamResponse:
    """GET …/metadata at study, series or instance level (PS3.18 10.4.1.1.2)."""
    archive = archive_of(request)
    study, series, instance = _uids(request)
    media = _metadata_type(wado_media.accept_of(request))
    if media is None:
        raise NotAcceptable("metadata is available as application/dicom+json")
    base = service_url(request)
    if media != DICOM_XML:  # the common case in one worker job: find, tag, then the text
        if_none_match = request.headers.get("If-None-Match")
        etag, text = await run(
            request, _json_metadata, archive, (study, series, instance), base, if_none_match
        )
        if text is None:
            cached = not_modified(request, etag)
            assert cached is not None
            return cached
        return json_response(request, text, headers=caching(etag))
    refs = await run(request, core.find_instances, archive, study, series, instance)
    etag = core.representation_tag("metadata", media, base, *[r.sha256 for r in refs])
    cached = not_modified(request, etag)
    if cached is not None:
        return cached
    if media == DICOM_XML:
        bodies = await run(request, _metadata_xml, archive, refs, base)
        boundary = multipart_out.new_boundary()
        body = multipart_out.build(boundary, [(DICOM_XML, b, None) for b in bodies])
        headers = {**caching(etag), "Content-Type": multipart_out.content_type(DICOM_XML, boundary)}
        return web.Response(body=body, headers=headers)
    text = await run(request, metadata_text, archive, refs, base)
    return json_response(request, text, headers=caching(etag))


# -- frames ------------------------------------------------------------------------------------


def parse_frame_list(text: str) -> list[int]:
    """``1,3,3`` → [1, 3, 3]: 1-based, in request order, repeats kept (PS3.18 10.4.1.1.5).

    Raises:
        BadRequest: an empty list, a non-number, or a number below 1.
    """
    numbers = []
    for item in text.split(","):
        item = item.strip()
        if not item.isdigit():
            raise BadRequest(f"frame list {text!r}: {item!r} is not a frame number")
        n = int(item)
        if n < 1:
            raise BadRequest(f"frame list {text!r}: frame numbers start at 1")
        numbers.append(n)
    if len(numbers) > 100_000:
        raise BadRequest("frame list too long")
    return numbers


def stored_frames(archive: Archive, ref: InstanceRef, numbers: Sequence[int]) -> list[bytes]:
    """Frames as stored when their spans are not indexed: read the object, split it."""
    import pydicom
    from pydicom.encaps import generate_frames

    with core.open_instance(archive, ref) as fp:
        ds = pydicom.dcmread(fp, force=True)
    if not ref.pixel_encapsulated:
        raise NotAcceptable("frames of this object are not byte-addressable")
    frames = list(generate_frames(ds.PixelData, number_of_frames=ref.number_of_frames))
    return [frames[n - 1] for n in numbers]


def frame_bodies(
    archive: Archive,
    ref: InstanceRef,
    spans: list[tuple[int, int, int]] | None,
    numbers: Sequence[int],
    choice: wado_media.FrameChoice,
) -> list[bytes]:
    """The bytes of each requested frame in the chosen representation."""
    from vna import render

    if not choice.decode:
        if spans is not None:
            return core.read_spans(archive, ref, spans)
        return stored_frames(archive, ref, numbers)
    attrs = core.attributes(archive, ref)
    return [render.native_bytes(a, attrs) for a in core.decode_frames(archive, ref, numbers, attrs)]


def _frames_job(
    archive: Archive,
    uids: tuple[str, str, str],
    numbers: list[int],
    ranges: list[MediaRange],
    if_none_match: str | None,
) -> tuple[wado_media.FrameChoice, str, list[bytes] | None]:
    """Locate, choose and read in one trip to the worker threads (the hot path of tiles)."""
    ref, spans = core.locate_frames(archive, *uids, numbers)
    choice = wado_media.choose_frames(ranges, ref, len(numbers))
    if choice is None:
        raise NotAcceptable(
            f"frames of {ref.sop_instance_uid} are stored as "
            f"{wado_media.media_of(ref.transfer_syntax_uid)} ({ref.transfer_syntax_uid}); "
            "none of the accepted media types can be produced"
        )
    etag = core.representation_tag("frames", ref.sha256, numbers, choice)
    if if_none_match and etag in {t.strip().removeprefix("W/") for t in if_none_match.split(",")}:
        return choice, etag, None
    return choice, etag, frame_bodies(archive, ref, spans, numbers, choice)


async def frames(request: web.Request) -> web.StreamResponse:
    """GET …/frames/{list} (PS3.18 10.4.1.1.5)."""
    numbers = parse_frame_list(request.match_info["frames"])
    study, series, instance = _uids(request)
    assert series is not None and instance is not None
    choice, etag, bodies = await run(
        request,
        _frames_job,
        archive_of(request),
        (study, series, instance),
        numbers,
        wado_media.accept_of(request),
        request.headers.get("If-None-Match"),
    )
    if bodies is None:
        return web.Response(status=304, headers=caching(etag))
    part_type = wado_media.part_content_type(choice.media_type, choice.ts)
    headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL}
    if choice.single:
        return web.Response(body=bodies[0], headers={**headers, "Content-Type": part_type})
    boundary = multipart_out.new_boundary()
    body = multipart_out.build(boundary, [(part_type, b, None) for b in bodies])
    headers["Content-Type"] = multipart_out.content_type(choice.media_type, boundary)
    return web.Response(body=body, headers=headers)


# -- bulk data ---------------------------------------------------------------------------------


def _bulk_choice(ranges: list[MediaRange]) -> bool | None:
    """True for single part, False for multipart, None when octet-stream is not accepted."""
    for r in ranges:
        if r.type == "multipart/related":
            inner = r.params.get("type", OCTET).lower()
            if inner in (OCTET, "*/*", "*", "application/*"):
                return False
        elif r.type in ("*/*", "*", "multipart/*"):
            return False
        elif r.type in (OCTET, "application/*"):
            return True
    return None


def _bulk_job(
    archive: Archive, uids: tuple[str, str, str], path: str
) -> tuple[InstanceRef, bytes | None]:
    ref = core.get_instance(archive, uids[2], uids[0], uids[1])
    if path.upper() in PIXEL_PATHS and ref.pixel_encapsulated:
        return ref, None  # encapsulated pixel data: served frame by frame
    return ref, core.read_bulk(archive, ref, path)


async def bulkdata(request: web.Request) -> web.StreamResponse:
    """GET …/bulkdata/{path}: a value whose BulkDataURI the metadata gave (PS3.18 10.4.1.1.6).

    Encapsulated pixel data is sent as its frames (one part each) as stored.
    """
    study, series, instance = _uids(request)
    assert series is not None and instance is not None
    path = request.match_info["path"].strip("/")
    ranges = wado_media.accept_of(request)
    archive = archive_of(request)
    ref, value = await run(request, _bulk_job, archive, (study, series, instance), path)
    if value is None:
        numbers = list(range(1, ref.number_of_frames + 1))
        choice = wado_media.choose_frames(ranges, ref, len(numbers))
        if choice is None:
            raise NotAcceptable("pixel data is available as its frames in the stored media type")
        etag = core.representation_tag("bulk", ref.sha256, path, choice)
        cached = not_modified(request, etag)
        if cached is not None:
            return cached
        _r, spans = await run(
            request, core.locate_frames, archive, study, series, instance, numbers
        )
        bodies = await run(request, frame_bodies, archive, ref, spans, numbers, choice)
        part_type = wado_media.part_content_type(choice.media_type, choice.ts)
        boundary = multipart_out.new_boundary()
        body = multipart_out.build(boundary, [(part_type, b, None) for b in bodies])
        headers = {
            **caching(etag),
            "Content-Type": multipart_out.content_type(choice.media_type, boundary),
        }
        return web.Response(body=body, headers=headers)
    single = _bulk_choice(ranges)
    if single is None:
        raise NotAcceptable("bulk data is available as application/octet-stream")
    etag = core.representation_tag("bulk", ref.sha256, path, single)
    cached = not_modified(request, etag)
    if cached is not None:
        return cached
    if single:
        return web.Response(body=value, headers={**caching(etag), "Content-Type": OCTET})
    boundary = multipart_out.new_boundary()
    body = multipart_out.build(boundary, [(OCTET, value, None)])
    headers = {**caching(etag), "Content-Type": multipart_out.content_type(OCTET, boundary)}
    return web.Response(body=body, headers=headers)

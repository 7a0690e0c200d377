"""WADO-RS rendered resources and thumbnails (PS3.18 10.4.1.1.3, 10.4.1.1.4).

Images are rendered to ``image/jpeg`` (the default), ``image/png`` or ``image/gif`` by
vna.render with the query parameters of PS3.18 8.3.5.1: ``window``, ``viewport``,
``quality``; ``annotation`` and ``charset`` are accepted and ignored (no annotation is
burned in). Encapsulated documents are rendered as the document itself (``application/pdf``
...), videos as their bitstream (``video/mp4``, ``video/mpeg``).

A single-part rendering of a multi-frame instance is its first frame; a multipart one
(``multipart/related; type="image/jpeg"``) has every frame. A study or series is rendered as
a multipart payload with one part per image instance (its first frame). Thumbnails are a
representative frame fitted within 128 pixels (or the viewport): the middle frame of an
instance, the middle image instance of a series, the first series with images of a study.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aiohttp import web

from dicomweb import multipart_out, wado_media
from dicomweb.accept import MediaRange
from dicomweb.http import archive_of, run
from dicomweb.wado_media import caching, not_modified
from vna import render as core_render
from vna import retrieve as core
from vna.archive import Archive
from vna.errors import BadRequest, NotAcceptable, NotFound
from vna.retrieve import InstanceRef

IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif")
#: Tag path of Encapsulated Document (PS3.3 C.24.2) in the bulk data table.
ENCAPSULATED_DOCUMENT = "00420011"
#: Most frames one multipart rendering of an instance holds.
MAX_RENDERED_FRAMES = 1000


def parse_window(text: str) -> core_render.Window:
    """``center,width[,function]`` (PS3.18 8.3.5.1.4).

    Raises:
        BadRequest: malformed, a width below 1, or an unknown function.
    """
    pieces = [p.strip() for p in text.split(",")]
    if len(pieces) not in (2, 3):
        raise BadRequest(f"window={text!r}: expected center,width[,function]")
    try:
        center, width = float(pieces[0]), float(pieces[1])
    except ValueError as exc:
        raise BadRequest(f"window={text!r}: center and width must be numbers") from exc
    function = pieces[2].lower() if len(pieces) == 3 else "linear"
    if function not in core_render.VOI_FUNCTIONS:
        raise BadRequest(f"window function {function!r}: use linear, linear-exact or sigmoid")
    if width < 1 or (function == "linear-exact" and width <= 0):
        raise BadRequest(f"window={text!r}: width must be at least 1")
    return core_render.Window(center, width, function)


def parse_viewport(text: str) -> core_render.Viewport:
    """``vw,vh`` or ``vw,vh,sx,sy,sw,sh`` (PS3.18 8.3.5.1.3).

    Raises:
        BadRequest: malformed or a non-positive viewport size.
    """
    pieces = [p.strip() for p in text.split(",")]
    if len(pieces) not in (2, 6):
        raise BadRequest(f"viewport={text!r}: expected vw,vh or vw,vh,sx,sy,sw,sh")
    try:
        values = [int(p) if p else None for p in pieces]
    except ValueError as exc:
        raise BadRequest(f"viewport={text!r}: values must be integers") from exc
    vw, vh = values[0], values[1]
    if vw is None or vh is None or vw < 1 or vh < 1 or vw > 16384 or vh > 16384:
        raise BadRequest(f"viewport={text!r}: width and height must be 1..16384")
    if len(values) == 2:
        return core_render.Viewport(vw, vh)
    sx, sy, sw, sh = values[2:]
    return core_render.Viewport(vw, vh, sx or 0, sy or 0, sw, sh)


def parse_quality(text: str | None) -> int:
    """``quality`` 1..100 (PS3.18 8.3.5.1.2); 90 when absent."""
    if text is None or text == "":
        return 90
    try:
        quality = int(text)
    except ValueError as exc:
        raise BadRequest(f"quality={text!r}: expected an integer 1..100") from exc
    if not 1 <= quality <= 100:
        raise BadRequest(f"quality={text!r}: expected an integer 1..100")
    return quality


@dataclass(frozen=True)
class Rendition:
    """The media type chosen for a rendering and whether the payload is multipart."""

    media_type: str
    multipart: bool


def choose_image(ranges: list[MediaRange], others: Sequence[str] = ()) -> Rendition | None:
    """The image (or other) media type of a rendering, from the Accept ranges."""
    offered = [*IMAGE_TYPES, *others]
    for r in ranges:
        if r.type == "multipart/related":
            inner = r.params.get("type", "image/jpeg").lower()
            for media in offered:
                if MediaRange(inner).matches(media):
                    return Rendition(media, True)
            continue
        for media in offered:
            if r.matches(media):
                return Rendition(media, False)
    return None


def render_request(
    request: web.Request, media_type: str, thumbnail: bool
) -> core_render.RenderRequest:
    """The rendering parameters of the query string."""
    query = request.query
    window = parse_window(query["window"]) if query.get("window") else None
    viewport = parse_viewport(query["viewport"]) if query.get("viewport") else None
    return core_render.RenderRequest(
        media_type=media_type,
        window=window,
        viewport=viewport,
        quality=parse_quality(query.get("quality")),
        max_side=core_render.THUMBNAIL_SIZE if thumbnail and viewport is None else None,
    )


def render_frames(
    archive: Archive, ref: InstanceRef, numbers: Sequence[int], rr: core_render.RenderRequest
) -> list[bytes]:
    """Rendered frames of one instance.

    Raises:
        NotAcceptable: not an image, or its pixel data cannot be decoded.
        NotFound: a frame number out of range.
    """
    attrs = core.attributes(archive, ref)
    if not core_render.is_renderable(attrs) or ref.is_video:
        raise NotAcceptable(f"{ref.sop_instance_uid} is not an image and cannot be rendered so")
    arrays = core.decode_frames(archive, ref, numbers, attrs)
    return [core_render.render_array(a, attrs, rr) for a in arrays]


def document(archive: Archive, ref: InstanceRef) -> tuple[str, bytes] | None:
    """(MIME type, bytes) of an encapsulated document, or None."""
    attrs = core.attributes(archive, ref)
    mime = str(attrs.get("MIMETypeOfEncapsulatedDocument", "") or "").strip()
    if not mime:
        return None
    try:
        return mime, core.read_bulk(archive, ref, ENCAPSULATED_DOCUMENT)
    except NotFound:
        return None


def _video(archive: Archive, ref: InstanceRef) -> bytes:
    return core.read_spans(archive, ref, [core.video_span(archive, ref)])[0]


def _image_refs(refs: Sequence[InstanceRef]) -> list[InstanceRef]:
    return [r for r in refs if r.rows and r.columns and not r.is_video]


def _frames_of(request: web.Request) -> list[int] | None:
    text = request.match_info.get("frames")
    if text is None:
        return None
    from dicomweb.wado import parse_frame_list

    return parse_frame_list(text)


async def rendered(request: web.Request) -> web.StreamResponse:
    """GET …/rendered at study, series, instance or frames level (PS3.18 10.4.1.1.3)."""
    archive = archive_of(request)
    info = request.match_info
    study, series, instance = info["study"], info.get("series"), info.get("instance")
    numbers = _frames_of(request)
    ranges = wado_media.accept_of(request)
    refs = await run(request, core.find_instances, archive, study, series, instance)
    if instance is not None and numbers is None:
        ref = refs[0]
        if ref.is_video:
            return await _rendered_video(request, ref, ranges)
        if not ref.rows:
            return await _rendered_document(request, ref, ranges)
    rendition = choose_image(ranges)
    if rendition is None:
        raise NotAcceptable("rendered images are available as image/jpeg, image/png, image/gif")
    rr = render_request(request, rendition.media_type, thumbnail=False)
    etag = core.representation_tag(
        "rendered", rendition, request.query_string, numbers, *[r.sha256 for r in refs]
    )
    cached = not_modified(request, etag)
    if cached is not None:
        return cached
    jobs: list[tuple[InstanceRef, list[int]]]
    if instance is not None:
        ref = refs[0]
        if numbers is None:
            count = min(ref.number_of_frames, MAX_RENDERED_FRAMES) if rendition.multipart else 1
            numbers = list(range(1, count + 1))
        elif not rendition.multipart and len(numbers) > 1:
            raise NotAcceptable("several frames are rendered as multipart/related only")
        jobs = [(ref, numbers)]
    else:
        images = _image_refs(refs)
        if not images:
            raise NotAcceptable("nothing in this study or series can be rendered as an image")
        if not rendition.multipart and len(images) > 1:
            rendition = Rendition(rendition.media_type, True)
        jobs = [(r, [1]) for r in images]
    bodies: list[bytes] = []
    for ref, frame_numbers in jobs:
        bodies.extend(await run(request, render_frames, archive, ref, frame_numbers, rr))
    return _image_response(rendition, bodies, etag)


def _image_response(rendition: Rendition, bodies: list[bytes], etag: str) -> web.Response:
    if not rendition.multipart:
        return web.Response(
            body=bodies[0], headers={**caching(etag), "Content-Type": rendition.media_type}
        )
    boundary = multipart_out.new_boundary()
    body = multipart_out.build(boundary, [(rendition.media_type, b, None) for b in bodies])
    headers = {
        **caching(etag),
        "Content-Type": multipart_out.content_type(rendition.media_type, boundary),
    }
    return web.Response(body=body, headers=headers)


async def _rendered_video(
    request: web.Request, ref: InstanceRef, ranges: list[MediaRange]
) -> web.StreamResponse:
    media = wado_media.MEDIA_OF_SYNTAX.get(ref.transfer_syntax_uid, "video/mp4")
    offered = [media, "video/mp4"] if media == "video/h265" else [media]
    if not any(r.matches(m) for r in ranges for m in offered):
        raise NotAcceptable(f"this video is rendered as {media}")
    etag = core.representation_tag("video", ref.sha256)
    cached = not_modified(request, etag)
    if cached is not None:
        return cached
    body = await run(request, _video, archive_of(request), ref)
    return web.Response(body=body, headers={**caching(etag), "Content-Type": offered[-1]})


async def _rendered_document(
    request: web.Request, ref: InstanceRef, ranges: list[MediaRange]
) -> web.StreamResponse:
    found = await run(request, document, archive_of(request), ref)
    if found is None:
        raise NotAcceptable(f"{ref.sop_instance_uid} has no rendered representation")
    mime, body = found
    if not any(r.matches(mime) for r in ranges):
        raise NotAcceptable(f"this document is rendered as {mime}")
    etag = core.representation_tag("document", ref.sha256)
    cached = not_modified(request, etag)
    if cached is not None:
        return cached
    return web.Response(body=body, headers={**caching(etag), "Content-Type": mime})


def representative(refs: Sequence[InstanceRef]) -> tuple[InstanceRef, int]:
    """The instance and frame a thumbnail shows: the middle image of the first series with
    images (refs come in series order), its middle frame.

    Raises:
        NotFound: no image among the instances.
    """
    images = _image_refs(refs)
    if not images:
        raise NotFound("no image to make a thumbnail of")
    series = [r for r in images if r.series_uid == images[0].series_uid]
    ref = series[(len(series) - 1) // 2]
    return ref, (ref.number_of_frames + 1) // 2


async def thumbnail(request: web.Request) -> web.StreamResponse:
    """GET …/thumbnail at study, series, instance or frame level (PS3.18 10.4.1.1.4)."""
    archive = archive_of(request)
    info = request.match_info
    study, series, instance = info["study"], info.get("series"), info.get("instance")
    numbers = _frames_of(request)
    rendition = choose_image(wado_media.accept_of(request))
    if rendition is None:
        raise NotAcceptable("thumbnails are available as image/jpeg, image/png, image/gif")
    rendition = Rendition(rendition.media_type, False)
    rr = render_request(request, rendition.media_type, thumbnail=True)
    refs = await run(request, core.find_instances, archive, study, series, instance)
    ref, frame = representative(refs)
    if numbers is not None:
        frame = numbers[0]
    etag = core.representation_tag("thumbnail", rendition, request.query_string, frame, ref.sha256)
    cached = not_modified(request, etag)
    if cached is not None:
        return cached
    bodies = await run(request, render_frames, archive, ref, [frame], rr)
    return _image_response(rendition, bodies, etag)

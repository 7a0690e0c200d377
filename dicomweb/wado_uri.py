"""WADO-URI (PS3.18 9): the legacy single-object retrieval by query string.

``?requestType=WADO&studyUID=…&seriesUID=…&objectUID=…`` with ``contentType``:
``application/dicom`` (the object; ``transferSyntax`` chooses its syntax, Explicit VR
Little Endian by default, the stored one when it cannot be converted), ``image/jpeg`` (the
default for images), ``image/png``, ``image/gif`` (rendered with ``frameNumber``, ``rows``,
``columns``, ``region``, ``windowCenter``/``windowWidth``, ``imageQuality``), or the
document's own type (``application/pdf``) for encapsulated documents. ``anonymize=yes``
and presentation states are not supported and answered 400; ``annotation`` and ``charset``
are accepted and ignored.
"""

from __future__ import annotations

from aiohttp import web

from dicomweb import render as web_render
from dicomweb.accept import parse_accept
from dicomweb.http import archive_of, run
from dicomweb.wado import part10_header
from dicomweb.wado_media import EXPLICIT_LE, caching, not_modified
from vna import render as core_render
from vna import retrieve as core
from vna import transcode
from vna.archive import Archive
from vna.errors import BadRequest, NotAcceptable
from vna.retrieve import InstanceRef

DICOM = "application/dicom"
#: Parameters that only make sense for a rendered image (PS3.18 9.1.2.2 / 9.4.2).
IMAGE_ONLY = (
    "rows",
    "columns",
    "region",
    "windowCenter",
    "windowWidth",
    "imageQuality",
    "frameNumber",
)


def _int(query: dict[str, str], name: str, low: int, high: int) -> int | None:
    text = query.get(name)
    if text is None or text == "":
        return None
    try:
        value = int(text)
    except ValueError as exc:
        raise BadRequest(f"{name}={text!r}: expected an integer") from exc
    if not low <= value <= high:
        raise BadRequest(f"{name}={text!r}: expected {low}..{high}")
    return value


def _float(query: dict[str, str], name: str) -> float | None:
    text = query.get(name)
    if text is None or text == "":
        return None
    try:
        return float(text)
    except ValueError as exc:
        raise BadRequest(f"{name}={text!r}: expected a number") from exc


def _object_bytes(archive: Archive, ref: InstanceRef, ts: str | None) -> tuple[str, bytes]:
    """(syntax, Part 10 bytes) of the object: converted to ``ts`` or else as stored."""
    stored = ref.transfer_syntax_uid
    has_pixels = ref.pixel_offset is not None or bool(ref.rows)
    if ts is None:
        target = EXPLICIT_LE if transcode.can_transcode(stored, EXPLICIT_LE, has_pixels) else stored
    elif ts == stored or transcode.can_transcode(stored, ts, has_pixels):
        target = ts
    else:
        raise NotAcceptable(f"the object cannot be given in transfer syntax {ts}")
    if target != stored:
        with core.open_instance(archive, ref) as fp:
            return target, transcode.transcode_file(fp, target)
    body = b"".join(core.iter_instance(archive, ref))
    return target, part10_header(ref, body[:132]) + body


def _region(text: str, ref: InstanceRef) -> tuple[int, int, int, int]:
    """``x1,y1,x2,y2`` in 0.0..1.0 of the image → sx, sy, sw, sh in pixels (PS3.18 9.1.2.5)."""
    try:
        x1, y1, x2, y2 = (float(p) for p in text.split(","))
    except ValueError as exc:
        raise BadRequest(f"region={text!r}: expected four numbers x1,y1,x2,y2") from exc
    if not (0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1):
        raise BadRequest(f"region={text!r}: expected 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1")
    cols, rows = ref.columns or 1, ref.rows or 1
    sx, sy = round(x1 * cols), round(y1 * rows)
    return sx, sy, max(1, round(x2 * cols) - sx), max(1, round(y2 * rows) - sy)


def _render_request(
    query: dict[str, str], ref: InstanceRef, media: str
) -> core_render.RenderRequest:
    rows = _int(query, "rows", 1, 16384)
    columns = _int(query, "columns", 1, 16384)
    center, width = _float(query, "windowCenter"), _float(query, "windowWidth")
    if (center is None) != (width is None):
        raise BadRequest("windowCenter and windowWidth go together")
    if width is not None and width < 1:
        raise BadRequest("windowWidth must be at least 1")
    window = core_render.Window(center, width) if center is not None and width is not None else None
    viewport = None
    region = query.get("region")
    if rows or columns or region:
        sx, sy, sw, sh = _region(region, ref) if region else (0, 0, ref.columns or 1, ref.rows or 1)
        # rows and columns are maxima; the aspect ratio is kept (PS3.18 9.1.2.3, 9.1.2.4)
        big = 1 << 20
        vw = columns or (big if rows else sw)
        vh = rows or (big if columns else sh)
        viewport = core_render.Viewport(vw, vh, sx, sy, sw, sh)
    quality = _int(query, "imageQuality", 1, 100)
    return core_render.RenderRequest(
        media_type=media, window=window, viewport=viewport, quality=quality or 90
    )


async def retrieve(request: web.Request) -> web.StreamResponse:
    """GET /wado?requestType=WADO&… (PS3.18 9)."""
    query = dict(request.query)
    if query.get("requestType") != "WADO":
        raise BadRequest("requestType=WADO is required")
    study, series, obj = (query.get(k, "").strip() for k in ("studyUID", "seriesUID", "objectUID"))
    if not (study and series and obj):
        raise BadRequest("studyUID, seriesUID and objectUID are required")
    if query.get("anonymize", "").lower() == "yes":
        raise BadRequest("anonymize=yes is not supported")
    if query.get("presentationUID") or query.get("presentationSeriesUID"):
        raise BadRequest("presentation states are not supported")
    archive = archive_of(request)
    ref = await run(request, core.get_instance, archive, obj, study, series)
    image = bool(ref.rows and ref.columns) and not ref.is_video
    wanted = parse_accept(query.get("contentType") or (IMAGE_DEFAULT if image else DICOM))
    for r in wanted:
        if r.matches(DICOM) and (r.type == DICOM or not image):
            return await _dicom(request, archive, ref, query)
        for media in web_render.IMAGE_TYPES:
            if image and r.matches(media):
                return await _image(request, archive, ref, query, media)
        if r.type in ("application/pdf", "text/xml", "application/xml") or r.type.startswith(
            "model/"
        ):
            return await _document(request, archive, ref, r.type)
    raise NotAcceptable(f"cannot provide {query.get('contentType')} for this object")


IMAGE_DEFAULT = "image/jpeg"


async def _dicom(
    request: web.Request, archive: Archive, ref: InstanceRef, query: dict[str, str]
) -> web.StreamResponse:
    present = [name for name in IMAGE_ONLY if query.get(name)]
    if present:
        raise BadRequest(f"{', '.join(present)} only apply to rendered images")
    ts = query.get("transferSyntax") or None
    if ts is not None and not all(p.isdigit() for p in ts.split(".")):
        raise BadRequest(f"transferSyntax={ts!r} is not a UID")
    etag = core.representation_tag("wado-uri", ref.sha256, ts)
    cached = not_modified(request, etag)
    if cached is not None:
        return cached
    _syntax, body = await run(request, _object_bytes, archive, ref, ts)
    return web.Response(body=body, headers={**caching(etag), "Content-Type": DICOM})


async def _image(
    request: web.Request, archive: Archive, ref: InstanceRef, query: dict[str, str], media: str
) -> web.StreamResponse:
    if query.get("transferSyntax"):
        raise BadRequest("transferSyntax applies to application/dicom only")
    frame = _int(query, "frameNumber", 1, 1 << 31) or 1
    rr = _render_request(query, ref, media)
    etag = core.representation_tag("wado-uri", ref.sha256, request.query_string)
    cached = not_modified(request, etag)
    if cached is not None:
        return cached
    bodies = await run(request, web_render.render_frames, archive, ref, [frame], rr)
    return web.Response(body=bodies[0], headers={**caching(etag), "Content-Type": media})


async def _document(
    request: web.Request, archive: Archive, ref: InstanceRef, media: str
) -> web.StreamResponse:
    found = await run(request, web_render.document, archive, ref)
    if found is None or found[0] != media:
        raise NotAcceptable(f"this object has no {media} representation")
    etag = core.representation_tag("wado-uri-doc", ref.sha256)
    cached = not_modified(request, etag)
    if cached is not None:
        return cached
    return web.Response(body=found[1], headers={**caching(etag), "Content-Type": media})

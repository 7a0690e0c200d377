"""Media types and transfer syntaxes of WADO-RS (PS3.18 8.7.3), and the choice of one
representation per instance or frame from the Accept header field.

Rules (PS3.18 8.7.8 Selected Media Type and Selected Transfer Syntax):

- a media range's ``transfer-syntax`` parameter wins; ``*`` means "as stored";
- without it, the default of the media type applies: Explicit VR Little Endian for
  ``application/dicom`` and ``application/octet-stream`` (Table 8.7.3-2, 8.7.3-4). For a
  compressed media type (``image/jpeg``...) a frame already stored in one of that media
  type's syntaxes is sent as stored (rather than refused for not being the type's default);
- ``*/*`` or no Accept header: the resource's default media type with its default syntax,
  falling back to the stored syntax when the object cannot be converted;
- ranges are tried in the client's order of preference, separately for each instance
  (Note 1 of 8.7.8.2: the syntax may differ from part to part).
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from dicomweb.accept import MediaRange, parse_accept
from vna import transcode
from vna.retrieve import InstanceRef, frames_addressable

EXPLICIT_LE = "1.2.840.10008.1.2.1"
DICOM = "application/dicom"
OCTET = "application/octet-stream"

#: Media types of compressed pixel data and their syntaxes, default first
#: (PS3.18 Table 8.7.3-5; the older x- names are accepted too).
COMPRESSED_MEDIA: dict[str, tuple[str, ...]] = {
    "image/jpeg": (
        "1.2.840.10008.1.2.4.70",
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2.4.57",
    ),
    "image/dicom-rle": ("1.2.840.10008.1.2.5",),
    "image/x-dicom-rle": ("1.2.840.10008.1.2.5",),
    "image/jls": ("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"),
    "image/x-jls": ("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"),
    "image/jp2": ("1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"),
    "image/jpx": ("1.2.840.10008.1.2.4.92", "1.2.840.10008.1.2.4.93"),
    "image/jphc": ("1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203"),
    "image/jxl": ("1.2.840.10008.1.2.4.110", "1.2.840.10008.1.2.4.111", "1.2.840.10008.1.2.4.112"),
    "video/mpeg2": ("1.2.840.10008.1.2.4.100", "1.2.840.10008.1.2.4.101"),
    "video/mpeg": ("1.2.840.10008.1.2.4.100", "1.2.840.10008.1.2.4.101"),
    "video/mp4": (
        "1.2.840.10008.1.2.4.102",
        "1.2.840.10008.1.2.4.103",
        "1.2.840.10008.1.2.4.104",
        "1.2.840.10008.1.2.4.105",
        "1.2.840.10008.1.2.4.106",
        "1.2.840.10008.1.2.4.107",
        "1.2.840.10008.1.2.4.108",
    ),
    "video/h265": ("1.2.840.10008.1.2.4.107", "1.2.840.10008.1.2.4.108"),
}
#: The media type each compressed syntax is sent as (the first listed above).
MEDIA_OF_SYNTAX: dict[str, str] = {}
for _media, _syntaxes in COMPRESSED_MEDIA.items():
    for _ts in _syntaxes:
        MEDIA_OF_SYNTAX.setdefault(_ts, _media)
VIDEO_MEDIA = ("video/mp4", "video/mpeg", "video/mpeg2", "video/h265")
#: Caching of every WADO-RS and WADO-URI representation: never in a shared cache (patient
#: data), always revalidated (a newer version of an instance may replace it).
CACHE_CONTROL = "private, no-cache"


def media_of(ts: str) -> str:
    """The bulk data media type of pixel data stored in ``ts``."""
    return MEDIA_OF_SYNTAX.get(ts, OCTET)


def accept_of(request: web.Request) -> list[MediaRange]:
    """The client's media ranges: the ``accept`` query parameter (PS3.18 8.3.3.1) when
    given, else the Accept header field."""
    query = request.query.get("accept")
    return parse_accept(query if query else request.headers.get("Accept"))


def caching(etag: str) -> dict[str, str]:
    """Header fields of a cacheable representation."""
    return {"ETag": etag, "Cache-Control": CACHE_CONTROL}


def not_modified(request: web.Request, etag: str) -> web.Response | None:
    """A 304 when the client's If-None-Match holds ``etag`` (RFC 9110 13.1.2)."""
    header = request.headers.get("If-None-Match")
    if not header:
        return None
    tags = {t.strip().removeprefix("W/") for t in header.split(",")}
    if "*" in tags or etag in tags:
        return web.Response(status=304, headers=caching(etag))
    return None


@dataclass(frozen=True)
class InstanceChoice:
    """How one instance is sent: as a Part 10 object in ``ts`` or as its video stream."""

    part_type: str  # application/dicom or a video media type
    ts: str
    convert: bool  # transcode from the stored syntax
    single: bool  # a single-part response (not multipart/related)


def _has_pixels(ref: InstanceRef) -> bool:
    return ref.pixel_offset is not None or bool(ref.rows)


def choose_instance(
    ranges: list[MediaRange], ref: InstanceRef, allow_single: bool
) -> InstanceChoice | None:
    """The representation of one instance for a retrieve, or None when none is acceptable."""
    stored = ref.transfer_syntax_uid
    for r in ranges:
        wildcard = False
        single = False
        if r.type == "multipart/related":
            inner = r.params.get("type", DICOM).lower()
            ts = r.params.get("transfer-syntax")
        elif r.type in ("*/*", "*", "multipart/*"):
            inner, ts, wildcard = DICOM, None, True
        elif r.type == DICOM and allow_single:
            inner, ts, single = DICOM, r.params.get("transfer-syntax"), True
        else:
            continue
        if inner in ("*/*", "*"):
            inner, wildcard = DICOM, True
        if inner == DICOM:
            if ts == "*" or ts == stored:
                return InstanceChoice(DICOM, stored, False, single)
            target = ts or EXPLICIT_LE
            if transcode.can_transcode(stored, target, _has_pixels(ref)):
                return InstanceChoice(DICOM, target, True, single)
            if wildcard:
                return InstanceChoice(DICOM, stored, False, single)
        elif (
            inner in VIDEO_MEDIA
            and ref.is_video
            and stored in COMPRESSED_MEDIA[inner]
            and ts in (None, "*", stored)
        ):
            return InstanceChoice(inner, stored, False, single)
    return None


@dataclass(frozen=True)
class FrameChoice:
    """How requested frames are sent."""

    media_type: str  # of each part
    ts: str
    decode: bool  # decode to native frames (else the stored bytes)
    single: bool  # single-part response


def _resolve_frames(inner: str, ts: str | None, ref: InstanceRef) -> tuple[str, str, bool] | None:
    stored = ref.transfer_syntax_uid
    stored_media = media_of(stored)
    native_as_stored = stored_media == OCTET and frames_addressable(ref)
    if inner in ("*/*", "*") or ts == "*":
        if inner in ("*/*", "*", OCTET, stored_media) or (
            inner.endswith("/*") and stored_media.startswith(inner[:-1])
        ):
            if stored_media == OCTET:
                return OCTET, EXPLICIT_LE, not native_as_stored
            return stored_media, stored, False
        return None
    if inner == OCTET:
        if ts not in (None, EXPLICIT_LE):
            return None
        if native_as_stored:
            return OCTET, EXPLICIT_LE, False
        if transcode.can_decode(stored):
            return OCTET, EXPLICIT_LE, True
        return None
    syntaxes = COMPRESSED_MEDIA.get(inner)
    if inner.endswith("/*"):
        syntaxes = (stored,) if stored_media.startswith(inner[:-1]) else None
    if not syntaxes:
        return None
    if ts is not None and ts not in syntaxes:
        return None
    if stored in syntaxes and ts in (None, stored):
        return stored_media, stored, False
    return None


def choose_frames(ranges: list[MediaRange], ref: InstanceRef, count: int) -> FrameChoice | None:
    """The representation of the requested frames, or None when none is acceptable."""
    for r in ranges:
        if r.type == "multipart/related":
            inner = r.params.get("type", OCTET).lower()
            ts = r.params.get("transfer-syntax")
            single = False
        elif r.type in ("*/*", "*", "multipart/*"):
            inner, ts, single = "*/*", "*", False
        elif count == 1:
            inner, ts, single = r.type, r.params.get("transfer-syntax"), True
        else:
            continue
        resolved = _resolve_frames(inner, ts, ref)
        if resolved is not None:
            media, syntax, decode = resolved
            return FrameChoice(media, syntax, decode, single)
    return None


def part_content_type(media_type: str, ts: str) -> str:
    """Content-Type of one part, with its transfer-syntax parameter."""
    return f"{media_type}; transfer-syntax={ts}"

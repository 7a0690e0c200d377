"""Generated media with planted metadata: photos, video, sound and PDFs for conversion tests.

Every identifying value planted here starts with ``PLANTED`` (or is listed in ``PLANTED``), so
a test can search a conversion's output bytes for each of them.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageCms
from PIL.PngImagePlugin import PngInfo
from PIL.TiffImagePlugin import IFDRational

GPS_LATITUDE = ((48, 1), (51, 1), (1479, 50))
GPS_LONGITUDE = ((2, 1), (17, 1), (1003, 25))
#: Text values planted in the generated media.
PLANTED = [
    b"PLANTED-MAKE",
    b"PLANTED-MODEL",
    b"PLANTED-SERIAL-123456",
    b"PLANTED-OWNER",
    b"PLANTED-MAKERNOTE",
    b"PLANTED-GPS-AREA",
    b"PLANTED-XMP-CREATOR",
    b"PLANTED-IPTC-BYLINE",
    b"PLANTED-COMMENT",
    b"PLANTED-TRAILER",
    b"PLANTED-ICC-MODEL",
    b"PLANTED-SOFTWARE",
]


def rationals(values: tuple[tuple[int, int], ...], little: bool) -> bytes:
    """The TIFF RATIONAL encoding of GPS coordinates (what a byte search looks for)."""
    fmt = "<" if little else ">"
    return b"".join(struct.pack(fmt + "II", n, d) for n, d in values)


def image_array(width: int = 160, height: int = 120, seed: int = 0) -> np.ndarray:
    """A photo-like RGB image (gradients with noise)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // width, y * 255 // height, (x + y) % 256], axis=-1)
    return np.clip(base + rng.integers(-20, 20, base.shape), 0, 255).astype(np.uint8)


def planted_exif(orientation: int = 1) -> Image.Exif:
    """EXIF with camera make/model/serial, owner, maker note, date and a GPS IFD."""
    exif = Image.Exif()
    exif[0x010F] = "PLANTED-MAKE"
    exif[0x0110] = "PLANTED-MODEL"
    exif[0x0131] = "PLANTED-SOFTWARE"
    exif[0x0112] = orientation
    sub = exif.get_ifd(0x8769)
    sub[0x9003] = "2021:05:04 10:11:12"
    sub[0x9011] = "+02:00"
    sub[0xA431] = "PLANTED-SERIAL-123456"
    sub[0xA430] = "PLANTED-OWNER"
    sub[0x927C] = b"PLANTED-MAKERNOTE\x00\x01\x02\x03"
    gps = exif.get_ifd(0x8825)
    gps[1] = "N"
    gps[2] = tuple(IFDRational(n, d) for n, d in GPS_LATITUDE)
    gps[3] = "E"
    gps[4] = tuple(IFDRational(n, d) for n, d in GPS_LONGITUDE)
    gps[0x1C] = b"ASCII\x00\x00\x00PLANTED-GPS-AREA"
    return exif


def planted_icc() -> bytes:
    """An sRGB profile with a device model description tag and header device fields set."""
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    count = struct.unpack(">I", profile[128:132])[0]
    entries = [profile[132 + 12 * i : 144 + 12 * i] for i in range(count)]
    text = b"PLANTED-ICC-MODEL"
    tag = b"desc" + b"\x00" * 4 + struct.pack(">I", len(text) + 1) + text + b"\x00" * 80
    shift = 12
    table = b"".join(
        e[:4] + struct.pack(">I", struct.unpack(">I", e[4:8])[0] + shift) + e[8:] for e in entries
    )
    body = profile[132 + 12 * count :]
    new_offset = 132 + 12 * (count + 1) + len(body)
    pad = (-new_offset) % 4
    table += b"dmdd" + struct.pack(">II", new_offset + pad, len(tag))
    header = bytearray(profile[:128])
    header[48:52], header[52:56] = b"PLNT", b"MDL1"
    out = bytearray(header + struct.pack(">I", count + 1) + table + body + b"\x00" * pad + tag)
    out[0:4] = struct.pack(">I", len(out))
    return bytes(out)


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def planted_jpeg(
    path: Path,
    *,
    orientation: int = 1,
    progressive: bool = False,
    array: np.ndarray | None = None,
) -> Path:
    """A camera-like JPEG: EXIF (GPS, serial, maker note), ICC profile with device fields,
    XMP (APP1), IPTC (APP13), a comment, and a second image after the end-of-image marker."""
    data = image_array() if array is None else array
    buffer = io.BytesIO()
    Image.fromarray(data).save(
        buffer,
        "JPEG",
        quality=90,
        exif=planted_exif(orientation).tobytes(),
        icc_profile=planted_icc(),
        comment=b"PLANTED-COMMENT",
        progressive=progressive,
    )
    jpeg = buffer.getvalue()
    xmp = (
        b"http://ns.adobe.com/xap/1.0/\x00<x:xmpmeta xmlns:x='adobe:ns:meta/'><rdf:RDF>"
        b"<dc:creator>PLANTED-XMP-CREATOR</dc:creator><exif:GPSLatitude>48,51.493N"
        b"</exif:GPSLatitude></rdf:RDF></x:xmpmeta>"
    )
    byline = b"PLANTED-IPTC-BYLINE"
    iptc = b"\x1c\x02\x50" + struct.pack(">H", len(byline)) + byline
    resource = b"8BIM\x04\x04\x00\x00" + struct.pack(">I", len(iptc)) + iptc
    extra = _segment(0xE1, xmp) + _segment(0xED, b"Photoshop 3.0\x00" + resource)
    thumb = io.BytesIO()
    Image.fromarray(data[:16, :16]).save(thumb, "JPEG")
    path.write_bytes(jpeg[:2] + extra + jpeg[2:] + b"PLANTED-TRAILER" + thumb.getvalue())
    return path


def planted_png(path: Path, array: np.ndarray | None = None, mode: str = "RGB") -> Path:
    """A PNG with tEXt, iTXt (XMP) and eXIf chunks and an ICC profile."""
    data = image_array() if array is None else array
    info = PngInfo()
    info.add_text("Author", "PLANTED-OWNER")
    info.add_itxt("XML:com.adobe.xmp", "<x:xmpmeta>PLANTED-XMP-CREATOR</x:xmpmeta>")
    info.add_text("Comment", "PLANTED-COMMENT")
    image = Image.fromarray(data)
    if mode != image.mode:
        image = image.convert(mode)
    image.save(path, "PNG", pnginfo=info, exif=planted_exif().tobytes(), icc_profile=planted_icc())
    return path


def planted_tiff(path: Path) -> Path:
    """A plain (stripped) TIFF photo with camera tags and EXIF."""
    Image.fromarray(image_array()).save(path, "TIFF", exif=planted_exif().tobytes())
    return path


def planted_heic(path: Path) -> Path:
    """A HEIC photo (as phones take) with EXIF and XMP."""
    import pillow_heif

    pillow_heif.register_heif_opener()
    Image.fromarray(image_array()).save(
        path,
        "HEIF",
        quality=90,
        exif=planted_exif().tobytes(),
        xmp=b"<x:xmpmeta>PLANTED-XMP-CREATOR</x:xmpmeta>",
    )
    return path


VIDEO_METADATA = {
    "title": "PLANTED-TITLE",
    "comment": "PLANTED-COMMENT",
    "artist": "PLANTED-OWNER",
    "creation_time": "2021-05-04T10:11:12.000000Z",
    "location": "+48.8577+002.2950/",
}


def planted_video(
    path: Path,
    *,
    codec: str = "libx264",
    width: int = 320,
    height: int = 240,
    frames: int = 24,
    rate: int = 25,
    audio: bool = True,
    container: str | None = None,
    pix_fmt: str = "yuv420p",
    options: dict[str, str] | None = None,
) -> Path:
    """A clip with container metadata (title, creation time, location → ``loci``/``©xyz``),
    stream metadata, an audio track and, from x264, its settings in an SEI NAL unit."""
    with av.open(str(path), "w", format=container) as out:
        out.metadata.update(VIDEO_METADATA)
        stream = out.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if options:
            stream.codec_context.options = options
        stream.metadata["handler_name"] = "PLANTED-HANDLER"
        sound = out.add_stream("aac", rate=44100, layout="mono") if audio else None
        picture = image_array(width, height, seed=1)
        for i in range(frames):
            rgb = np.roll(picture, i * 4, axis=1)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
        if sound is not None:
            samples = (np.sin(np.arange(44100) / 10.0) * 0.3).astype(np.float32)[None, :]
            for start in range(0, 44100, 1024):
                chunk = np.ascontiguousarray(samples[:, start : start + 1024])
                frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
                frame.sample_rate, frame.pts = 44100, start
                for packet in sound.encode(frame):
                    out.mux(packet)
            for packet in sound.encode(None):
                out.mux(packet)
    return path


def decode_frames(source: Path | bytes) -> list[np.ndarray]:
    """Every frame of the first video stream as RGB arrays."""
    handle = io.BytesIO(source) if isinstance(source, bytes) else str(source)
    with av.open(handle) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def planted_audio(
    path: Path, codec: str, container: str | None = None, rate: int = 8000, layout: str = "mono"
) -> tuple[Path, np.ndarray]:
    """A one-second tone with artist/title/comment tags; returns the int16 samples written."""
    t = np.arange(rate)
    tone = (np.sin(2 * np.pi * 440 * t / rate) * 12000).astype(np.int16)
    channels = 1 if layout == "mono" else 2
    interleaved = np.repeat(tone[:, None], channels, axis=1).reshape(1, -1)
    with av.open(str(path), "w", format=container) as out:
        out.metadata.update(
            {"artist": "PLANTED-OWNER", "title": "PLANTED-TITLE", "comment": "PLANTED-COMMENT"}
        )
        stream = out.add_stream(codec, rate=rate, layout=layout)
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(interleaved), format="s16", layout=layout
        )
        frame.sample_rate, frame.pts = rate, 0
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path, tone


def planted_pdf(path: Path) -> Path:
    """A one-page PDF written by hand: an Info dictionary (author, creator, producer), an XMP
    stream, and an incremental update that replaced an older Info dictionary (whose bytes
    stay in the file)."""
    xmp = (
        b"<?xpacket begin='' id='W5M0MpCehiHzreSzNTczkc9d'?><x:xmpmeta xmlns:x='adobe:ns:meta/'>"
        b"<dc:creator>PLANTED-XMP-CREATOR</dc:creator></x:xmpmeta><?xpacket end='w'?>"
    )
    content = b"BT /F1 12 Tf 72 720 Td (Consent form) Tj ET"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R /Metadata 5 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 6 0 R "
        b"/Resources << /Font << /F1 7 0 R >> >> /PieceInfo << /App << /Private (PLANTED-OWNER) "
        b">> >> >>",
        b"<< /Author (PLANTED-OLD-AUTHOR) /Producer (PLANTED-SOFTWARE) >>",
        b"<< /Type /Metadata /Subtype /XML /Length %d >>\nstream\n" % len(xmp)
        + xmp
        + b"\nendstream",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info 4 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    # incremental update: a new Info dictionary (object 8)
    info_offset = len(out)
    out += (
        b"8 0 obj\n<< /Author (PLANTED-OWNER) /Creator (PLANTED-MODEL) "
        b"/Title (PLANTED-TITLE) >>\nendobj\n"
    )
    xref2 = len(out)
    out += b"xref\n8 1\n%010d 00000 n \n" % info_offset
    out += b"trailer\n<< /Size 9 /Root 1 0 R /Info 8 0 R /Prev %d >>\nstartxref\n%d\n%%%%EOF\n" % (
        xref,
        xref2,
    )
    path.write_bytes(bytes(out))
    return path


def mp4_boxes(data: bytes, start: int = 0, end: int | None = None) -> list[tuple[bytes, bytes]]:
    """(type, payload) of the ISO BMFF boxes, containers walked recursively."""
    containers = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"udta", b"edts", b"dinf"}
    end = len(data) if end is None else end
    found: list[tuple[bytes, bytes]] = []
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        header = 8
        if size == 1:
            size = struct.unpack(">Q", data[pos + 8 : pos + 16])[0]
            header = 16
        elif size == 0:
            size = end - pos
        if size < header:
            break
        found.append((kind, data[pos + header : pos + size]))
        if kind in containers:
            found += mp4_boxes(data, pos + header, pos + size)
        pos += size
    return found

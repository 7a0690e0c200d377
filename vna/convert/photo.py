"""Photos (JPEG, PNG, TIFF, HEIC) → VL Photographic Image Storage (PS3.3 A.32.4).

A baseline 8-bit JPEG is kept bit-exact as JPEG Baseline (PS3.5 A.4.1) once every APPn
segment but Adobe's APP14 (its colour transform flag is needed to decode), every COM
segment and anything after the end-of-image marker (phones append previews, depth maps and
vendor blocks there) are cut out. Everything else is decoded and stored losslessly as JPEG-LS
(PS3.5 A.4.3), or as JPEG baseline when the user asks for a transcode. EXIF is read only for
the orientation (applied to the pixels, or recorded) and, when allowed, the acquisition time;
then it is dropped with the XMP, IPTC, maker notes and comments. The ICC profile is kept in
the ICC Profile attribute (C.11.15) after its device fields are blanked.
"""

from __future__ import annotations

import datetime as dt
import io
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import JPEGBaseline8Bit, JPEGLSLossless

from vna.convert.common import Job, add_anatomy, output_path, write_part10
from vna.convert.context import Context
from vna.errors import ConversionError

VL_PHOTOGRAPHIC = "1.2.840.10008.5.1.4.1.1.77.1.4"
SOI, EOI, SOS, APP14, COM = 0xD8, 0xD9, 0xDA, 0xEE, 0xFE
SOF_MARKERS = frozenset(
    {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
)
STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
EXIF_ORIENTATION, EXIF_IFD, DATETIME_ORIGINAL, OFFSET_TIME_ORIGINAL = 0x0112, 0x8769, 0x9003, 0x9011
#: ICC tags that describe the device (manufacturer, model) or carry free metadata.
ICC_DEVICE_TAGS = frozenset({b"dmnd", b"dmdd", b"meta", b"targ", b"ciis"})
ORIENTATION_TEXT = {
    2: "mirrored horizontally",
    3: "rotated 180°",
    4: "mirrored vertically",
    5: "mirrored and rotated 90° counter-clockwise",
    6: "rotated 90° clockwise",
    7: "mirrored and rotated 90° clockwise",
    8: "rotated 90° counter-clockwise",
}


@dataclass
class JpegStream:
    """A JPEG codestream stripped of metadata, and what its frame header says."""

    data: bytes
    sof: int
    precision: int
    rows: int
    columns: int
    components: list[tuple[int, int, int]]  # (id, horizontal, vertical sampling)
    adobe_transform: int | None

    @property
    def photometric(self) -> str:
        """PS3.5 8.2.1: the colour space of a JPEG baseline stream."""
        if len(self.components) == 1:
            return "MONOCHROME2"
        ids = bytes(c[0] for c in self.components)
        if self.adobe_transform == 0 or ids == b"RGB":
            return "RGB"
        subsampled = any(c[1:] != self.components[0][1:] for c in self.components[1:])
        return "YBR_FULL_422" if subsampled else "YBR_FULL"

    @property
    def passthrough(self) -> bool:
        """Baseline (SOF0) 8-bit, grey, RGB or subsampled YCbCr: storable as it is (PS3.5
        A.4.1). VL images do not allow YBR_FULL (PS3.3 C.8.12.1.1.1), so a 4:4:4 YCbCr
        stream is decoded and stored losslessly instead."""
        return (
            self.sof == 0xC0
            and self.precision == 8
            and len(self.components) in (1, 3)
            and self.photometric != "YBR_FULL"
        )


def clean_jpeg(data: bytes) -> JpegStream:
    """Keep what decoding needs (tables, frame and scan headers, entropy-coded data, APP14
    Adobe) up to the first EOI; drop APP0–APP15 and COM segments and any trailing bytes.

    Raises:
        ConversionError: not a JPEG stream, or a truncated one.
    """
    if data[:2] != b"\xff\xd8":
        raise ConversionError("not a JPEG stream (no start-of-image marker)")
    out = bytearray(b"\xff\xd8")
    pos, size = 2, len(data)
    sof = precision = rows = columns = 0
    components: list[tuple[int, int, int]] = []
    adobe: int | None = None
    while True:
        while pos < size and data[pos] == 0xFF and pos + 1 < size and data[pos + 1] == 0xFF:
            pos += 1  # fill bytes
        if pos + 2 > size or data[pos] != 0xFF:
            raise ConversionError(f"corrupt or truncated JPEG: marker expected at byte {pos}")
        marker = data[pos + 1]
        if marker == EOI:
            out += b"\xff\xd9"
            break
        if marker in STANDALONE:
            out += data[pos : pos + 2]
            pos += 2
            continue
        if pos + 4 > size:
            raise ConversionError("corrupt or truncated JPEG: segment cut short")
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        end = pos + 2 + length
        if length < 2 or end > size:
            raise ConversionError("corrupt or truncated JPEG: segment longer than the file")
        segment = data[pos:end]
        if marker in SOF_MARKERS:
            sof, precision = marker, segment[4]
            rows, columns = struct.unpack(">HH", segment[5:9])
            count = segment[9]
            components = [
                (segment[10 + 3 * i], segment[11 + 3 * i] >> 4, segment[11 + 3 * i] & 15)
                for i in range(count)
            ]
        keep = not (0xE0 <= marker <= 0xEF or marker == COM)
        if marker == APP14 and segment[4:9] == b"Adobe" and length >= 12:
            keep, adobe = True, segment[15]
            segment = b"\xff\xee\x00\x0e" + segment[4:16]  # only the fixed fields
        if keep:
            out += segment
        pos = end
        if marker == SOS:
            scan_end = _entropy_end(data, pos)
            out += data[pos:scan_end]
            pos = scan_end
    if not sof:
        raise ConversionError("corrupt JPEG: no frame header")
    return JpegStream(bytes(out), sof, precision, rows, columns, components, adobe)


def _entropy_end(data: bytes, pos: int) -> int:
    """Offset of the first marker after entropy-coded data (stuffed zeros and RSTn skipped)."""
    size = len(data)
    while True:
        found = data.find(b"\xff", pos)
        if found < 0 or found + 1 >= size:
            raise ConversionError("corrupt or truncated JPEG: no end-of-image marker")
        following = data[found + 1]
        if following == 0x00 or 0xD0 <= following <= 0xD7 or following == 0xFF:
            pos = found + 1
            continue
        return found


def sanitize_icc(profile: bytes) -> bytes:
    """The ICC profile without what names a device: the header's device manufacturer, model,
    attributes, creator and profile ID are zeroed (ICC.1 7.2) and the device description,
    metadata and characterisation tags are left out (ICC.1 9.2)."""
    if len(profile) < 132:
        return b""
    header = bytearray(profile[:128])
    for start, end in ((48, 56), (56, 64), (80, 84), (84, 100)):
        header[start:end] = bytes(end - start)
    (count,) = struct.unpack(">I", profile[128:132])
    table: list[tuple[bytes, int, int]] = []
    for i in range(count):
        entry = profile[132 + 12 * i : 144 + 12 * i]
        if len(entry) < 12:
            return b""
        sig, offset, size = entry[:4], *struct.unpack(">II", entry[4:])
        if sig not in ICC_DEVICE_TAGS and offset + size <= len(profile):
            table.append((sig, offset, size))
    body = bytearray()
    placed: dict[tuple[int, int], int] = {}  # shared tag data stays shared
    first = 132 + 12 * len(table)
    entries = bytearray()
    for sig, offset, size in table:
        if (offset, size) not in placed:
            while (first + len(body)) % 4:
                body += b"\x00"
            placed[(offset, size)] = first + len(body)
            body += profile[offset : offset + size]
        entries += sig + struct.pack(">II", placed[(offset, size)], size)
    while len(body) % 4:
        body += b"\x00"
    result = header + struct.pack(">I", len(table)) + entries + body
    result[0:4] = struct.pack(">I", len(result))
    return bytes(result)


def _exif_datetime(image: Image.Image) -> str:
    """EXIF DateTimeOriginal (+ OffsetTimeOriginal) as a DICOM DT, or ''."""
    sub = image.getexif().get_ifd(EXIF_IFD)
    raw = str(sub.get(DATETIME_ORIGINAL, "")).strip("\x00 ")
    try:
        when = dt.datetime.strptime(raw, "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return ""
    offset = str(sub.get(OFFSET_TIME_ORIGINAL, "")).strip("\x00 ")
    text = when.strftime("%Y%m%d%H%M%S")
    if len(offset) == 6 and offset[0] in "+-" and offset[3] == ":":
        text += offset.replace(":", "")
    return text


def _open(data: bytes, name: str) -> Image.Image:
    """Open (headers only: EXIF, ICC and size are known, pixels are not decoded yet).

    Raises:
        ConversionError: not an image Pillow reads.
    """
    try:
        if data[4:8] == b"ftyp":
            import pillow_heif

            pillow_heif.register_heif_opener()
        return Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ConversionError(f"corrupt or unreadable {name}: {exc}") from exc


def _decode(image: Image.Image, name: str, *, check_only: bool = False) -> None:
    """Decode the pixels, so a corrupt or truncated file fails here and not in a viewer.
    ``check_only``: a JPEG that passes through is decoded at 1/8 scale (every entropy-coded
    byte is still read, most of the inverse DCT is skipped)."""
    try:
        if check_only:
            image.draft(image.mode, (max(1, image.width // 8), max(1, image.height // 8)))
        image.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise ConversionError(f"corrupt or unreadable {name}: {exc}") from exc


def _pixels(image: Image.Image) -> tuple[np.ndarray, str, list[str]]:
    """The image as an array DICOM can hold (grey 8/16-bit or RGB), with warnings."""
    warnings: list[str] = []
    mode = image.mode
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        warnings.append("the alpha (transparency) channel was dropped")
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        # VL images are 8-bit (PS3.3 C.8.12.1.1: Bits Allocated 8): keep the high byte.
        array = np.asarray(image)
        if array.min() < 0 or array.max() > 0xFFFF:
            raise ConversionError("32-bit grey images are not supported")
        warnings.append("16-bit grey pixels reduced to 8 bits (VL images are 8-bit)")
        return (array.astype(np.uint16) >> 8).astype(np.uint8), "MONOCHROME2", warnings
    if mode in ("L", "LA", "1"):
        return np.asarray(image.convert("L")), "MONOCHROME2", warnings
    return np.asarray(image.convert("RGB")), "RGB", warnings


def convert_photo(job: Job) -> list[Path]:
    """Convert one photo into one VL Photographic Image object; return its path.

    Raises:
        ConversionError: corrupt or unreadable image.
    """
    notes, options, context = job.warnings, job.options, job.context
    data = job.path.read_bytes()
    is_jpeg = data[:3] == b"\xff\xd8\xff"
    jpeg = clean_jpeg(data) if is_jpeg else None
    name = "JPEG" if is_jpeg else "image"
    image = _open(data, name)
    orientation = int(image.getexif().get(EXIF_ORIENTATION, 1) or 1)
    if orientation not in range(1, 9):
        orientation = 1
    acquired = _exif_datetime(image) if options.exif_datetime else ""
    icc = sanitize_icc(image.info.get("icc_profile") or b"")
    source_lossy = (
        is_jpeg or data[4:8] == b"ftyp" or "jpeg" in str(image.info.get("compression", ""))
    )
    passthrough = (
        jpeg is not None
        and jpeg.passthrough
        and options.jpeg_quality is None
        and (orientation == 1 or options.orientation == "record")
    )
    syntax = JPEGBaseline8Bit if passthrough or options.jpeg_quality else JPEGLSLossless
    _decode(image, name, check_only=passthrough)
    variant = (options.orientation, str(options.jpeg_quality), str(options.exif_datetime))
    ds = job.dataset("photo", VL_PHOTOGRAPHIC, syntax, *variant)
    _image_modules(ds, context, acquired)
    if orientation != 1:
        if options.orientation == "record":
            ds.ImageComments = f"Displayed as taken: {ORIENTATION_TEXT[orientation]}"
            notes.append(f"EXIF orientation {orientation} recorded, pixels kept as stored")
        else:
            notes.append(f"EXIF orientation {orientation} applied to the pixels")
    if passthrough:
        assert jpeg is not None
        _describe(ds, jpeg.rows, jpeg.columns, len(jpeg.components), jpeg.photometric, 8)
        _lossy(ds, "ISO_10918_1", jpeg.rows * jpeg.columns * len(jpeg.components), len(jpeg.data))
        fragments: list[bytes] = [jpeg.data]
    else:
        if orientation != 1 and options.orientation != "record":
            image = ImageOps.exif_transpose(image)
        array, photometric, dropped = _pixels(image)
        notes.extend(dropped)
        if any("reduced" in note for note in dropped):
            ds.ImageType = ["DERIVED", "PRIMARY"]
            ds.DerivationDescription = "16-bit grey values reduced to their high 8 bits"
        samples = 3 if array.ndim == 3 else 1
        rows, columns = array.shape[:2]
        if options.jpeg_quality is not None:
            encoded = _encode_jpeg(array, options.jpeg_quality)
            _describe(ds, rows, columns, samples, encoded.photometric, 8)
            _lossy(ds, "ISO_10918_1", array.size, len(encoded.data))
            notes.append(f"transcoded to JPEG baseline, quality {options.jpeg_quality}")
            fragments = [encoded.data]
        else:
            _describe(ds, rows, columns, samples, photometric, 8)
            if source_lossy:
                ds.LossyImageCompression = "01"
            else:
                ds.LossyImageCompression = "00"
            ds.compress(
                JPEGLSLossless, array, encoding_plugin="pyjpegls", generate_instance_uid=False
            )
            fragments = []
    if icc and ds.SamplesPerPixel == 3:
        ds.ICCProfile = icc  # ICC Profile module (C.11.15)
    return [write_part10(ds, output_path(job.out_dir, ds), fragments)]


def _encode_jpeg(array: np.ndarray, quality: int) -> JpegStream:
    """JPEG baseline, 4:2:0 (YBR_FULL_422, as VL images allow), without JFIF or any other
    APPn (cleaned again)."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", quality=quality, subsampling=2)
    return clean_jpeg(buffer.getvalue())


def _image_modules(ds: Dataset, context: Context, acquired: str) -> None:
    """General Image (C.7.6.1), General Acquisition (C.7.10.1), Acquisition Context
    (C.7.6.14) and VL Image (C.8.12.1) attributes that do not depend on the pixels."""
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PatientOrientation = ""
    if acquired:  # otherwise absent: a photo is not part of a temporally related series
        ds.ContentDate = acquired[:8]
        ds.ContentTime = acquired[8:14]
        ds.AcquisitionDateTime = acquired
    ds.BurnedInAnnotation = "NO"
    ds.AcquisitionContextSequence = DicomSequence()
    add_anatomy(ds, context, required=True)


def _describe(
    ds: Dataset, rows: int, columns: int, samples: int, photometric: str, bits: int
) -> None:
    """Image Pixel module (C.7.6.3); VL images are 8-bit (C.8.12.1.1)."""
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    if samples > 1:
        ds.PlanarConfiguration = 0


def _lossy(ds: Dataset, method: str, raw_bytes: int, coded_bytes: int) -> None:
    """Lossy Image Compression attributes (C.7.6.1.1.5)."""
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionRatio = f"{raw_bytes / max(coded_bytes, 1):.2f}"
    ds.LossyImageCompressionMethod = method

"""Rendering pixel data for people: a frame to an 8-bit JPEG, PNG or GIF.

The pipeline follows the grayscale and colour display chains of PS3.4 N.2: Modality LUT
(Rescale Slope/Intercept), VOI LUT (a requested window, else the object's Window
Center/Width, else the frame's range), Presentation LUT (MONOCHROME1 inverted), then a
source region and a scale to the viewport. Colour images (RGB, YBR decoded to RGB,
palette colour) skip the grayscale steps. Nothing here knows of HTTP; the web front end
parses its parameters into a :class:`RenderRequest`.

Frames are decoded from their own bytes (one ranged read, see vna.retrieve) by handing
pydicom a one-frame data set built from the precomputed metadata, so a tile of a
50,000-frame slide never costs reading the slide.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import UID

from vna.errors import BadRequest, NotAcceptable

#: Output formats and the Pillow writer of each.
FORMATS = {"image/jpeg": "JPEG", "image/png": "PNG", "image/gif": "GIF"}
#: VOI LUT functions of PS3.3 C.11.2.1.3 (the names used by PS3.18 8.3.5.1.4 in lower case).
VOI_FUNCTIONS = ("linear", "linear-exact", "sigmoid")
#: Largest side of a thumbnail when no viewport is given.
THUMBNAIL_SIZE = 128
#: Pixel attributes copied into the one-frame data set handed to the decoders.
_PIXEL_KEYWORDS = (
    "Rows",
    "Columns",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "PlanarConfiguration",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "RedPaletteColorLookupTableDescriptor",
    "GreenPaletteColorLookupTableDescriptor",
    "BluePaletteColorLookupTableDescriptor",
)


@dataclass(frozen=True)
class Window:
    """A VOI window: center, width and function (PS3.3 C.11.2.1.2)."""

    center: float
    width: float
    function: str = "linear"


@dataclass(frozen=True)
class Viewport:
    """Output size and an optional source region (PS3.18 8.3.5.1.3).

    ``sx, sy`` is the top-left corner of the region in pixels, ``sw, sh`` its size; a
    negative size flips the region along that axis. The rendered region is scaled to fit
    within ``vw × vh`` keeping its aspect ratio.
    """

    vw: int
    vh: int
    sx: int = 0
    sy: int = 0
    sw: int | None = None
    sh: int | None = None


@dataclass(frozen=True)
class RenderRequest:
    """What to render and how."""

    media_type: str = "image/jpeg"
    window: Window | None = None
    viewport: Viewport | None = None
    quality: int = 90
    #: Fit within this many pixels on the longer side when no viewport is given (thumbnails).
    max_side: int | None = None


def frame_dataset(attributes: Dataset, ts: str, frame: bytes) -> Dataset:
    """A one-frame data set over ``frame`` (its stored bytes) that pydicom can decode."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(ts)
    for keyword in _PIXEL_KEYWORDS:
        if keyword in attributes:
            setattr(ds, keyword, attributes.data_element(keyword).value)  # type: ignore[union-attr]
    ds.NumberOfFrames = 1
    if UID(ts).is_encapsulated:
        ds.PixelData = encapsulate([frame])
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
    else:
        ds.PixelData = frame
        ds["PixelData"].VR = "OW" if int(attributes.get("BitsAllocated", 8) or 8) > 8 else "OB"
    ds.set_original_encoding(False, True)
    return ds


def decode_frame(attributes: Dataset, ts: str, frame: bytes) -> np.ndarray:
    """Pixel values of one frame from its stored bytes (colour as RGB).

    Raises:
        NotAcceptable: no decoder for the transfer syntax, or the bytes do not decode.
    """
    ds = frame_dataset(attributes, ts, frame)
    try:
        return np.asarray(ds.pixel_array)
    except Exception as exc:
        raise NotAcceptable(f"cannot decode a frame in {UID(ts).name}: {exc}") from exc


def native_bytes(arr: np.ndarray, attributes: Dataset) -> bytes:
    """Decoded pixels as native little-endian frame bytes (PS3.5 8.2, interleaved samples)."""
    bits = int(attributes.get("BitsAllocated", 8) or 8)
    if bits <= 8:
        return np.ascontiguousarray(
            arr.astype(np.uint8 if arr.dtype.kind == "u" else np.int8)
        ).tobytes()
    dtype = arr.dtype.newbyteorder("<")
    return np.ascontiguousarray(arr.astype(dtype)).tobytes()


def _first(value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        if not isinstance(value, (str, bytes)) and hasattr(value, "__getitem__"):
            value = value[0]
        return float(value)
    except (TypeError, ValueError, IndexError):
        return None


def apply_window(values: np.ndarray, window: Window) -> np.ndarray:
    """Map modality values to 0..255 with a VOI window (PS3.3 C.11.2.1.2.1, C.11.2.1.3.1)."""
    c, w = float(window.center), max(float(window.width), 1.0)
    x = values.astype(np.float64)
    if window.function == "sigmoid":
        out = 255.0 / (1.0 + np.exp(-4.0 * (x - c) / w))
    elif window.function == "linear-exact":
        out = ((x - c) / w + 0.5) * 255.0
    else:
        w = max(w, 2.0)
        out = ((x - (c - 0.5)) / (w - 1.0) + 0.5) * 255.0
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def to_display(arr: np.ndarray, attributes: Dataset, window: Window | None) -> np.ndarray:
    """8-bit grayscale (H×W) or RGB (H×W×3) display values of one decoded frame."""
    photometric = str(attributes.get("PhotometricInterpretation", "MONOCHROME2") or "").upper()
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        arr = apply_color_lut(arr, attributes)
    if arr.ndim == 3:
        # colour: scale to 8 bits when stored deeper
        if arr.dtype != np.uint8:
            top = float(2 ** int(attributes.get("BitsStored", 8) or 8) - 1)
            if photometric == "PALETTE COLOR":
                top = float(arr.max()) or 1.0
            arr = np.clip(arr.astype(np.float64) * (255.0 / top), 0, 255).astype(np.uint8)
        return arr
    slope = _first(attributes.get("RescaleSlope")) or 1.0
    intercept = _first(attributes.get("RescaleIntercept")) or 0.0
    values = arr.astype(np.float64) * slope + intercept if (slope, intercept) != (1.0, 0.0) else arr
    if window is None:
        center = _first(attributes.get("WindowCenter"))
        width = _first(attributes.get("WindowWidth"))
        function = str(attributes.get("VOILUTFunction", "LINEAR") or "LINEAR").lower()
        function = (
            function.replace("_", "-") if function in ("linear_exact", "sigmoid") else ("linear")
        )
        if center is not None and width is not None and width > 0:
            window = Window(center, width, function)
    if window is None:
        low, high = float(np.min(values)), float(np.max(values))
        window = Window((low + high) / 2.0, max(high - low, 1.0), "linear-exact")
    out = apply_window(values, window)
    if photometric == "MONOCHROME1":
        out = 255 - out
    return out


def _fit(width: int, height: int, max_w: int, max_h: int) -> tuple[int, int]:
    scale = min(max_w / width, max_h / height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def apply_viewport(image: Any, viewport: Viewport | None, max_side: int | None) -> Any:
    """Crop to the source region, flip on negative sizes, scale to fit the viewport."""
    from PIL import Image

    if viewport is not None:
        sw = viewport.sw if viewport.sw is not None else image.width - viewport.sx
        sh = viewport.sh if viewport.sh is not None else image.height - viewport.sy
        if sw == 0 or sh == 0:
            raise BadRequest("viewport source region is empty")
        x0, x1 = sorted((viewport.sx, viewport.sx + sw))
        y0, y1 = sorted((viewport.sy, viewport.sy + sh))
        if (x0, y0, x1, y1) != (0, 0, image.width, image.height):
            image = image.crop((x0, y0, x1, y1))  # outside the image is filled black
        if sw < 0:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if sh < 0:
            image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
        size = _fit(image.width, image.height, viewport.vw, viewport.vh)
    elif max_side is not None:
        size = _fit(image.width, image.height, max_side, max_side)
        if size[0] > image.width:
            size = (image.width, image.height)
    else:
        return image
    if size != (image.width, image.height):
        image = image.resize(size, Image.Resampling.LANCZOS)
    return image


def encode(display: np.ndarray, request: RenderRequest) -> bytes:
    """The display values as an image file of ``request.media_type``."""
    from PIL import Image

    fmt = FORMATS.get(request.media_type)
    if fmt is None:
        raise NotAcceptable(f"cannot render as {request.media_type}")
    image = Image.fromarray(display, "RGB" if display.ndim == 3 else "L")
    image = apply_viewport(image, request.viewport, request.max_side)
    buffer = io.BytesIO()
    if fmt == "JPEG":
        image.save(buffer, format=fmt, quality=request.quality)
    else:
        image.save(buffer, format=fmt)
    return buffer.getvalue()


def render_array(arr: np.ndarray, attributes: Dataset, request: RenderRequest) -> bytes:
    """Render one decoded frame."""
    return encode(to_display(arr, attributes, request.window), request)


def render_frame(attributes: Dataset, ts: str, frame: bytes, request: RenderRequest) -> bytes:
    """Render one frame from its stored bytes.

    Raises:
        NotAcceptable: the frame cannot be decoded or the format is not supported.
    """
    return render_array(decode_frame(attributes, ts, frame), attributes, request)


def is_renderable(attributes: Dataset) -> bool:
    """Whether the object has pixel data with a shape (an image)."""
    return bool(attributes.get("Rows")) and bool(attributes.get("Columns"))

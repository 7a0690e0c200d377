"""Transfer syntax conversion for retrieval (C-MOVE/C-GET sub-operations, WADO-RS Accept).

Decoding uses pydicom's pixel backends (pylibjpeg, libjpeg, openjpeg, pyjpegls, gdcm);
encoding is possible to the native syntaxes, deflate, RLE Lossless, JPEG-LS and JPEG 2000
(lossless and lossy), and to JPEG Baseline 8-bit through Pillow. The whole object is decoded
in memory, so transcoding is for the cases a peer cannot take the stored syntax; stored
bytes are always preferred.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from vna.errors import NotAcceptable

NATIVE = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    ExplicitVRBigEndian,
    DeflatedExplicitVRLittleEndian,
)
#: Syntaxes this module can write, in the order of preference for a peer that accepts many.
ENCODABLE = (
    *NATIVE,
    RLELossless,
    JPEGLSLossless,
    JPEG2000Lossless,
    JPEGLSNearLossless,
    JPEG2000,
    JPEGBaseline8Bit,
)
LOSSLESS = frozenset(
    {
        *NATIVE,
        RLELossless,
        JPEGLSLossless,
        JPEG2000Lossless,
        UID("1.2.840.10008.1.2.4.57"),
        UID("1.2.840.10008.1.2.4.70"),
    }
)


def can_decode(ts: str) -> bool:
    """Whether pixel data in ``ts`` can be decoded here."""
    if ts in NATIVE:
        return True
    try:
        from pydicom.pixels import get_decoder

        return bool(get_decoder(UID(ts)).is_available)
    except (NotImplementedError, ValueError, KeyError):
        return False


def can_transcode(src_ts: str, dst_ts: str, has_pixels: bool = True) -> bool:
    """Whether an object stored in ``src_ts`` can be given in ``dst_ts``."""
    if src_ts == dst_ts:
        return True
    if dst_ts not in ENCODABLE:
        return False
    if not has_pixels:
        return UID(src_ts).is_encapsulated is False or dst_ts in NATIVE
    return can_decode(src_ts)


def transcode_dataset(ds: Dataset, dst_ts: str, *, lossy_quality: int = 90) -> Dataset:
    """Re-encode a full data set (pixel data included) into ``dst_ts``, in place.

    Raises:
        NotAcceptable: the conversion is not possible (no decoder, no encoder, bad shape).
    """
    src_ts = UID(ds.file_meta.TransferSyntaxUID)
    target = UID(dst_ts)
    if src_ts == target:
        return ds
    has_pixels = "PixelData" in ds
    try:
        if src_ts == ExplicitVRBigEndian or target == ExplicitVRBigEndian:
            ds = _reencode_native(ds, little=target != ExplicitVRBigEndian)
        # the object keeps its identity through a decompression or a lossless conversion;
        # pydicom would otherwise give it a new SOP Instance UID
        if has_pixels and src_ts.is_compressed:
            ds.decompress(generate_instance_uid=False)
        if target == JPEGBaseline8Bit and has_pixels:
            _encode_jpeg_baseline(ds, lossy_quality)
        elif has_pixels and target == JPEG2000:
            ds.compress(target, j2k_psnr=[80])
        elif has_pixels and target == JPEGLSNearLossless:
            ds.compress(target, jls_error=2)
        elif has_pixels and target.is_compressed:
            ds.compress(target, generate_instance_uid=False)
        else:
            ds.file_meta.TransferSyntaxUID = target
    except NotAcceptable:
        raise
    except Exception as exc:
        raise NotAcceptable(f"cannot convert from {src_ts.name} to {target.name}: {exc}") from exc
    ds.file_meta.TransferSyntaxUID = target
    return ds


def _reencode_native(ds: Dataset, little: bool) -> Dataset:
    """A copy of the data set free of its original byte order, pixel data in ``little`` or
    big endian (pydicom will not switch the byte order of a data set it read)."""
    new = Dataset()
    new.file_meta = ds.file_meta
    for elem in ds:
        new.add(elem)
    if "PixelData" in ds and not UID(ds.file_meta.TransferSyntaxUID).is_compressed:
        arr = ds.pixel_array
        dtype = arr.dtype.newbyteorder("<" if little else ">")
        new.PixelData = arr.astype(dtype).tobytes()
        if int(ds.get("SamplesPerPixel", 1)) > 1:
            new.PlanarConfiguration = 0  # pixel_array gives interleaved samples
        if int(ds.BitsAllocated) > 8:
            new["PixelData"].VR = "OW"
    return new


def _encode_jpeg_baseline(ds: Dataset, quality: int) -> None:
    """JPEG Baseline through Pillow (8-bit monochrome or RGB only, PS3.5 A.4.1)."""
    from PIL import Image

    if int(ds.BitsAllocated) != 8:
        raise NotAcceptable("JPEG Baseline needs 8-bit pixel data")
    arr = ds.pixel_array
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames == 1:
        arr = arr[np.newaxis, ...]
    rgb = int(ds.SamplesPerPixel) == 3
    out = []
    for frame in arr:
        image = Image.fromarray(frame.astype(np.uint8), "RGB" if rgb else "L")
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=quality)
        out.append(buffer.getvalue())
    ds.PixelData = encapsulate(out)
    ds["PixelData"].VR = "OB"
    if rgb:
        ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit


def transcode_file(src: Path | BinaryIO, dst_ts: str) -> bytes:
    """A Part 10 file re-encoded into ``dst_ts``, as bytes.

    Raises:
        NotAcceptable: the conversion is not possible.
    """
    read: Dataset = pydicom.dcmread(src, force=True)
    _complete_file_meta(read)
    ds = transcode_dataset(read, dst_ts)
    buffer = io.BytesIO()
    target = UID(dst_ts)
    ds.save_as(
        buffer,
        implicit_vr=target == ImplicitVRLittleEndian,
        little_endian=target != ExplicitVRBigEndian,
        enforce_file_format=True,
    )
    return buffer.getvalue()


def _complete_file_meta(ds: Dataset) -> None:
    """Give a bare data set (stored without File Meta Information) the meta elements the
    conversion and the Part 10 writer need, from how it was read (PS3.10 7.1)."""
    from pydicom.dataset import FileMetaDataset

    meta = ds.get("file_meta") or FileMetaDataset()
    if "TransferSyntaxUID" not in meta:
        implicit, little = ds.original_encoding
        meta.TransferSyntaxUID = (
            ImplicitVRLittleEndian
            if implicit
            else ExplicitVRLittleEndian
            if little
            else ExplicitVRBigEndian
        )
    if "MediaStorageSOPClassUID" not in meta and "SOPClassUID" in ds:
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
    if "MediaStorageSOPInstanceUID" not in meta and "SOPInstanceUID" in ds:
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta = meta


def choose(stored_ts: str, accepted: list[str], has_pixels: bool = True) -> str | None:
    """The syntax to send to a peer accepting ``accepted``: the stored one when accepted,
    else the first lossless conversion possible, else any possible one, else None."""
    if stored_ts in accepted:
        return stored_ts
    options = [ts for ts in accepted if can_transcode(stored_ts, ts, has_pixels)]
    if stored_ts in LOSSLESS:
        lossless = [ts for ts in options if ts in LOSSLESS]
        if lossless:
            return lossless[0]
    return options[0] if options else None

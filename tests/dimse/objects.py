"""Objects the DIMSE tests send: small compressed images and an H.264 video."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
from pydicom.encaps import encapsulate
from pydicom.uid import MPEG4HP41, JPEGLSLossless, RLELossless

from tests.support.factory import make_dataset, uid, write

VIDEO_PHOTOGRAPHIC = "1.2.840.10008.5.1.4.1.1.77.1.4.1"


def compressed_file(path: Path, syntax: str = JPEGLSLossless, **kwargs: object) -> Path:
    """A small CT image compressed losslessly (JPEG-LS or RLE)."""
    ds = make_dataset(rows=32, columns=32, **kwargs)  # type: ignore[arg-type]
    ds.compress(syntax if syntax in (JPEGLSLossless, RLELossless) else JPEGLSLossless)
    return write(ds, path)


def video_file(path: Path, frames: int = 8, **kwargs: object) -> Path:
    """A Video Photographic Image of a few H.264 frames (MPEG-4 AVC HP@4.1), the whole MP4
    as one fragment."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for i in range(frames):
            image = np.full((64, 64, 3), (i * 30) % 255, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    ds = make_dataset(rows=64, columns=64, sop_class=VIDEO_PHOTOGRAPHIC, modality="XC", **kwargs)  # type: ignore[arg-type]
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "YBR_PARTIAL_420"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.NumberOfFrames = frames
    ds.FrameTime = 100
    ds.PixelData = encapsulate([buffer.getvalue()], has_bot=False)
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = MPEG4HP41
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid()
    return write(ds, path)

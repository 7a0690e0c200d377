"""Video (MP4, MOV, M4V, AVI, MKV, WebM) → Video Photographic / Endoscopic / Microscopic
Image Storage (PS3.3 A.32.7, A.32.5, A.32.6) in an MPEG-4 AVC/H.264 transfer syntax.

An H.264 stream that fits a DICOM profile (PS3.5 8.2.8: 8-bit 4:2:0, at most 1920×1080,
High Profile Level 4.1 up to 30 frames/s — or 1280×720 at 60 — for .102, Level 4.2 up to 60
frames/s for .104) is remuxed without re-encoding; anything else is transcoded with libx264
to such a stream first. The remux writes a fresh MP4 with no container metadata (creation
time, `loci`/`©xyz` location, title, encoder: FFmpeg's bitexact mode writes none), no audio
and no SEI NAL units (user data such as an encoder's settings string or a camera's serial
number), removed with the ``filter_units`` bitstream filter. The whole MP4 becomes one
fragment of the Pixel Data (PS3.5 8.2.8), copied in chunks.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import Tag

from vna.convert.common import Job, add_anatomy, output_path, write_part10
from vna.convert.context import Context
from vna.errors import ConversionError

VIDEO_PHOTOGRAPHIC = "1.2.840.10008.5.1.4.1.1.77.1.4.1"
VIDEO_ENDOSCOPIC = "1.2.840.10008.5.1.4.1.1.77.1.1.1"
VIDEO_MICROSCOPIC = "1.2.840.10008.5.1.4.1.1.77.1.2.1"
SOP_CLASS_BY_DEVICE = {"endoscope": VIDEO_ENDOSCOPIC, "microscope": VIDEO_MICROSCOPIC}
MPEG4_HP41 = "1.2.840.10008.1.2.4.102"  # MPEG-4 AVC/H.264 High Profile / Level 4.1
MPEG4_HP42 = "1.2.840.10008.1.2.4.104"  # MPEG-4 AVC/H.264 High Profile / Level 4.2 (2D)
#: H.264 profiles that are High Profile or a subset of it.
HIGH_SUBSETS = frozenset({"Constrained Baseline", "Main", "High"})
MAX_WIDTH, MAX_HEIGHT = 1920, 1080
SEI_FILTER = "filter_units=remove_types=6"
#: FFmpeg muxer options: no encoder tag nor creation time (bitexact), index first.
MUX_OPTIONS = {"movflags": "+faststart", "fflags": "+bitexact"}


@dataclass
class VideoInfo:
    """What the first video stream says about itself."""

    codec: str
    profile: str
    level: int  # level_idc: 41 = Level 4.1
    width: int
    height: int
    rate: Fraction
    pix_fmt: str


def probe(path: Path) -> VideoInfo:
    """The first video stream's codec, profile, level, size and frame rate.

    Raises:
        ConversionError: unreadable, or no video stream.
    """
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ConversionError("the file has no video stream")
            stream = container.streams.video[0]
            ctx = stream.codec_context
            rate = stream.average_rate or stream.guessed_rate or Fraction(30)
            return VideoInfo(
                codec=ctx.name,
                profile=str(ctx.profile or ""),
                level=int(getattr(ctx, "level", 0) or 0),
                width=ctx.width,
                height=ctx.height,
                rate=Fraction(rate),
                pix_fmt=str(ctx.pix_fmt or ""),
            )
    except av.FFmpegError as exc:
        raise ConversionError(f"unreadable video: {exc}") from exc


def syntax_for_remux(info: VideoInfo) -> str | None:
    """The MPEG-4 transfer syntax the stream fits as it is, or None (transcode)."""
    if info.codec != "h264" or info.pix_fmt not in ("yuv420p", "yuvj420p"):
        return None
    if info.profile not in HIGH_SUBSETS or not 0 < info.level <= 42:
        return None
    if info.width > MAX_WIDTH or info.height > MAX_HEIGHT:
        return None
    small = info.width * info.height <= 1280 * 720
    if info.level <= 41 and (info.rate <= 30 or (small and info.rate <= 60)):
        return MPEG4_HP41
    if info.rate <= 60:
        return MPEG4_HP42
    return None


def remux(source: Path, target: Path) -> int:
    """Copy the first video stream into a clean MP4 (no metadata, no SEI, no audio); return
    the number of frames."""
    frames = 0
    with (
        av.open(str(source)) as inp,
        av.open(str(target), "w", format="mp4", options=MUX_OPTIONS) as out,
    ):
        stream = inp.streams.video[0]
        ost = out.add_stream_from_template(stream)
        ost.metadata.clear()
        bsf = av.bitstream.BitStreamFilterContext(SEI_FILTER, stream, ost)
        for packet in inp.demux(stream):
            if packet.dts is None and packet.size == 0:
                continue
            for filtered in bsf.filter(packet):
                filtered.stream = ost
                out.mux(filtered)
                frames += 1
        for filtered in bsf.filter(None):
            filtered.stream = ost
            out.mux(filtered)
            frames += 1
    return frames


def transcode(source: Path, target: Path, info: VideoInfo) -> str:
    """Re-encode to H.264 High Profile 8-bit 4:2:0 within 1920×1080 and 60 frames/s; return
    the transfer syntax the result fits."""
    scale = min(1.0, MAX_WIDTH / info.width, MAX_HEIGHT / info.height)
    width = max(2, int(info.width * scale) // 2 * 2)
    height = max(2, int(info.height * scale) // 2 * 2)
    rate = info.rate if info.rate <= 60 else Fraction(60)
    small = width * height <= 1280 * 720
    syntax, level = (MPEG4_HP41, "4.1") if rate <= 30 or small else (MPEG4_HP42, "4.2")
    step = info.rate / rate  # source frames per output frame (drops frames above 60/s)
    with av.open(str(source)) as inp, av.open(str(target), "w", format="mp4") as out:
        stream = inp.streams.video[0]
        stream.thread_type = "AUTO"
        ost = out.add_stream("libx264", rate=rate)
        ost.width, ost.height, ost.pix_fmt = width, height, "yuv420p"
        ost.codec_context.options = {
            "profile": "high",
            "level": level,
            "preset": "veryfast",
            "crf": "18",
        }
        count, written, due = 0, 0, Fraction(0)
        for frame in inp.decode(stream):
            if count < due:
                count += 1
                continue
            due += step
            count += 1
            out_frame = frame.reformat(width=width, height=height, format="yuv420p")
            out_frame.pts = written
            out_frame.time_base = 1 / rate
            written += 1
            for packet in ost.encode(out_frame):
                out.mux(packet)
        for packet in ost.encode(None):
            out.mux(packet)
    return syntax


def convert_video(job: Job) -> list[Path]:
    """Convert one video into one Video Photographic (or Endoscopic/Microscopic) object.

    Raises:
        ConversionError: unreadable, no video stream, or too large for one DICOM item.
    """
    info = probe(job.path)
    sop_class = SOP_CLASS_BY_DEVICE.get(job.context.device_type, VIDEO_PHOTOGRAPHIC)
    job.out_dir.mkdir(parents=True, exist_ok=True)  # the clean MP4 is written beside
    with tempfile.TemporaryDirectory(dir=job.out_dir, prefix=".video-") as tmp:
        clean = Path(tmp) / "clean.mp4"
        syntax = syntax_for_remux(info)
        try:
            if syntax is None:
                encoded = Path(tmp) / "encoded.mp4"
                syntax = transcode(job.path, encoded, info)
                job.warnings.append(
                    f"transcoded from {info.codec} {info.profile} {info.width}x{info.height} "
                    f"to H.264 High Profile"
                )
                frames = remux(encoded, clean)
                info = probe(clean)
            else:
                frames = remux(job.path, clean)
        except av.FFmpegError as exc:
            raise ConversionError(f"cannot read the video stream: {exc}") from exc
        if frames == 0:
            raise ConversionError("the video stream holds no frame")
        ds = job.dataset("video", sop_class, syntax)
        _video_modules(ds, job.context, info, frames)
        return [write_part10(ds, output_path(job.out_dir, ds), [clean])]


def _video_modules(ds: Dataset, context: Context, info: VideoInfo, frames: int) -> None:
    """General Image (C.7.6.1), Image Pixel (C.7.6.3, with PS3.5 8.2.8's values for MPEG-4),
    Cine (C.7.6.5), Multi-frame (C.7.6.6), Acquisition Context (C.7.6.14), VL Image
    (C.8.12.1)."""
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PatientOrientation = ""
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionMethod = "ISO_14496_10"
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "YBR_PARTIAL_420"
    ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = info.height, info.width
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelRepresentation = 0
    ds.NumberOfFrames = frames
    ds.FrameIncrementPointer = Tag("FrameTime")
    ds.FrameTime = f"{1000 / float(info.rate):.6g}"
    ds.CineRate = round(info.rate)
    ds.RecommendedDisplayFrameRate = round(info.rate)
    ds.StartTrim = 1
    ds.StopTrim = frames
    ds.AcquisitionContextSequence = DicomSequence()
    add_anatomy(ds, context, required=True)

"""Video → Video Photographic / Endoscopic: remux without re-encoding, metadata gone."""

from __future__ import annotations

import struct
from fractions import Fraction
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import generate_fragments

from tests.support.media import decode_frames, mp4_boxes, planted_video
from tests.support.validate import assert_valid, find_planted
from vna.convert import Context, classify, convert_file
from vna.convert.video import MPEG4_HP41, MPEG4_HP42, VideoInfo, syntax_for_remux
from vna.errors import ConversionError

CONTEXT = Context(
    patient_id="PAT-2",
    patient_name="Roe^Rick",
    accession="ACC-2",
    study_date="20240106",
    study_time="0930",
    body_part="skin",
)
PLANTED_VIDEO = [
    b"PLANTED-TITLE",
    b"PLANTED-COMMENT",
    b"PLANTED-OWNER",
    b"PLANTED-HANDLER",
    b"+48.8577+002.2950",
    b"x264 - core",
    b"Lavf",
    b"2021-05-04",
]


def the_mp4(path: Path) -> bytes:
    ds = pydicom.dcmread(path)
    fragments = [f for f in generate_fragments(ds.PixelData) if f]
    assert len(fragments) == 1  # the whole MP4 in one fragment (PS3.5 8.2.8)
    return fragments[0]


def creation_times(mp4: bytes) -> list[int]:
    """creation/modification times of the mvhd, tkhd and mdhd boxes (version 0 or 1)."""
    times = []
    for kind, body in mp4_boxes(mp4):
        if kind in (b"mvhd", b"tkhd", b"mdhd"):
            fmt = ">QQ" if body[0] == 1 else ">II"
            times += struct.unpack(fmt, body[4 : 4 + struct.calcsize(fmt)])
    return times


@pytest.mark.parametrize("container", ["mp4", "mov"])
def test_h264_is_remuxed_without_reencoding_and_without_metadata(
    tmp_path: Path, container: str
) -> None:
    source = planted_video(tmp_path / f"clip.{container}", container=container)
    raw = source.read_bytes()
    boxes = dict(mp4_boxes(raw))
    assert b"PLANTED-TITLE" in raw and b"x264 - core" in raw
    # the location: a binary `loci` box in MP4, a `©xyz` text in QuickTime
    location = boxes[b"loci"][6:18] if container == "mp4" else b"+48.8577+002.2950"
    assert location in raw
    notes: list[str] = []
    [out] = convert_file(source, CONTEXT, tmp_path / "out", warnings=notes)
    assert notes == []  # remuxed, not transcoded
    assert_valid([out])
    assert find_planted([out], [*PLANTED_VIDEO, location, b"loci", b"\xa9xyz"]) == []
    ds = pydicom.dcmread(out)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.77.1.4.1"
    assert ds.file_meta.TransferSyntaxUID == MPEG4_HP41
    assert (ds.Rows, ds.Columns, ds.NumberOfFrames) == (240, 320, 24)
    assert float(ds.FrameTime) == pytest.approx(40.0)
    assert ds.PhotometricInterpretation == "YBR_PARTIAL_420"
    mp4 = the_mp4(out)
    boxes = mp4_boxes(mp4)
    assert {kind for kind, _ in boxes}.isdisjoint({b"loci", b"\xa9xyz", b"sei "})
    # FFmpeg leaves an empty item list (udta/meta/ilst of 8 bytes) and nothing else
    user_data = [body for kind, body in boxes if kind == b"udta"]
    assert all(body.endswith(b"\x00\x00\x00\x08ilst") for body in user_data)
    assert set(creation_times(mp4)) == {0}
    # same frames as the source: the coded pictures were copied, not re-encoded
    source_frames = decode_frames(source)
    converted = decode_frames(mp4)
    assert len(converted) == len(source_frames) == 24
    assert all(np.array_equal(a, b) for a, b in zip(source_frames, converted, strict=True))
    import av

    with av.open(__import__("io").BytesIO(mp4)) as clip:
        assert not clip.streams.audio and not clip.metadata.get("title")


def test_other_codecs_are_transcoded_to_h264(tmp_path: Path) -> None:
    source = planted_video(tmp_path / "clip.webm", codec="libvpx-vp9", audio=False, frames=12)
    notes: list[str] = []
    [out] = convert_file(source, CONTEXT, tmp_path / "out", warnings=notes)
    assert any("transcoded from vp9" in n for n in notes)
    assert_valid([out])
    assert find_planted([out], PLANTED_VIDEO) == []  # x264's own SEI is removed too
    ds = pydicom.dcmread(out)
    assert ds.file_meta.TransferSyntaxUID == MPEG4_HP41 and ds.NumberOfFrames == 12
    frames = decode_frames(the_mp4(out))
    assert len(frames) == 12 and frames[0].shape == (240, 320, 3)


def test_endoscope_video_is_video_endoscopic(tmp_path: Path) -> None:
    source = planted_video(tmp_path / "scope.mp4", audio=False, frames=6)
    context = Context(**{**CONTEXT.__dict__, "device_type": "endoscope", "body_part": "colon"})
    [out] = convert_file(source, context, tmp_path / "out")
    ds = pydicom.dcmread(out)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.77.1.1.1" and ds.Modality == "ES"
    assert_valid([out])


@pytest.mark.parametrize(
    ("info", "expected"),
    [
        (VideoInfo("h264", "High", 40, 1920, 1080, Fraction(30), "yuv420p"), MPEG4_HP41),
        (VideoInfo("h264", "Main", 31, 1280, 720, Fraction(60), "yuv420p"), MPEG4_HP41),
        (VideoInfo("h264", "High", 42, 1920, 1080, Fraction(60), "yuv420p"), MPEG4_HP42),
        (VideoInfo("h264", "High", 51, 3840, 2160, Fraction(30), "yuv420p"), None),
        (VideoInfo("h264", "High 10", 41, 1920, 1080, Fraction(30), "yuv420p10le"), None),
        (VideoInfo("h264", "High 4:2:2", 41, 1920, 1080, Fraction(25), "yuv422p"), None),
        (VideoInfo("h264", "Baseline", 30, 640, 480, Fraction(30), "yuv420p"), None),
        (VideoInfo("hevc", "Main", 120, 1920, 1080, Fraction(30), "yuv420p"), None),
        (VideoInfo("h264", "High", 42, 1920, 1080, Fraction(120), "yuv420p"), None),
    ],
)
def test_transfer_syntax_limits(info: VideoInfo, expected: str | None) -> None:
    assert syntax_for_remux(info) == expected


def test_high_level_stream_is_transcoded_to_fit(tmp_path: Path) -> None:
    source = planted_video(
        tmp_path / "big.mp4",
        width=320,
        height=240,
        frames=4,
        audio=False,
        options={"level": "5.1"},
    )
    notes: list[str] = []
    [out] = convert_file(source, CONTEXT, tmp_path / "out", warnings=notes)
    assert any("transcoded" in n for n in notes)
    assert pydicom.dcmread(out).file_meta.TransferSyntaxUID == MPEG4_HP41


def test_video_without_video_stream_is_refused(tmp_path: Path) -> None:
    import av

    path = tmp_path / "nothing.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=8000, layout="mono")
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
        )
        frame.sample_rate, frame.pts = 8000, 0
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    with pytest.raises(ConversionError, match="no video stream"):
        convert_file(path, CONTEXT, tmp_path / "out")
    corrupt = tmp_path / "cut.mp4"
    corrupt.write_bytes(planted_video(tmp_path / "ok.mp4").read_bytes()[:600])
    with pytest.raises(ConversionError):
        classify(corrupt)
        convert_file(corrupt, CONTEXT, tmp_path / "out")

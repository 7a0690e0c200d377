"""Parsing stored and incoming files: header, frames by byte range, hostile input."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence

from tests.support.data import pydicom_file, real_files, real_ids, require_real_data
from tests.support.factory import make_dataset, write
from vna.dicomfile import read_object
from vna.errors import MissingAttribute, NotDicom, TruncatedObject
from vna.retrieve import strip_item_headers


@pytest.mark.parametrize("path", real_files(), ids=real_ids())
def test_real_files_parse_and_native_frames_match_pydicom(path: Path) -> None:
    require_real_data()
    parsed = read_object(path)
    ds = pydicom.dcmread(path, force=True)
    assert parsed.sop_instance_uid == ds.SOPInstanceUID
    assert parsed.pixel is not None
    data = path.read_bytes()
    if not parsed.pixel.encapsulated and parsed.transfer_syntax != "1.2.840.10008.1.2.1.99":
        frame = parsed.pixel.frames[0]
        assert data[frame.offset : frame.offset + frame.length] == ds.PixelData[: frame.length]
    elif parsed.pixel.encapsulated:
        frames = list(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=1))
        frame = parsed.pixel.frames[0]
        span = data[frame.offset : frame.offset + frame.length]
        assert strip_item_headers(span, frame.fragments) == frames[0]


def test_multiframe_encapsulated_frames_each_addressable(tmp_path: Path) -> None:
    ds = make_dataset(frames=3)
    fragments = [b"\xff\xd8" + bytes([i]) * 100 + b"\xff\xd9" for i in range(3)]
    ds.PixelData = encapsulate(fragments, has_bot=True)
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.50"
    path = write(ds, tmp_path / "mf.dcm")
    parsed = read_object(path)
    data = path.read_bytes()
    assert parsed.pixel is not None and parsed.pixel.encapsulated
    assert [f.number for f in parsed.pixel.frames] == [1, 2, 3]
    for frame, expected in zip(parsed.pixel.frames, fragments, strict=True):
        assert data[frame.offset : frame.offset + frame.length] == expected


def test_frames_split_over_fragments_without_offset_table(tmp_path: Path) -> None:
    ds = make_dataset(frames=2)
    # frame 1 in two fragments, frame 2 in one; no basic offset table: found by JPEG SOI
    parts = [
        b"\xff\xd8" + b"a" * 50,
        b"b" * 50 + b"\xff\xd9",
        b"\xff\xd8" + b"c" * 30 + b"\xff\xd9",
    ]
    ds.PixelData = encapsulate(parts, fragments_per_frame=1, has_bot=False)
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.50"
    path = write(ds, tmp_path / "frag.dcm")
    parsed = read_object(path)
    data = path.read_bytes()
    assert parsed.pixel is not None
    first, second = parsed.pixel.frames
    assert first.fragments == 2
    span = data[first.offset : first.offset + first.length]
    assert strip_item_headers(span, first.fragments) == parts[0] + parts[1]
    assert data[second.offset : second.offset + second.length] == parts[2]


def test_metadata_json_has_bulk_uri_and_names_in_unicode() -> None:
    base = require_real_data()
    parsed = read_object(base / "Encodings" / "DavidClunie" / "SCSH31")
    name = parsed.metadata["00100010"]["Value"][0]
    assert name == {
        "Alphabetic": "Yamada^Tarou",
        "Ideographic": "山田^太郎",
        "Phonetic": "やまだ^たろう",
    }
    assert parsed.metadata["7FE00010"]["BulkDataURI"] == "bulkdata/7FE00010"
    assert list(parsed.metadata) == sorted(parsed.metadata)


def test_not_dicom_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0" + b"JFIF" * 100)
    with pytest.raises(NotDicom):
        read_object(path)
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    with pytest.raises(NotDicom):
        read_object(empty)


def test_truncated_pixel_data_is_refused(tmp_path: Path) -> None:
    path = write(make_dataset(rows=64, columns=64), tmp_path / "full.dcm")
    data = path.read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[: len(data) - 100])
    with pytest.raises(TruncatedObject):
        read_object(cut)


def test_truncated_encapsulated_is_refused(tmp_path: Path) -> None:
    src = pydicom_file("SC_rgb_jpeg_dcmtk.dcm")
    data = src.read_bytes()
    parsed = read_object(src)
    assert parsed.pixel is not None
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[: parsed.pixel.value_offset + 100])  # inside the first fragment
    with pytest.raises(TruncatedObject):
        read_object(cut)


def test_header_truncated_inside_a_value_is_refused(tmp_path: Path) -> None:
    path = write(make_dataset(study_description="x" * 60), tmp_path / "full.dcm")
    data = path.read_bytes()
    at = data.index(b"x" * 60) + 30
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[:at])
    with pytest.raises(TruncatedObject):
        read_object(cut)


def test_header_cut_short_is_refused(tmp_path: Path) -> None:
    path = write(make_dataset(), tmp_path / "full.dcm")
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(path.read_bytes()[:300])
    with pytest.raises((TruncatedObject, NotDicom, MissingAttribute)):
        read_object(cut)


def test_missing_study_uid_is_refused(tmp_path: Path) -> None:
    ds = make_dataset()
    del ds.StudyInstanceUID
    path = write(ds, tmp_path / "nostudy.dcm")
    with pytest.raises(MissingAttribute, match="StudyInstanceUID"):
        read_object(path)


def test_bare_dataset_without_preamble_is_read(tmp_path: Path) -> None:
    ds = make_dataset()
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2"
    path = tmp_path / "bare.dcm"
    ds.save_as(path, implicit_vr=True, little_endian=True, enforce_file_format=False)
    raw = path.read_bytes()
    assert raw[128:132] != b"DICM"
    parsed = read_object(path)
    assert parsed.sop_instance_uid == ds.SOPInstanceUID
    assert not parsed.has_preamble


def test_large_multiframe_parses_with_bounded_memory(tmp_path: Path) -> None:
    import tracemalloc

    ds = make_dataset(rows=512, columns=512, frames=40)  # 20 MB of pixel data
    path = write(ds, tmp_path / "big.dcm")
    del ds
    tracemalloc.start()
    parsed = read_object(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert parsed.pixel is not None and len(parsed.pixel.frames) == 40
    assert peak < 5 * 1024 * 1024


@pytest.mark.parametrize("path", real_files(), ids=real_ids())
def test_patient_key_same_from_metadata_and_dataset(path: Path) -> None:
    from vna.index.attributes import dataset_patient_key, patient_key

    parsed = read_object(path)
    assert patient_key(parsed.metadata) == dataset_patient_key(parsed.dataset)


def test_bulk_offsets_of_small_top_level_values_are_recorded(tmp_path: Path) -> None:
    """An encapsulated document below the deferred-read size still gets a byte range, so its
    BulkDataURI is served by one ranged read."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    from vna.dicomfile import read_object

    document = b"%PDF-1.4" + bytes(range(256)) * 8
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.104.1"
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4.5"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.104.1"
    ds.SOPInstanceUID = "1.2.3.4.5"
    ds.StudyInstanceUID = "1.2.3.4"
    ds.SeriesInstanceUID = "1.2.3.4.1"
    ds.EncapsulatedDocument = document
    path = tmp_path / "doc.dcm"
    ds.save_as(path, enforce_file_format=True)
    parsed = read_object(path)
    offset, length = parsed.bulk["00420011"]
    assert path.read_bytes()[offset : offset + length] == document


def test_sequence_items_inherit_the_character_set(tmp_path: Path) -> None:
    """PS3.5 7.5.3: an item without its own Specific Character Set uses its parent's, so a
    UTF-8 name inside a sequence is read as UTF-8, not as Latin-1."""
    ds = make_dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "Müller^Top"
    item = Dataset()
    item.PatientName = "Ødegård^Ærlig"
    ds.OtherPatientIDsSequence = Sequence([item])
    metadata = read_object(write(ds, tmp_path / "utf8.dcm")).metadata
    assert metadata["00100010"]["Value"] == [{"Alphabetic": "Müller^Top"}]
    nested = metadata["00101002"]["Value"][0]["00100010"]["Value"]
    assert nested == [{"Alphabetic": "Ødegård^Ærlig"}]

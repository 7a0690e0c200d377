"""Photos → VL Photographic Image: metadata gone, pixels kept, objects valid."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image, ImageCms
from pydicom.encaps import generate_frames

from tests.support.media import (
    GPS_LATITUDE,
    GPS_LONGITUDE,
    PLANTED,
    image_array,
    planted_heic,
    planted_jpeg,
    planted_png,
    planted_tiff,
    rationals,
)
from tests.support.validate import assert_valid, find_planted
from vna.convert import Context, Options, classify, convert_file
from vna.convert.photo import clean_jpeg
from vna.errors import ConversionError, MissingContext, UnsupportedMedia

CONTEXT = Context(
    patient_id="PAT-1",
    issuer="HOSP",
    patient_name="Doe^Jane",
    birth_date="1970-02-03",
    sex="F",
    accession="ACC-1",
    study_date="20240105",
    study_time="101500",
    body_part="hand",
    laterality="L",
    department="Dermatology",
)
GPS = [
    rationals(GPS_LATITUDE, True),
    rationals(GPS_LATITUDE, False),
    rationals(GPS_LONGITUDE, True),
    rationals(GPS_LONGITUDE, False),
]


def fragment(path: Path) -> bytes:
    ds = pydicom.dcmread(path)
    return next(generate_frames(ds.PixelData, number_of_frames=1))


def decoded(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_camera_jpeg_passes_through_bit_exact_without_metadata(tmp_path: Path) -> None:
    source = planted_jpeg(tmp_path / "wound.jpg")
    raw = source.read_bytes()
    assert all(n in raw for n in PLANTED)
    assert rationals(GPS_LATITUDE, False) in raw and rationals(GPS_LONGITUDE, False) in raw
    [out] = convert_file(source, CONTEXT, tmp_path / "out")
    assert_valid([out])
    assert (
        find_planted(
            [out],
            PLANTED + GPS + [b"Exif\x00\x00", b"http://ns.adobe.com", b"Photoshop 3.0", b"JFIF"],
        )
        == []
    )
    ds = pydicom.dcmread(out)
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.77.1.4"
    assert ds.PhotometricInterpretation == "YBR_FULL_422"
    assert (ds.PatientID, ds.IssuerOfPatientID, str(ds.PatientName)) == (
        "PAT-1",
        "HOSP",
        "Doe^Jane",
    )
    assert (ds.PatientBirthDate, ds.AccessionNumber, ds.Modality) == ("19700203", "ACC-1", "XC")
    assert ds.AnatomicRegionSequence[0].CodeValue == "85562004"
    assert (ds.BodyPartExamined, ds.Laterality) == ("HAND", "L")
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert "AcquisitionDateTime" not in ds  # EXIF time only when allowed
    codestream = fragment(out).rstrip(b"\x00")
    # bit-exact: the entropy-coded data is the source's, byte for byte
    assert codestream == clean_jpeg(raw).data
    assert codestream[-2:] == b"\xff\xd9"
    assert np.array_equal(decoded(codestream), decoded(raw[: raw.index(b"PLANTED-TRAILER")]))
    # the ICC profile is kept, without the device's fields
    icc = ds.ICCProfile
    assert b"PLANTED-ICC-MODEL" not in icc and icc[48:56] == bytes(8)
    ImageCms.ImageCmsProfile(io.BytesIO(icc))  # still a valid profile


def test_same_photo_twice_gives_identical_object(tmp_path: Path) -> None:
    source = planted_jpeg(tmp_path / "a.jpg")
    [first] = convert_file(source, CONTEXT, tmp_path / "one")
    [second] = convert_file(source, CONTEXT, tmp_path / "two")
    assert first.name == second.name and first.read_bytes() == second.read_bytes()


def test_exif_datetime_only_when_allowed(tmp_path: Path) -> None:
    source = planted_jpeg(tmp_path / "a.jpg")
    [out] = convert_file(source, CONTEXT, tmp_path / "out", Options(exif_datetime=True))
    ds = pydicom.dcmread(out)
    assert ds.AcquisitionDateTime == "20210504101112+0200"
    assert (ds.ContentDate, ds.ContentTime) == ("20210504", "101112")
    assert_valid([out])


def test_exif_orientation_is_applied_losslessly(tmp_path: Path) -> None:
    array = image_array(64, 48)
    source = planted_jpeg(tmp_path / "rotated.jpg", orientation=6, array=array)
    notes: list[str] = []
    [out] = convert_file(source, CONTEXT, tmp_path / "out", warnings=notes)
    assert_valid([out])
    ds = pydicom.dcmread(out)
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.80"  # JPEG-LS lossless
    assert (ds.Rows, ds.Columns) == (64, 48)
    assert ds.LossyImageCompression == "01"  # the source was lossy
    expected = np.rot90(decoded(source.read_bytes()), k=-1)  # 6 = rotate 90° clockwise
    assert np.array_equal(ds.pixel_array, expected)
    assert any("orientation 6 applied" in n for n in notes)
    assert find_planted([out], PLANTED + GPS) == []


def test_exif_orientation_can_be_recorded_instead(tmp_path: Path) -> None:
    source = planted_jpeg(tmp_path / "rotated.jpg", orientation=6)
    [out] = convert_file(source, CONTEXT, tmp_path / "out", Options(orientation="record"))
    ds = pydicom.dcmread(out)
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"
    assert "rotated 90° clockwise" in ds.ImageComments
    assert_valid([out])


def test_unsubsampled_jpeg_is_stored_losslessly(tmp_path: Path) -> None:
    # VL images allow no YBR_FULL: a 4:4:4 JPEG cannot pass through as it is
    source = tmp_path / "444.jpg"
    Image.fromarray(image_array()).save(source, quality=95, subsampling=0)
    [out] = convert_file(source, CONTEXT, tmp_path / "out")
    ds = pydicom.dcmread(out)
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.80"
    assert np.array_equal(ds.pixel_array, decoded(source.read_bytes()))
    assert_valid([out])


def test_progressive_jpeg_is_stored_losslessly(tmp_path: Path) -> None:
    source = planted_jpeg(tmp_path / "p.jpg", progressive=True)
    [out] = convert_file(source, CONTEXT, tmp_path / "out")
    ds = pydicom.dcmread(out)
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.80"
    assert np.array_equal(ds.pixel_array, decoded(source.read_bytes()))
    assert find_planted([out], PLANTED + GPS) == []
    assert_valid([out])


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P"])
def test_png_is_lossless_without_its_chunks(tmp_path: Path, mode: str) -> None:
    source = planted_png(tmp_path / "d.png", mode=mode)
    raw = source.read_bytes()
    assert b"tEXt" in raw and b"iTXt" in raw and b"eXIf" in raw
    [out] = convert_file(source, CONTEXT, tmp_path / "out")
    assert_valid([out])
    assert find_planted([out], PLANTED + GPS) == []
    ds = pydicom.dcmread(out)
    assert ds.LossyImageCompression == "00"
    image = Image.open(source)
    expected = np.asarray(image.convert("L" if mode == "L" else "RGB"))
    assert np.array_equal(ds.pixel_array, expected)


def test_sixteen_bit_png_is_reduced_and_marked_derived(tmp_path: Path) -> None:
    values = (np.arange(48 * 64, dtype=np.uint16).reshape(48, 64) * 21).astype(np.uint16)
    source = tmp_path / "g16.png"
    Image.fromarray(values).save(source)
    notes: list[str] = []
    [out] = convert_file(source, CONTEXT, tmp_path / "out", warnings=notes)
    ds = pydicom.dcmread(out)
    assert ds.ImageType[0] == "DERIVED" and ds.BitsStored == 8
    assert np.array_equal(ds.pixel_array, (values >> 8).astype(np.uint8))
    assert any("reduced to 8 bits" in n for n in notes)
    assert_valid([out])


def test_tiff_and_heic_photos(tmp_path: Path) -> None:
    tiff = planted_tiff(tmp_path / "scan.tif")
    heic = planted_heic(tmp_path / "phone.heic")
    assert classify(tiff)[0] == "photo" and classify(heic)[0] == "photo"
    outs = convert_file(tiff, CONTEXT, tmp_path / "out") + convert_file(
        heic, CONTEXT, tmp_path / "out"
    )
    assert_valid(outs)
    assert find_planted(outs, PLANTED + GPS) == []
    tiff_ds = pydicom.dcmread(outs[0])
    assert np.array_equal(tiff_ds.pixel_array, image_array())
    assert tiff_ds.LossyImageCompression == "00"
    heic_ds = pydicom.dcmread(outs[1])
    assert heic_ds.LossyImageCompression == "01"
    import pillow_heif

    expected = np.asarray(pillow_heif.open_heif(heic).to_pillow().convert("RGB"))
    assert np.array_equal(heic_ds.pixel_array, expected)  # lossless from the decoded HEIC


def test_jpeg_transcode_on_request(tmp_path: Path) -> None:
    source = planted_png(tmp_path / "d.png")
    [out] = convert_file(source, CONTEXT, tmp_path / "out", Options(jpeg_quality=85))
    ds = pydicom.dcmread(out)
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"
    assert ds.PhotometricInterpretation == "YBR_FULL_422" and ds.LossyImageCompression == "01"
    diff = np.abs(decoded(fragment(out)).astype(int) - image_array().astype(int))
    assert diff.mean() < 10  # noisy test image at quality 85
    assert_valid([out])


def test_bad_photos_are_refused_with_the_reason(tmp_path: Path) -> None:
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(planted_jpeg(tmp_path / "whole.jpg").read_bytes()[:2000])
    with pytest.raises(ConversionError, match=r"truncated JPEG|corrupt"):
        convert_file(cut, CONTEXT, tmp_path / "out")
    garbage = tmp_path / "noise.jpg"
    garbage.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * 4)
    with pytest.raises(ConversionError):
        convert_file(garbage, CONTEXT, tmp_path / "out")
    text = tmp_path / "photo.jpg"
    text.write_text("this is not a photo")
    with pytest.raises(UnsupportedMedia, match=r"extension '\.jpg'"):
        convert_file(text, CONTEXT, tmp_path / "out")
    with pytest.raises(MissingContext, match="patient"):
        convert_file(planted_jpeg(tmp_path / "ok.jpg"), Context(), tmp_path / "out")
    assert not list((tmp_path / "out").glob("*.dcm")) if (tmp_path / "out").exists() else True


def test_content_wins_over_a_misleading_extension(tmp_path: Path) -> None:
    png_named_jpg = planted_png(tmp_path / "really-png.jpg")
    Path(png_named_jpg).rename(tmp_path / "really-png.pdf")
    kind, notes = classify(tmp_path / "really-png.pdf")
    assert kind == "photo" and "says pdf" in notes[0]


@pytest.mark.parametrize(
    "body_part", ["", "SCT:7569003:Finger", "SCT:818981001:Abdomen", "colon", "face"]
)
def test_anatomy_without_laterality_validates(tmp_path: Path, body_part: str) -> None:
    context = Context(patient_id="P", accession="A", body_part=body_part, device_type="endoscope")
    [out] = convert_file(planted_png(tmp_path / "p.png"), context, tmp_path / "out")
    assert_valid([out])
    ds = pydicom.dcmread(out, stop_before_pixels=True)
    assert ds.Modality == "XC"  # VL Photographic is XC whatever took it
    assert len(ds.AnatomicRegionSequence) == 1

"""Whole-slide images → VL Whole Slide Microscopy: tiles copied, label and macro left out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from opentile import OpenTile
from pydicom.encaps import generate_frames

from tests.support.slides import write_svs
from tests.support.validate import assert_valid, find_planted
from vna.convert import Context, Options, classify, convert_file
from vna.errors import ConversionError, UnsupportedMedia

CONTEXT = Context(
    patient_id="PAT-4",
    issuer="PATH",
    patient_name="Moe^Max",
    birth_date="19800304",
    sex="M",
    accession="S-ACC-4",
    study_date="20240108",
    study_time="120000",
    department="Pathology",
)
PLANTED_SLIDE = [
    b"PLANTED-LABEL-DOE-JANE",
    b"PLANTED-MACRO-S22-4711",
    b"PLANTED-BARCODE-S22-4711",
    b"PLANTED-SCANNER-SN-987",
    b"PLANTED-USER",
]


def image_types(paths: list[Path]) -> list[str]:
    return sorted(pydicom.dcmread(p, stop_before_pixels=True).ImageType[2] for p in paths)


def test_svs_tiles_are_copied_and_identity_is_left_out(tmp_path: Path) -> None:
    source = write_svs(tmp_path / "slide.svs")
    assert classify(source)[0] == "wsi"
    assert all(p in source.read_bytes() for p in PLANTED_SLIDE)
    seen: list[tuple[int, int]] = []
    notes: list[str] = []
    outs = convert_file(
        source, CONTEXT, tmp_path / "out", progress=lambda d, t: seen.append((d, t)), warnings=notes
    )
    assert image_types(outs) == ["VOLUME", "VOLUME"]  # two pyramid levels, nothing else
    assert any("label, overview, thumbnail" in n for n in notes)
    assert seen and seen[-1][0] == seen[-1][1] == source.stat().st_size
    assert_valid(outs)
    assert find_planted(outs, PLANTED_SLIDE) == []
    base = max(
        outs, key=lambda p: pydicom.dcmread(p, stop_before_pixels=True).TotalPixelMatrixColumns
    )
    ds = pydicom.dcmread(base)
    assert (ds.PatientID, ds.IssuerOfPatientID, ds.AccessionNumber) == ("PAT-4", "PATH", "S-ACC-4")
    assert (ds.TotalPixelMatrixColumns, ds.TotalPixelMatrixRows) == (2048, 1536)
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"
    assert ds.ContainerIdentifier == "S-ACC-4-1"  # never the lab's barcode
    # the tiles are the source's tiles, byte for byte (TILED_FULL: row by row)
    frames = list(generate_frames(ds.PixelData, number_of_frames=ds.NumberOfFrames))
    with OpenTile.open(source) as tiler:
        level = tiler.get_level(0)
        width, height = level.tiled_size.width, level.tiled_size.height
        assert len(frames) == width * height
        for index in (0, 1, width, len(frames) - 1):
            tile = level.get_tile((index % width, index // width))
            assert frames[index].rstrip(b"\x00") == tile.rstrip(b"\x00")


def test_label_and_overview_only_on_request(tmp_path: Path) -> None:
    source = write_svs(tmp_path / "slide.svs", levels=1)
    options = Options(include_label=True, include_overview=True, include_thumbnail=True)
    outs = convert_file(source, CONTEXT, tmp_path / "out", options)
    assert image_types(outs) == ["LABEL", "OVERVIEW", "THUMBNAIL", "VOLUME"]
    label = next(
        p for p in outs if pydicom.dcmread(p, stop_before_pixels=True).ImageType[2] == "LABEL"
    )
    # what the label shows is what the source's label page held (the planted text's bytes)
    pixels = pydicom.dcmread(label).pixel_array.astype(int)
    planted = np.frombuffer((b"PLANTED-LABEL-DOE-JANE " * 900)[: 96 * 64 * 3], np.uint8)
    assert np.abs(pixels.reshape(-1)[: planted.size] - planted.astype(int)).mean() < 20


def test_slide_nothing_reads_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "slide.svs"
    fake.write_bytes(b"not a slide at all" * 100)
    with pytest.raises(UnsupportedMedia, match=r"extension '\.svs'"):
        convert_file(fake, CONTEXT, tmp_path / "out")
    broken = tmp_path / "broken.svs"
    broken.write_bytes(write_svs(tmp_path / "ok.svs").read_bytes()[:5000])
    with pytest.raises(ConversionError):
        convert_file(broken, CONTEXT, tmp_path / "out")


def test_ome_tiff_pyramid(tmp_path: Path) -> None:
    import tifffile

    source = tmp_path / "slide.ome.tiff"
    pixels = np.random.default_rng(0).integers(0, 255, (1024, 1024, 3), dtype=np.uint8)
    options = {"tile": (256, 256), "compression": "jpeg", "photometric": "rgb"}
    with tifffile.TiffWriter(source, bigtiff=True) as tif:
        tif.write(
            pixels,
            subifds=1,
            metadata={"axes": "YXS", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5},
            **options,
        )
        tif.write(pixels[::2, ::2], subfiletype=1, **options)
    assert classify(source)[0] == "wsi"
    outs = convert_file(source, CONTEXT, tmp_path / "out")
    assert image_types(outs) == ["VOLUME", "VOLUME"]
    assert_valid(outs)


def test_slide_converter_leaves_pydicom_tolerant() -> None:
    from pydicom import config

    import vna.convert.wsi  # noqa: F401  (imports wsidicomizer)

    assert config.settings.reading_validation_mode == config.WARN
    assert not config._use_future

"""A whole-slide image through WADO-RS: tile by tile through /frames, and opened by
wsidicom's DICOMweb source with regions equal to those read from the local files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import generate_frames

from tests.dicomweb.conftest import WebServer, running_web
from tests.support.slides import write_svs
from vna.archive import Archive
from vna.config import Settings
from vna.convert import Context, convert_file
from vna.ingest import ingest_file

CONTEXT = Context(patient_id="PAT-S", patient_name="Slide^Sam", accession="ACC-S")
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"


@pytest.fixture(scope="module")
def slide(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[WebServer, list[Path]]]:
    root = tmp_path_factory.mktemp("wsi")
    outs = convert_file(
        write_svs(root / "slide.svs", width=1024, height=768), CONTEXT, root / "out"
    )
    archive = Archive.open(Settings(data_dir=root / "data"))
    try:
        for path in outs:
            ingest_file(archive, path, source="test")
        with running_web(archive) as server:
            yield server, outs
    finally:
        archive.close()


def test_every_tile_through_frames(slide: tuple[WebServer, list[Path]]) -> None:
    server, outs = slide
    client = server.client()
    for path in outs:
        ds = pydicom.dcmread(path)
        tiles = list(generate_frames(ds.PixelData, number_of_frames=ds.NumberOfFrames))
        numbers = list(range(1, ds.NumberOfFrames + 1))
        got = client.retrieve_instance_frames(
            ds.StudyInstanceUID,
            ds.SeriesInstanceUID,
            ds.SOPInstanceUID,
            numbers,
            media_types=(("image/jpeg", JPEG_BASELINE),),
        )
        assert got == tiles
        # one tile rendered to PNG: the decoded tile
        rendered = client.retrieve_instance_frames_rendered(
            ds.StudyInstanceUID,
            ds.SeriesInstanceUID,
            ds.SOPInstanceUID,
            [1],
            media_types=("image/png",),
        )
        assert rendered[:8] == b"\x89PNG\r\n\x1a\n"


def test_wsidicom_reads_the_same_region_over_dicomweb(
    slide: tuple[WebServer, list[Path]],
) -> None:
    from wsidicom import WsiDicom, WsiDicomWebClient

    server, outs = slide
    ds = pydicom.dcmread(outs[0], stop_before_pixels=True)
    web_client = WsiDicomWebClient.create_client(server.url)
    with (
        WsiDicom.open(outs) as local,
        WsiDicom.open_web(web_client, ds.StudyInstanceUID, ds.SeriesInstanceUID) as remote,
    ):
        assert remote.size == local.size
        for level in (0, 1):
            want = np.asarray(local.read_region((100, 80), level, (300, 200)))
            got = np.asarray(remote.read_region((100, 80), level, (300, 200)))
            assert np.array_equal(got, want)

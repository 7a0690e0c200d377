"""The core import path with a conversion plan: worker pool, DICOM and media mixed."""

from __future__ import annotations

from pathlib import Path

from tests.support.factory import make_file
from tests.support.media import image_array, planted_png
from vna.archive import Archive
from vna.convert import Context
from vna.convert.batch import ConversionPlan
from vna.importer import REJECTED, run_import
from vna.query import QueryRequest, find


def test_pool_converts_media_beside_dicom(local_archive: Archive, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(8):
        planted_png(folder / f"p{i}.png", array=image_array(64, 48, seed=i))
    for i in range(3):
        make_file(folder / f"ct{i}.dcm", patient_id="CT", instance_number=i)
    plan = ConversionPlan(
        Context(
            patient_id="POOL-1",
            accession="POOL-ACC",
            study_date="20240301",
            study_time="080000",
            body_part="face",
        )
    )
    summary = run_import(local_archive, [folder], workers=2, plan=plan)
    assert summary.rejected == [] and (summary.stored, summary.converted) == (11, 8)
    request = QueryRequest(level="IMAGE", keys={0x00100020: "POOL-1"}, return_tags=[0x00200013])
    numbers = sorted(int(m.dataset.InstanceNumber) for m in find(local_archive, request))
    assert len(set(numbers)) == 8  # numbered within the case (DICOM files leave gaps)
    again = run_import(local_archive, [folder], workers=2, plan=plan)
    assert again.duplicates == 11


def test_without_a_plan_media_is_not_dicom(local_archive: Archive, tmp_path: Path) -> None:
    photo = planted_png(tmp_path / "p.png")
    summary = run_import(local_archive, [photo])
    assert [o.status for o in summary.rejected] == [REJECTED]

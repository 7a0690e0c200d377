"""The user's context: validation, manifests, and one study per case."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pydicom
import pytest

from tests.support.media import planted_jpeg, planted_pdf
from vna.convert import Context, convert_file, load_manifest
from vna.convert.batch import ConversionPlan
from vna.convert.common import study_uid
from vna.convert.context import body_part_code
from vna.errors import ConversionError, MissingContext


def test_checked_normalises_and_refuses_bad_values() -> None:
    checked = Context(
        patient_id=" P1 ", birth_date="1970-01-02", sex="female", study_time="10:15"
    ).checked(now=dt.datetime(2024, 3, 4, 5, 6, 7))
    assert (checked.patient_id, checked.birth_date, checked.sex) == ("P1", "19700102", "F")
    assert checked.study_date == "20240304"  # no date given: the batch's day
    assert checked.study_time == "1015"
    with pytest.raises(MissingContext):
        Context(patient_name="Doe^Jane").checked()
    for bad in (
        {"birth_date": "1970-13-01"},
        {"sex": "X"},
        {"body_part": "elbowish"},
        {"study_uid": "1.2.abc"},
        {"accession": "A" * 17},
        {"device_type": "toaster"},
        {"laterality": "up"},
    ):
        with pytest.raises(ConversionError):
            Context(patient_id="P1", **bad).checked()


def test_body_parts_by_term_or_code() -> None:
    assert body_part_code("Hand") == ("HAND", "85562004", "SCT", "Hand")
    assert body_part_code("SCT:7569003:Finger") == ("", "7569003", "SCT", "Finger")
    assert body_part_code("SCT:85562004:Hand")[0] == "HAND"  # a known code is a known term


def test_one_case_one_study_stable_across_runs() -> None:
    a = Context(patient_id="P1", issuer="H", accession="A1", study_date="20240101").checked()
    b = Context(patient_id="P1", issuer="H", accession="A1", study_description="x").checked()
    c = Context(patient_id="P1", issuer="H", accession="A2").checked()
    assert study_uid(a) == study_uid(b) != study_uid(c)
    given = Context(patient_id="P1", study_uid="1.2.3.4").checked()
    assert study_uid(given) == "1.2.3.4"


def test_csv_and_json_manifests(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    csv_text = (
        "file,patient_id,PatientName,accession,body_part\n"
        "photos/a.jpg,P1,Doe^Jane,A1,hand\n"
        "photos/b.jpg,P2,Roe^Rick,A2,foot\n"
    )
    (tmp_path / "m.csv").write_text(csv_text)
    manifest = load_manifest(tmp_path / "m.csv")
    assert manifest.row_for(tmp_path / "photos" / "b.jpg") == {
        "patient_id": "P2",
        "patient_name": "Roe^Rick",
        "accession": "A2",
        "body_part": "foot",
    }
    data = {"defaults": {"issuer": "HOSP"}, "files": [{"file": "photos/a.jpg", "PatientID": "P1"}]}
    (tmp_path / "m.json").write_text(json.dumps(data))
    plan = ConversionPlan(Context(department="Derm"), load_manifest(tmp_path / "m.json"))
    context = plan.context_for(tmp_path / "photos" / "a.jpg")
    assert (context.patient_id, context.issuer, context.department) == ("P1", "HOSP", "Derm")
    assert plan.context_for(tmp_path / "other.jpg").patient_id == ""
    (tmp_path / "bad.json").write_text('[{"patient_id": "P1"}]')
    with pytest.raises(ConversionError, match="no file"):
        load_manifest(tmp_path / "bad.json")
    (tmp_path / "broken.json").write_text("[{")
    with pytest.raises(ConversionError, match="not valid JSON"):
        load_manifest(tmp_path / "broken.json")


def test_files_of_a_case_share_the_study_and_are_numbered(tmp_path: Path) -> None:
    files = [planted_jpeg(tmp_path / f"{i}.jpg") for i in range(2)]
    files[1].write_bytes(files[1].read_bytes() + b"x")  # another photo
    pdf = planted_pdf(tmp_path / "consent.pdf")
    plan = ConversionPlan(Context(patient_id="P1", accession="A1", patient_name="Doe^Jane"))
    outs = []
    for path, number in plan.numbered([*files, pdf]):
        outs += convert_file(path, plan.context_for(path), tmp_path / "out", instance_number=number)
    datasets = [pydicom.dcmread(p, stop_before_pixels=True) for p in outs]
    assert len({ds.StudyInstanceUID for ds in datasets}) == 1
    assert [ds.InstanceNumber for ds in datasets] == [1, 2, 3]
    photos = [ds for ds in datasets if ds.Modality == "XC"]
    assert len({ds.SeriesInstanceUID for ds in photos}) == 1
    assert datasets[2].SeriesInstanceUID != photos[0].SeriesInstanceUID

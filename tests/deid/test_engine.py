"""Applying profiles: action codes on planted objects, real-world files without leaks and
without new dciodvfy errors, consistent UIDs and pseudonyms, the options."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from tests.support import dciodvfy
from tests.support.data import real_files, require_real_data
from tests.support.factory import make_dataset, uid, write
from tests.support.planted import planted_dataset
from vna.deid import leaks, service
from vna.deid.engine import DUMMY_DATE, DUMMY_TEXT
from vna.deid.table import load_table


def _apply(deid: service.Deidentifier, ds: Dataset) -> Dataset:
    return deid.apply(ds)[0].dataset


def _leaks(source: Dataset, out: Dataset) -> list[leaks.Leak]:
    return leaks.check([("source", source)], [("out", out)])


@pytest.mark.parametrize("profile", ["basic", "teaching", "research"])
def test_planted_identity_in_every_table_attribute_does_not_leak(deidentifier, profile) -> None:  # type: ignore[no-untyped-def]
    source = planted_dataset()
    out = _apply(deidentifier(profile), planted_dataset_copy(source))
    found = _leaks(source, out)
    assert found == [], "\n".join(leak.describe() for leak in found)
    assert out.PatientIdentityRemoved == "YES"
    assert out.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
    assert not any(e.tag.is_private for e in out.iterall())


def planted_dataset_copy(ds: Dataset) -> Dataset:
    import copy

    return copy.deepcopy(ds)


def test_basic_profile_applies_each_action_code(deidentifier) -> None:  # type: ignore[no-untyped-def]
    source = planted_dataset()
    out = _apply(deidentifier("basic"), planted_dataset_copy(source))
    checked = {"X": 0, "Z": 0, "D": 0, "U": 0}
    for row in load_table():
        tag = row.tag_int
        if tag is None or tag not in source or (tag >> 16) in (0, 2):
            continue
        code = row.basic
        if code == "X":
            assert tag not in out, row.name
        elif code == "Z":
            assert tag in out and not out[tag].value, row.name
        elif code == "D" and row.vr in ("LO", "SH", "PN", "DA"):
            assert str(out[tag].value) in (DUMMY_TEXT, DUMMY_DATE), row.name
        elif code == "U":
            assert out[tag].value != source[tag].value and str(out[tag].value).startswith("2.25.")
        else:
            continue
        checked[code] += 1
    assert all(n > 5 for n in checked.values()), checked


def test_uids_are_consistent_across_objects_runs_and_references(deidentifier, tmp_path) -> None:  # type: ignore[no-untyped-def]
    study = uid()
    first = make_dataset(study_uid=study, series_number=1)
    second = make_dataset(study_uid=study, series_number=2)
    ref = Dataset()
    ref.ReferencedSOPClassUID = first.SOPClassUID
    ref.ReferencedSOPInstanceUID = first.SOPInstanceUID
    second.ReferencedImageSequence = Sequence([ref])
    original_first = first.SOPInstanceUID
    a = _apply(deidentifier("basic"), first)
    b = _apply(deidentifier("basic"), second)
    assert a.StudyInstanceUID == b.StudyInstanceUID != study
    assert b.ReferencedImageSequence[0].ReferencedSOPInstanceUID == a.SOPInstanceUID
    assert a.file_meta.MediaStorageSOPInstanceUID == a.SOPInstanceUID
    again = _apply(deidentifier("basic"), make_dataset(study_uid=study, sop_uid=original_first))
    assert again.SOPInstanceUID == a.SOPInstanceUID  # another run, same project
    other = _apply(deidentifier("basic", project="p2"), make_dataset(sop_uid=original_first))
    assert other.SOPInstanceUID != a.SOPInstanceUID  # projects are unrelated


def test_research_pseudonyms_and_shifted_dates_keep_intervals(deidentifier, keystore) -> None:  # type: ignore[no-untyped-def]
    one = _apply(deidentifier("research"), make_dataset(patient_id="P7", study_date="20240110"))
    two = _apply(deidentifier("research"), make_dataset(patient_id="P7", study_date="20240120"))
    other = _apply(deidentifier("research"), make_dataset(patient_id="P8", study_date="20240110"))
    assert one.PatientID == two.PatientID == str(one.PatientName) != other.PatientID
    assert one.PatientID.startswith("P1-")
    assert one.StudyDate != "20240110" and one.LongitudinalTemporalInformationModified == "MODIFIED"
    import datetime as dt

    days = (
        dt.date.fromisoformat(_iso(two.StudyDate)) - dt.date.fromisoformat(_iso(one.StudyDate))
    ).days
    assert days == 10
    assert keystore.identity_of("p1", one.PatientID)["PatientID"] == "P7"


def _iso(da: str) -> str:
    return f"{da[:4]}-{da[4:6]}-{da[6:]}"


def test_key_store_file_holds_no_original_identity(deidentifier, deid_settings) -> None:  # type: ignore[no-untyped-def]
    _apply(
        deidentifier("research"), make_dataset(patient_name="Zyxwvut^Qponm", patient_id="IDZX99")
    )
    path = Path(deid_settings.effective_keystore_url.removeprefix("sqlite:///"))
    raw = b"".join(p.read_bytes() for p in path.parent.glob("keystore.sqlite3*"))
    assert raw and b"Zyxwvut" not in raw and b"IDZX99" not in raw


@pytest.mark.parametrize(
    ("option", "keyword", "value"),
    [
        ("retain-device-identity", "StationName", "CTSTATION7"),
        ("retain-institution-identity", "InstitutionName", "General Hospital"),
        ("retain-patient-characteristics", "PatientAge", "045Y"),
        ("retain-long-full-dates", "StudyDate", "20240102"),
        ("retain-uids", "StudyInstanceUID", None),
    ],
)
def test_retain_options_keep_their_attributes(deidentifier, option, keyword, value) -> None:  # type: ignore[no-untyped-def]
    ds = make_dataset()
    if value is not None:
        setattr(ds, keyword, value)
    expected = ds.get(keyword)
    out = _apply(deidentifier("basic", options=[option]), ds)
    assert out.get(keyword) == expected
    assert _apply(deidentifier("basic"), make_dataset()).get(keyword) != expected


def test_clean_descriptors_keeps_only_safe_words(deidentifier) -> None:  # type: ignore[no-untyped-def]
    ds = make_dataset(patient_name="Smith^John", study_description="CT chest Smith 12345 contrast")
    out = _apply(deidentifier("basic", options=["clean-descriptors"]), ds)
    assert out.StudyDescription == "CT chest contrast"
    assert "StudyDescription" not in _apply(deidentifier("basic"), make_dataset())


def test_safe_private_attributes_are_kept_only_with_the_option(deidentifier) -> None:  # type: ignore[no-untyped-def]
    def with_private() -> Dataset:
        ds = make_dataset()
        block = ds.private_block(0x0019, "SIEMENS MR HEADER", create=True)
        block.add_new(0x0C, "IS", "1000")  # B value: safe
        block.add_new(0x10, "LO", "secret")  # not on the safe list
        return ds

    kept = _apply(deidentifier("basic", options=["retain-safe-private"]), with_private())
    values = [str(e.value) for e in kept if e.tag.is_private]
    assert "1000" in values and "secret" not in values
    assert not any(e.tag.is_private for e in _apply(deidentifier("teaching"), with_private()))


def test_clean_structured_content_scrubs_text_and_names(deidentifier) -> None:  # type: ignore[no-untyped-def]
    ds = make_dataset(patient_name="Smith^John")
    item = Dataset()
    item.ValueType = "TEXT"
    item.TextValue = "chest lesion seen by Smith on 2024-01-02"
    item.PersonName = "Smith^John"
    ds.ContentSequence = Sequence([item])
    out = _apply(deidentifier("basic", options=["clean-structured-content"]), ds)
    assert out.ContentSequence[0].TextValue == "chest lesion"
    assert str(out.ContentSequence[0].PersonName) == DUMMY_TEXT


@pytest.mark.slow
def test_teaching_and_research_leave_no_leak_and_no_new_errors_on_real_files(  # type: ignore[no-untyped-def]
    deidentifier, tmp_path
) -> None:
    base = require_real_data()
    for profile in ("teaching", "research"):
        deid = deidentifier(profile)
        for path in real_files():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result, _decision = deid.apply_file(path)
            out = service.write(result, tmp_path / profile / path.relative_to(base))
            found = leaks.check_paths(path, out)
            assert found == [], "\n".join(leak.describe() for leak in found)
            new = dciodvfy.new_errors(path, out)
            assert new == set(), f"{profile} {path.name}: {new}"


def test_written_objects_read_back(deidentifier, tmp_path) -> None:  # type: ignore[no-untyped-def]
    src = write(make_dataset(), tmp_path / "src.dcm")
    result, _ = deidentifier("teaching").apply_file(src)
    out = service.write(result, tmp_path / "out.dcm")
    back = dcmread(out)
    assert back.SOPInstanceUID == back.file_meta.MediaStorageSOPInstanceUID
    assert back.PatientName == "" and back.PatientIdentityRemoved == "YES"

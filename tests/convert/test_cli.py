"""`vna import` and `vna convert` with media, as a user runs them (real subprocesses)."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom

from tests.support.cli import run_vna
from tests.support.factory import make_file
from tests.support.media import planted_jpeg, planted_pdf, planted_png, planted_video
from tests.support.slides import write_svs
from tests.support.validate import find_planted

FLAGS = [
    "--patient-id",
    "CLI-1",
    "--issuer",
    "HOSP",
    "--patient-name",
    "Doe^Jane",
    "--birth-date",
    "1970-01-01",
    "--sex",
    "F",
    "--accession",
    "CLI-ACC",
    "--study-description",
    "Wound care",
    "--study-date",
    "20240201",
    "--study-time",
    "0930",
    "--body-part",
    "hand",
    "--laterality",
    "R",
    "--department",
    "Dermatology",
]


def test_import_converts_media_and_archives_dicom_as_is(local_settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "in"
    folder.mkdir()
    planted_jpeg(folder / "wound.jpg")
    planted_pdf(folder / "consent.pdf")
    planted_video(folder / "clip.mp4", frames=6)
    make_file(folder / "ct.dcm", patient_id="CT-PATIENT")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    result = run_vna("import", str(folder), "--json", *FLAGS, settings=local_settings)
    assert result.returncode == 1, result.stderr  # the broken photo
    summary = json.loads(result.stdout)
    assert (summary["stored"], summary["converted"]) == (4, 3)
    [rejected] = summary["rejected"]
    assert rejected["path"].endswith("broken.jpg") and "JPEG" in rejected["reason"]

    found = run_vna("find", "-k", "PatientID=CLI-1", "--json", settings=local_settings)
    [study] = json.loads(found.stdout)
    assert study["00080050"]["Value"] == ["CLI-ACC"]
    assert set(study["00080061"]["Value"]) == {"XC", "DOC"}
    assert study["00201208"]["Value"] == [3]

    again = run_vna("import", str(folder), "--json", *FLAGS, settings=local_settings)
    assert json.loads(again.stdout)["duplicates"] == 4  # same files, same objects

    out = tmp_path / "export"
    export = run_vna("export", "--out", str(out), "-k", "PatientID=CLI-1", settings=local_settings)
    assert export.returncode == 0, export.stderr
    exported = [p for p in out.rglob("*") if p.is_file() and p.name != "DICOMDIR"]
    assert len(exported) == 3 and (out / "DICOMDIR").is_file()
    assert find_planted(exported, [b"PLANTED-OWNER", b"PLANTED-SERIAL-123456"]) == []


def test_import_without_patient_context_rejects_media(local_settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    photo = planted_png(tmp_path / "photo.png")
    result = run_vna("import", str(photo), settings=local_settings)
    assert result.returncode == 1
    assert "photo.png: no patient context" in result.stdout


def test_import_with_a_manifest_maps_files_to_cases(local_settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    planted_jpeg(tmp_path / "a.jpg")
    planted_png(tmp_path / "b.png")
    write_svs(tmp_path / "c.svs", width=1024, height=768, levels=1)
    (tmp_path / "cases.csv").write_text(
        "file,patient_id,patient_name,accession,body_part,laterality\n"
        "a.jpg,M-1,Doe^Jane,ACC-A,foot,L\n"
        "b.png,M-2,Roe^Rick,ACC-B,face,\n"
        "c.svs,M-2,Roe^Rick,ACC-B,,\n"
    )
    result = run_vna(
        "import",
        "--manifest",
        str(tmp_path / "cases.csv"),
        "--issuer",
        "HOSP",
        "--json",
        settings=local_settings,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["converted"] == 3
    found = run_vna(
        "find",
        "-k",
        "IssuerOfPatientID=HOSP",
        "-r",
        "IssuerOfPatientID",
        "--json",
        settings=local_settings,
    )
    studies = json.loads(found.stdout)
    assert sorted(s["00100020"]["Value"][0] for s in studies) == ["M-1", "M-2"]
    assert sorted(s["00080050"]["Value"][0] for s in studies) == ["ACC-A", "ACC-B"]
    slide_study = next(s for s in studies if s["00100020"]["Value"] == ["M-2"])
    assert set(slide_study["00080061"]["Value"]) == {"XC", "SM"}


def test_convert_writes_files_and_reports_failures(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    planted_jpeg(source / "a.jpg")
    write_svs(source / "slide.svs", width=1024, height=768, levels=1)
    make_file(source / "x.dcm")
    (source / "bad.pdf").write_bytes(b"%PDF-1.4\n this is not a pdf")
    out = tmp_path / "out"
    result = run_vna("convert", str(source), "--out", str(out), "--json", *FLAGS)
    assert result.returncode == 1
    summary = json.loads(result.stdout)
    assert [f["path"].rsplit("/", 1)[1] for f in summary["failed"]] == ["bad.pdf"]
    kinds = sorted(item["kind"] for item in summary["converted"])
    assert kinds == ["dicom", "photo", "wsi"]
    files = sorted(out.glob("*.dcm"))
    assert len(files) == summary["objects"] == 3
    classes = sorted(pydicom.dcmread(p, stop_before_pixels=True).SOPClassUID.name for p in files)
    assert classes == [
        "CT Image Storage",
        "VL Photographic Image Storage",
        "VL Whole Slide Microscopy Image Storage",
    ]
    text = run_vna("convert", str(source / "a.jpg"), "--out", str(out), *FLAGS)
    assert text.returncode == 0 and "converted 1 file(s) into 1 DICOM file(s)" in text.stdout
    usage = run_vna("convert", str(source / "a.jpg"), "--out", str(out), "--orientation", "x")
    assert usage.returncode == 2 and "--orientation" in usage.stderr

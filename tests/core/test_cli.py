"""The admin CLI as a user runs it (real subprocesses), on both back ends."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pydicom
import pydicom.fileset
import pytest

from tests.support.cli import run_vna
from tests.support.data import require_real_data
from tests.support.factory import make_file, uid


def test_import_real_folder_find_stats_verify(settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    base = require_real_data()
    result = run_vna("import", str(base), "--json", settings=settings)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["rejected"] == []
    assert summary["stored"] == len([p for p in base.rglob("*") if p.is_file()]) - 1
    assert summary["followed_dicomdirs"]  # the DICOMDIR is followed, not stored

    again = run_vna("import", str(base), "--json", settings=settings)
    assert again.returncode == 0
    assert json.loads(again.stdout)["duplicates"] == summary["stored"]

    found = run_vna(
        "find", "--level", "patient", "-k", "PatientName=Wang*", "--json", settings=settings
    )
    assert found.returncode == 0, found.stderr
    names = sorted(m["00100010"]["Value"][0]["Ideographic"] for m in json.loads(found.stdout))
    assert names == ["王^小东", "王^小東"]

    stats = run_vna("stats", "--json", settings=settings)
    assert json.loads(stats.stdout)["instances"] == summary["stored"]
    verify = run_vna("verify", "--json", settings=settings)
    assert verify.returncode == 0 and json.loads(verify.stdout)["ok"]


def test_import_reports_rejections_and_exits_nonzero(local_settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "in"
    make_file(folder / "good.dcm")
    (folder / "notes.txt").write_text("not an image")
    bad = folder / "cut.dcm"
    good = make_file(tmp_path / "other.dcm", rows=64, columns=64)
    bad.write_bytes(good.read_bytes()[:-500])
    result = run_vna("import", str(folder), settings=local_settings)
    assert result.returncode == 1
    assert "stored 1" in result.stdout and "rejected 2" in result.stdout
    assert "notes.txt" in result.stdout and "cut.dcm" in result.stdout


def test_find_keys_and_errors(local_settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    study = uid()
    make_file(tmp_path / "in" / "a.dcm", patient_id="123", study_uid=study, study_date="20200315")
    make_file(tmp_path / "in" / "b.dcm", patient_id="456", study_date="20190101")
    assert run_vna("import", str(tmp_path / "in"), settings=local_settings).returncode == 0
    result = run_vna(
        "find", "--level", "study", "-k", "StudyDate=20200101-", "--json", settings=local_settings
    )
    assert [m["0020000D"]["Value"][0] for m in json.loads(result.stdout)] == [study]
    table = run_vna("find", "-k", "PatientID=123", settings=local_settings)
    assert "1 match" in table.stdout
    bad = run_vna("find", "-k", "NoSuchAttribute=1", settings=local_settings)
    assert bad.returncode == 2 and "NoSuchAttribute" in bad.stderr
    bad_date = run_vna("find", "-k", "StudyDate=tomorrow", settings=local_settings)
    assert bad_date.returncode == 2 and "StudyDate" in bad_date.stderr


def test_export_folder_and_zip_with_dicomdir(local_settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    study = uid()
    src = tmp_path / "src"
    files = [
        make_file(src / f"{i}.dcm", study_uid=study, patient_id="EXP", instance_number=i)
        for i in range(3)
    ]
    assert run_vna("import", str(src), settings=local_settings).returncode == 0
    out = tmp_path / "out"
    result = run_vna("export", "--out", str(out), "--study", study, settings=local_settings)
    assert result.returncode == 0, result.stderr
    fileset = pydicom.fileset.FileSet(pydicom.dcmread(out / "DICOMDIR"))
    exported = sorted(Path(i.path).read_bytes() for i in fileset)
    assert exported == sorted(f.read_bytes() for f in files)  # byte-identical
    zipped = tmp_path / "x.zip"
    result = run_vna("export", "--zip", str(zipped), "-k", "PatientID=EXP", settings=local_settings)
    assert result.returncode == 0, result.stderr
    with zipfile.ZipFile(zipped) as zf:
        names = zf.namelist()
    assert "DICOMDIR" in names and len(names) == 4


def test_verify_finds_and_repairs(local_settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from vna.archive import Archive
    from vna.ingest import ingest_file

    a, b, c = (make_file(tmp_path / f"{n}.dcm") for n in "abc")
    with Archive.open(local_settings) as archive:
        ingest_file(archive, a, source="import")
        ingest_file(archive, b, source="import")
        keys = sorted(archive.store.keys())
        # an orphan (object without row), a lost object, a corrupted object
        archive.store.put_file("orphan0000000000000000000000000000", c)
        archive.store.delete(keys[0])
        good_key = keys[1]
        path = next(p for p in (local_settings.data_dir / "objects").rglob(good_key))
        data = bytearray(path.read_bytes())
        data[-1] ^= 0xFF
        path.write_bytes(bytes(data))
    report = run_vna("verify", "--json", settings=local_settings)
    assert report.returncode == 1
    found = json.loads(report.stdout)
    assert len(found["missing_objects"]) == 1
    assert found["orphan_objects"] == ["orphan0000000000000000000000000000"]
    assert len(found["checksum_mismatches"]) == 1
    repaired = run_vna("verify", "--repair", "--json", settings=local_settings)
    after = json.loads(repaired.stdout)
    assert after["ok_after_repair"] is True
    assert any("indexed orphan" in r for r in after["repaired"])
    # the checksum mismatch is reported, never silently repaired
    assert repaired.returncode == 1
    stats = json.loads(run_vna("stats", "--json", settings=local_settings).stdout)
    assert stats["instances"] == 2  # b (corrupted but kept) and the adopted orphan c


def test_config_prints_effective_settings(tmp_path: Path) -> None:
    toml = tmp_path / "vna.toml"
    toml.write_text('ae_title = "FROMFILE"\ndimse_port = 4242\n')
    result = run_vna("config", "--json", VNA_CONFIG=str(toml), VNA_DIMSE_PORT="5555")
    values = json.loads(result.stdout)
    assert values["VNA_AE_TITLE"] == "FROMFILE"
    assert values["VNA_DIMSE_PORT"] == "5555"  # the environment wins
    bad = run_vna("config", VNA_DUPLICATE_POLICY="sometimes")
    assert bad.returncode == 2 and "duplicate_policy" in bad.stderr


@pytest.mark.parametrize("args", [["import", "/no/such/folder"], ["export", "--out", "x"]])
def test_usage_errors_exit_2(args: list[str], local_settings) -> None:  # type: ignore[no-untyped-def]
    result = run_vna(*args, settings=local_settings)
    assert result.returncode == 2

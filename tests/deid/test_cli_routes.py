"""The commands and the ingest routes, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.support.cli import run_vna
from tests.support.factory import make_file
from vna.archive import Archive
from vna.deid.service import IdentityLeft
from vna.index.tables import AuditEvent, Instance
from vna.ingest import ingest_file


def _env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "vna.toml").write_text(
        'deid_reidentify_admins = "alice"\n[deid_projects.teach]\nanonymous_only = true\n'
    )
    return {"VNA_CONFIG": str(tmp_path / "vna.toml"), "VNA_DEID_KEY": "cli-test-key"}


def test_deid_to_a_folder_then_check_and_reidentify(local_settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "src"
    make_file(src / "a.dcm", patient_name="Brightwater^Ola", patient_id="ID555")
    out = tmp_path / "out"
    env = _env(tmp_path)
    run = run_vna(
        "deid",
        "--profile",
        "research",
        "--project",
        "reg",
        str(src),
        "--out",
        str(out),
        "--json",
        settings=local_settings,
        **env,
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["deidentified"] == 1
    check = run_vna("deid-check", str(src), str(out), settings=local_settings, **env)
    assert check.returncode == 0, check.stdout
    leaky = run_vna("deid-check", str(src), str(src), settings=local_settings, **env)
    assert leaky.returncode == 1 and "LEAK" in leaky.stdout
    denied = run_vna(
        "reidentify",
        "--project",
        "reg",
        "--pseudonym",
        "REG-000001",
        "--reason",
        "withdrawal",
        "--user",
        "mallory",
        settings=local_settings,
        **env,
    )
    assert denied.returncode == 1
    allowed = run_vna(
        "reidentify",
        "--project",
        "reg",
        "--pseudonym",
        "REG-000001",
        "--reason",
        "consent withdrawn",
        "--user",
        "alice",
        settings=local_settings,
        **env,
    )
    assert allowed.returncode == 0, allowed.stderr
    assert json.loads(allowed.stdout)["identity"]["PatientID"] == "ID555"
    with Archive.open(local_settings) as archive, archive.db.read() as session:
        actions = list(session.execute(select(AuditEvent.action)).scalars())
        details = " ".join(session.execute(select(AuditEvent.detail)).scalars())
    assert {"deid", "reidentify", "reidentify-denied"} <= set(actions)
    assert "ID555" not in details and "Brightwater" not in details  # no identity in the audit


def test_teaching_copy_into_the_archive_leaves_the_original(local_settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = make_file(tmp_path / "c.dcm", patient_name="Keepme^Clinical")
    with Archive.open(local_settings) as archive:
        ingest_file(archive, path, source="import")
    env = _env(tmp_path)
    from pydicom import dcmread

    study = dcmread(path).StudyInstanceUID
    run = run_vna(
        "deid",
        "--profile",
        "teaching",
        "--project",
        "teach",
        "--study",
        study,
        "--into-archive",
        settings=local_settings,
        **env,
    )
    assert run.returncode == 0, run.stderr + run.stdout
    with Archive.open(local_settings) as archive, archive.db.read() as session:
        sources = sorted(session.execute(select(Instance.source)).scalars())
    assert sources == ["deid:teach", "import"]


def test_route_deidentifies_before_storing_and_refuses_identity(local_settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = local_settings.with_overrides(
        deid_key_env="",
        extra={
            "routes": {
                "ae:TEACHING": {"profile": "teaching", "project": "teach"},
                "http:teaching": {"project": "teach"},
            },
            "deid_projects": {"teach": {"anonymous_only": True}},
        },
    )
    path = make_file(tmp_path / "r.dcm", patient_name="Routed^Person", patient_id="RID1")
    with Archive.open(settings) as archive:
        result = ingest_file(archive, path, source="dimse:TEACHING", route="ae:TEACHING")
        with pytest.raises(IdentityLeft):
            ingest_file(archive, path, source="stow", route="http:teaching")
        with archive.db.read() as session:
            actions = list(session.execute(select(AuditEvent.action)).scalars())
    assert result.status == "stored"
    assert "deid-route" in actions and "deid-route-refused" in actions
    from pydicom import dcmread

    assert result.sop_instance_uid != dcmread(path).SOPInstanceUID

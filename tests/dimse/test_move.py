"""C-MOVE and C-GET SCP: destinations from the index (changed while running) and the
settings, pending counts, transcoding for a destination that refuses the stored syntax, the
failed-SOP list, unknown and unreachable destinations, getscu."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import build_context

from tests.dimse.conftest import (
    Endpoint,
    associate,
    dcmtk,
    free_port,
    receiver,
    running,
    storescp,
)
from tests.dimse.objects import compressed_file, video_file
from tests.support.cli import run_vna
from tests.support.factory import make_dataset, uid, write
from vna.archive import Archive
from vna.ingest import ingest_file
from vna.remote_aes import add_remote_ae

pytestmark = pytest.mark.dcmtk
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"


def _study(archive: Archive, tmp_path: Path, n: int = 3) -> tuple[str, list[str]]:
    study = uid()
    sops = []
    for i in range(n):
        ds = make_dataset(study_uid=study, instance_number=i + 1)
        ingest_file(archive, write(ds, tmp_path / f"s{i}.dcm"), source="import")
        sops.append(ds.SOPInstanceUID)
    return study, sops


def _move(endpoint: Endpoint, study: str, destination: str) -> list[Dataset]:
    assoc = associate(endpoint, [build_context(STUDY_ROOT_MOVE)])
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study
    responses = []
    for rsp, identifier in assoc.send_c_move(query, destination, STUDY_ROOT_MOVE):
        failed = identifier.get("FailedSOPInstanceUIDList", []) if identifier else []
        rsp.FailedSOPInstanceUIDList = [failed] if isinstance(failed, str) else list(failed)
        responses.append(rsp)
    assoc.release()
    return responses


def test_move_counts_and_destination_added_while_running(
    server_any: Endpoint, tmp_path: Path
) -> None:
    study, sops = _study(server_any.archive, tmp_path)
    with receiver("LATECOMER") as dest:
        # unknown at first: Move Destination unknown (PS3.4 C.4.2.1.5)
        responses = _move(server_any, study, "LATECOMER")
        assert [int(r.Status) for r in responses] == [0xA801]
        add_remote_ae(server_any.archive, "LATECOMER", "127.0.0.1", dest.port)  # no restart
        responses = _move(server_any, study, "LATECOMER")
    assert set(dest.received) == set(sops)
    pending = [r for r in responses if r.Status == 0xFF00]
    assert [int(r.NumberOfRemainingSuboperations) for r in pending] == [2, 1, 0]
    assert [int(r.NumberOfCompletedSuboperations) for r in pending] == [1, 2, 3]
    final = responses[-1]
    assert (
        final.Status,
        final.NumberOfCompletedSuboperations,
        final.NumberOfFailedSuboperations,
    ) == (0, 3, 0)


def test_movescu_to_destination_from_settings_with_transcoding(
    local_archive: Archive, tmp_path: Path
) -> None:
    study = uid()
    jls = compressed_file(tmp_path / "jls.dcm", study_uid=study)
    video = video_file(tmp_path / "video.dcm", study_uid=study)
    plain = write(make_dataset(study_uid=study), tmp_path / "plain.dcm")
    for path in (jls, video, plain):
        ingest_file(local_archive, path, source="import")
    with storescp(tmp_path / "out") as dest:  # dcmtk default: uncompressed syntaxes only
        settings = {"dimse_destinations": f"{dest.ae_title}@127.0.0.1:{dest.port}"}
        with running(local_archive, **settings) as endpoint:
            result = dcmtk(
                "movescu", "-S", "-v", "-aem", dest.ae_title, "-aec", endpoint.ae_title,
                "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
                endpoint.host, str(endpoint.port),
            )  # fmt: skip
            responses = _move(endpoint, study, dest.ae_title)
        received = {pydicom.dcmread(p).SOPInstanceUID: pydicom.dcmread(p) for p in dest.files()}
    # the JPEG-LS image was transcoded (same UID, same pixels); the H.264 video cannot be
    assert "SubOperationsCompleteOneOrMoreFailures" in result.stderr
    original = pydicom.dcmread(jls)
    moved = received[original.SOPInstanceUID]
    assert not moved.file_meta.TransferSyntaxUID.is_compressed
    assert (moved.pixel_array == original.pixel_array).all()
    assert pydicom.dcmread(video).SOPInstanceUID not in received
    final = responses[-1]
    assert int(final.Status) == 0xB000
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (2, 1)
    assert final.FailedSOPInstanceUIDList == pydicom.dcmread(video).SOPInstanceUID


def test_unreachable_destination_fails_every_sub_operation(
    server: Endpoint, tmp_path: Path
) -> None:
    study, sops = _study(server.archive, tmp_path, n=2)
    add_remote_ae(server.archive, "GONE", "127.0.0.1", free_port())
    final = _move(server, study, "GONE")[-1]
    assert int(final.Status) == 0xA702  # Refused: out of resources, unable to perform sub-ops
    assert int(final.NumberOfFailedSuboperations) == 2
    assert sorted(final.FailedSOPInstanceUIDList) == sorted(sops)


def test_getscu_on_the_same_association(server_any: Endpoint, tmp_path: Path) -> None:
    study, sops = _study(server_any.archive, tmp_path)
    out = tmp_path / "got"
    out.mkdir()
    result = dcmtk(
        "getscu", "-S", "-v", "-od", str(out), "-aec", server_any.ae_title,
        "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
        server_any.host, str(server_any.port),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    got = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in out.iterdir()}
    assert got == set(sops)


def test_vna_ae_cli_changes_a_running_server(server: Endpoint, tmp_path: Path) -> None:
    study, sops = _study(server.archive, tmp_path, n=1)
    settings = server.archive.settings
    with receiver("CLIDEST") as dest:
        added = run_vna("ae", "add", "CLIDEST", "127.0.0.1", str(dest.port), settings=settings)
        assert added.returncode == 0, added.stderr
        listed = run_vna("ae", "list", "--json", settings=settings)
        assert "CLIDEST" in listed.stdout
        move = run_vna(
            "move", server.target, "--dest", "CLIDEST", "-k", f"StudyInstanceUID={study}",
            settings=settings,
        )  # fmt: skip
        assert move.returncode == 0, move.stdout + move.stderr
        assert set(dest.received) == set(sops)
    removed = run_vna("ae", "remove", "CLIDEST", settings=settings)
    assert removed.returncode == 0
    final = _move(server, study, "CLIDEST")[-1]
    assert int(final.Status) == 0xA801

"""C-STORE SCP with real peers: dcmtk storescu (uncompressed, JPEG, H.264), failures with
their statuses, duplicates, and hostile peers that send garbage or drop mid-object."""

from __future__ import annotations

import os
import socket
import time
from io import BytesIO
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage
from pynetdicom import _config, build_context
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu_primitives import P_DATA
from sqlalchemy import func, select

from dimse.transfer import reactor_paused
from tests.dimse.conftest import (
    Endpoint,
    associate,
    data_set_bytes,
    dcmtk,
    received_leftovers,
    running,
    unindexed_store_files,
)
from tests.dimse.objects import video_file
from tests.support.data import require_real_data
from tests.support.factory import make_dataset, make_file, uid, write
from vna.archive import Archive
from vna.errors import NotFound
from vna.index.tables import Instance
from vna.retrieve import find_instances, open_instance

pytestmark = pytest.mark.dcmtk


def stored_data_set(archive: Archive, sop_uid: str) -> bytes:
    ref = find_instances(archive, sop_instance_uid=sop_uid)[0]
    with open_instance(archive, ref) as fp:
        data = fp.read()
    from dimse.transfer import meta_length

    return data[meta_length(data[:65536]) :]


def instance_count(archive: Archive) -> int:
    with archive.db.read() as session:
        return int(session.execute(select(func.count(Instance.pk))).scalar_one())


def send_raw(endpoint: Endpoint, path: Path, sop_class: str, ts: str) -> int:
    """C-STORE of a file's data set bytes as they are (pynetdicom's chunked send)."""
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        assoc = associate(endpoint, [build_context(sop_class, [ts])])
        assert assoc.is_established
        status = int(assoc.send_c_store(path).Status)
        assoc.release()
        return status
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = False


def test_storescu_uncompressed(server: Endpoint, tmp_path: Path) -> None:
    study = uid()
    files = [
        write(make_dataset(study_uid=study, instance_number=i), tmp_path / f"{i}.dcm")
        for i in range(3)
    ]
    address = (server.host, str(server.port))
    result = dcmtk("storescu", "-aec", server.ae_title, *address, *map(str, files))
    assert result.returncode == 0, result.stderr
    refs = find_instances(server.archive, study_uid=study)
    assert len(refs) == 3
    with server.archive.db.read() as session:
        sources = set(session.execute(select(Instance.source)).scalars())
    assert sources == {"dimse:STORESCU"}


def test_storescu_jpeg_and_h264_stored_as_received(server: Endpoint, tmp_path: Path) -> None:
    base = require_real_data()
    jpeg = base / "TransferSyntaxes" / "1.2.840.10008.1.2.4.50.dcm"
    video = video_file(tmp_path / "video.dcm")
    for path, option, syntax in (
        (jpeg, "-xy", "1.2.840.10008.1.2.4.50"),
        (video, "-xn", "1.2.840.10008.1.2.4.102"),
    ):
        address = (server.host, str(server.port))
        result = dcmtk("storescu", "-R", option, "-aec", server.ae_title, *address, str(path))
        assert result.returncode == 0, result.stderr
        original = pydicom.dcmread(path)
        ref = find_instances(server.archive, sop_instance_uid=original.SOPInstanceUID)[0]
        assert ref.transfer_syntax_uid == syntax
        with open_instance(server.archive, ref) as fp:
            stored = pydicom.dcmread(fp)
        # storescu re-encodes the header; the compressed stream arrives untouched
        assert stored.PixelData == original.PixelData


def test_sop_class_mismatch_is_refused_and_nothing_stored(server: Endpoint, tmp_path: Path) -> None:
    ds = make_dataset(sop_class=MRImageStorage)
    data = data_set_bytes(write(ds, tmp_path / "mr.dcm"))
    assoc = associate(server, [build_context(CTImageStorage, [ExplicitVRLittleEndian])])
    req = C_STORE()
    req.MessageID, req.Priority = 1, 0
    req.AffectedSOPClassUID, req.AffectedSOPInstanceUID = CTImageStorage, ds.SOPInstanceUID
    req.DataSet = BytesIO(data)  # an MR data set in a CT request
    with reactor_paused(assoc):  # our SCU reads the response itself
        assoc.dimse.send_msg(req, assoc.accepted_contexts[0].context_id)
        _cx, rsp = assoc.dimse.get_msg(block=True)
    assoc.release()
    assert rsp.Status == 0xA900  # Data Set does not match SOP Class (PS3.4 B.2.3)
    with pytest.raises(NotFound):
        find_instances(server.archive, sop_instance_uid=ds.SOPInstanceUID)
    assert not received_leftovers(server.archive)


def test_duplicates_follow_the_policy(local_archive: Archive, tmp_path: Path) -> None:
    ds = make_dataset(study_description="first")
    first = write(ds, tmp_path / "a.dcm")
    ds.StudyDescription = "changed"
    second = write(ds, tmp_path / "b.dcm")
    with running(local_archive, duplicate_policy="reject") as endpoint:
        assert send_raw(endpoint, first, CTImageStorage, ExplicitVRLittleEndian) == 0
        assert send_raw(endpoint, first, CTImageStorage, ExplicitVRLittleEndian) == 0
        assert instance_count(local_archive) == 1
        # Duplicate SOP Instance (PS3.7 C.4.3): other content under the reject policy
        assert send_raw(endpoint, second, CTImageStorage, ExplicitVRLittleEndian) == 0x0111
        assert instance_count(local_archive) == 1
    with running(local_archive) as endpoint:  # keep-both-versions: stored with a warning
        status = send_raw(endpoint, second, CTImageStorage, ExplicitVRLittleEndian)
        assert status == 0xB007
        assert instance_count(local_archive) == 2


def test_store_failure_is_out_of_resources_and_leaves_nothing(
    local_archive: Archive, tmp_path: Path
) -> None:
    objects = local_archive.settings.data_dir / "objects"
    objects.rename(local_archive.settings.data_dir / "objects.away")
    objects.write_text("not a folder")  # every put fails
    path = write(make_dataset(), tmp_path / "a.dcm")
    with running(local_archive) as endpoint:
        assert send_raw(endpoint, path, CTImageStorage, ExplicitVRLittleEndian) == 0xA700
    assert instance_count(local_archive) == 0
    assert not list(local_archive.spool_dir.iterdir())  # the store itself cannot be listed


def _echo_ok(endpoint: Endpoint) -> None:
    result = dcmtk("echoscu", "-aec", endpoint.ae_title, endpoint.host, str(endpoint.port))
    assert result.returncode == 0, result.stderr


def test_garbage_does_not_hurt(server: Endpoint) -> None:
    payloads = [
        os.urandom(4096),
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x01\x00" + (0xFFFFFFF0).to_bytes(4, "big") + os.urandom(64),  # absurd PDU length
        b"\x04\x00\x00\x00\x00\x10" + os.urandom(16),  # P-DATA before any association
    ]
    for payload in payloads:
        with socket.create_connection((server.host, server.port), timeout=5) as sock:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            try:
                while sock.recv(4096):
                    pass
            except OSError:
                pass
    _echo_ok(server)
    assert instance_count(server.archive) == 0


def send_partial(assoc: Any, sop_instance_uid: str, data: bytes, fraction: float) -> None:
    """Send a CT C-STORE request and the first ``fraction`` of its data set, then nothing."""
    cx_id = assoc.accepted_contexts[0].context_id
    req = C_STORE()
    req.MessageID, req.Priority = 1, 0
    req.AffectedSOPClassUID, req.AffectedSOPInstanceUID = CTImageStorage, sop_instance_uid
    message = C_STORE_RQ()
    message.primitive_to_message(req)
    message.command_set.CommandDataSetType = 0x0001
    for pdata in message.encode_msg(cx_id, 16384):
        assoc.dul.send_pdu(pdata)
    part = P_DATA()
    part.presentation_data_value_list.append((cx_id, b"\x00" + data[: int(len(data) * fraction)]))
    assoc.dul.send_pdu(part)


def test_dropped_mid_object_leaves_nothing(server: Endpoint, tmp_path: Path) -> None:
    ds = make_dataset(rows=1024, columns=1024)  # beyond the 1 MB staging buffer
    data = data_set_bytes(write(ds, tmp_path / "big.dcm"))
    assoc = associate(server, [build_context(CTImageStorage, [ExplicitVRLittleEndian])])
    assert assoc.is_established
    send_partial(assoc, ds.SOPInstanceUID, data, 2 / 3)
    deadline = time.monotonic() + 10
    while not received_leftovers(server.archive) and time.monotonic() < deadline:
        time.sleep(0.01)  # poll: the listener has started to receive the object
    assert received_leftovers(server.archive)
    assoc.dul.socket.socket.shutdown(socket.SHUT_RDWR)  # the peer vanishes mid-object
    assoc.kill()
    deadline = time.monotonic() + 10
    while received_leftovers(server.archive) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not received_leftovers(server.archive), "the half-received object was left"
    _echo_ok(server)
    with pytest.raises(NotFound):
        find_instances(server.archive, sop_instance_uid=ds.SOPInstanceUID)


def test_a_routed_store_keeps_only_the_transformed_object(
    local_archive: Archive, tmp_path: Path
) -> None:
    """Objects from an AE with a route (here de-identification) are transformed before they
    are stored: the file the data set was received into goes, the transformed one stays."""
    path = make_file(tmp_path / "r.dcm", patient_name="Routed^Person", patient_id="RID1")
    routes = {"ae:TEACHING": {"profile": "teaching", "project": "teach"}}
    projects = {"teach": {"anonymous_only": True}}
    with running(
        local_archive, deid_key_env="", extra={"routes": routes, "deid_projects": projects}
    ) as endpoint:
        result = dcmtk(
            "storescu", "-aet", "TEACHING", "-aec", endpoint.ae_title, endpoint.host,
            str(endpoint.port), str(path),
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert not received_leftovers(local_archive)
    assert instance_count(local_archive) == 1
    [key] = [k for k in local_archive.store.keys() if k not in unindexed_store_files(local_archive)]  # noqa: SIM118
    stored = pydicom.dcmread(local_archive.store.path_for(key))  # type: ignore[attr-defined]
    assert "Routed" not in str(stored.PatientName) and stored.PatientID != "RID1"
    local_archive.store.close()
    assert not unindexed_store_files(local_archive)

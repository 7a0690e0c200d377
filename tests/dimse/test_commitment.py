"""Storage Commitment Push Model SCP: the report on the same association when the requester
waits for it, on a new one when it has left; only objects whose checksum verifies."""

from __future__ import annotations

import threading
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, generate_uid
from pynetdicom import AE, build_context, build_role, evt

from tests.dimse.conftest import Endpoint, associate, nodelay
from tests.support.factory import make_dataset, write
from vna.ingest import ingest_file
from vna.remote_aes import add_remote_ae
from vna.retrieve import find_instances

COMMITMENT = "1.2.840.10008.1.20.1"
WELL_KNOWN = "1.2.840.10008.1.20.1.1"


def _request(sops: list[str]) -> Dataset:
    ds = Dataset()
    ds.TransactionUID = generate_uid()
    items = []
    for sop in sops:
        item = Dataset()
        item.ReferencedSOPClassUID = CTImageStorage
        item.ReferencedSOPInstanceUID = sop
        items.append(item)
    ds.ReferencedSOPSequence = items
    return ds


def _stored(endpoint: Endpoint, tmp_path: Path, n: int) -> list[str]:
    sops = []
    for i in range(n):
        ds = make_dataset(instance_number=i)
        ingest_file(endpoint.archive, write(ds, tmp_path / f"{i}.dcm"), source="import")
        sops.append(ds.SOPInstanceUID)
    return sops


def test_report_on_the_same_association(server: Endpoint, tmp_path: Path) -> None:
    sops = _stored(server, tmp_path, 3)
    # corrupt one stored object: its checksum no longer verifies
    ref = find_instances(server.archive, sop_instance_uid=sops[2])[0]
    path = next(p for p in server.archive.settings.data_dir.rglob(ref.storage_key + "*"))
    path.write_bytes(path.read_bytes()[:-1] + b"\x01")
    missing = generate_uid()
    reports: list[tuple[int, Dataset]] = []
    arrived = threading.Event()

    def on_report(event: evt.Event) -> int:
        reports.append((int(event.request.EventTypeID), event.event_information))
        arrived.set()
        return 0x0000

    assoc = associate(
        server, [build_context(COMMITMENT)], evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)]
    )
    request = _request([*sops, missing])
    status, _reply = assoc.send_n_action(request, 1, COMMITMENT, WELL_KNOWN)
    assert status.Status == 0x0000
    assert arrived.wait(20)
    for thread in threading.enumerate():  # the listener's reporter has our answer
        if thread.name.startswith("commitment-"):
            thread.join(20)
    assoc.release()
    event_type, info = reports[0]
    assert event_type == 2  # failures exist
    assert info.TransactionUID == request.TransactionUID
    committed = {item.ReferencedSOPInstanceUID for item in info.ReferencedSOPSequence}
    failed = {item.ReferencedSOPInstanceUID: item.FailureReason for item in info.FailedSOPSequence}
    assert committed == set(sops[:2])
    assert failed == {sops[2]: 0x0110, missing: 0x0112}


def test_report_on_a_new_association_when_the_requester_left(
    server: Endpoint, tmp_path: Path
) -> None:
    sops = _stored(server, tmp_path, 2)
    reports: list[Dataset] = []
    arrived = threading.Event()

    def on_report(event: evt.Event) -> int:
        reports.append(event.event_information)
        arrived.set()
        return 0x0000

    listener = AE(ae_title="REQUESTER")
    listener.add_supported_context(COMMITMENT, scu_role=True, scp_role=True)
    scp = listener.start_server(
        ("127.0.0.1", 0),
        block=False,
        evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report), (evt.EVT_CONN_OPEN, nodelay)],
    )
    assert scp is not None
    try:
        add_remote_ae(server.archive, "REQUESTER", "127.0.0.1", int(scp.server_address[1]))
        assoc = associate(
            server,
            [build_context(COMMITMENT)],
            ae_title="REQUESTER",
            ext_neg=[build_role(COMMITMENT, scu_role=True)],
        )
        status, _ = assoc.send_n_action(_request(sops), 1, COMMITMENT, WELL_KNOWN)
        assert status.Status == 0x0000
        assoc.release()  # leaves at once: the report must come on a new association
        assert arrived.wait(20)
    finally:
        listener.shutdown()
    committed = {item.ReferencedSOPInstanceUID for item in reports[0].ReferencedSOPSequence}
    assert committed == set(sops)
    assert "FailedSOPSequence" not in reports[0]


def test_malformed_request_is_refused(server: Endpoint) -> None:
    assoc = associate(server, [build_context(COMMITMENT)])
    no_transaction = _request([generate_uid()])
    del no_transaction.TransactionUID
    status, _ = assoc.send_n_action(no_transaction, 1, COMMITMENT, WELL_KNOWN)
    assert status.Status == 0x0115  # invalid argument value
    status, _ = assoc.send_n_action(_request([generate_uid()]), 7, COMMITMENT, WELL_KNOWN)
    assert status.Status == 0x0123  # no such action type
    assoc.release()

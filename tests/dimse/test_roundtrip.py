"""Every real-world file goes in by C-STORE and comes back byte-identical by C-MOVE (dcmtk
movescu to a dcmtk storescp) and by C-GET (a pynetdicom SCU), on both back ends.

Only the data set travels on the network (PS3.10 7.1: File Meta Information is not sent),
so "byte-identical" compares data sets: the original file's, the stored object's, and what
each peer received.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import _config, build_context, build_role, evt

from tests.dimse.conftest import Endpoint, associate, data_set_bytes, dcmtk, receiver
from tests.dimse.test_store import stored_data_set
from tests.support.data import real_files, require_real_data
from vna.remote_aes import add_remote_ae

pytestmark = [pytest.mark.dcmtk, pytest.mark.slow]
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"


def _identity(path: Path) -> tuple[str, str, str, str]:
    ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    meta = getattr(ds, "file_meta", None)
    ts = str(meta.TransferSyntaxUID) if meta is not None and "TransferSyntaxUID" in meta else ""
    if not ts:
        ts = "1.2.840.10008.1.2" if ds.original_encoding[0] else "1.2.840.10008.1.2.1"
    return str(ds.SOPClassUID), str(ds.SOPInstanceUID), str(ds.StudyInstanceUID), ts


def _store_all(endpoint: Endpoint, files: list[Path]) -> dict[str, bytes | None]:
    """C-STORE each file's data set exactly as in the file; SOP Instance UID -> the bytes
    sent (None for a bare data set without File Meta, which pydicom sends re-encoded)."""
    identities = {path: _identity(path) for path in files}
    pairs = sorted({(cls, ts) for cls, _sop, _study, ts in identities.values()})
    contexts = [build_context(cls, [ts]) for cls, ts in pairs]
    sent: dict[str, bytes | None] = {}
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        assoc = associate(endpoint, contexts)
        assert assoc.is_established
        for path, (_cls, sop, _study, ts) in identities.items():
            if path.read_bytes()[128:132] != b"DICM":  # a bare data set: give it a header
                ds = pydicom.dcmread(path, force=True)
                ds.file_meta = pydicom.dataset.FileMetaDataset()
                ds.file_meta.TransferSyntaxUID = ts
                status = assoc.send_c_store(ds)
                sent[sop] = None
            else:
                status = assoc.send_c_store(path)
                sent[sop] = data_set_bytes(path)
            assert status.Status in (0x0000, 0xB007), (path, hex(status.Status))
        assoc.release()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = False
    return sent


def test_real_files_store_move_get_byte_identical(server_any: Endpoint, tmp_path: Path) -> None:
    require_real_data()
    files = real_files()
    sent = _store_all(server_any, files)
    archive = server_any.archive
    for sop, data in sent.items():
        if data is not None:
            assert stored_data_set(archive, sop) == data, sop

    studies = sorted({_identity(p)[2] for p in files})
    with receiver() as dest:  # a real pynetdicom storage SCP that accepts every syntax
        add_remote_ae(archive, dest.ae_title, "127.0.0.1", dest.port)
        result = dcmtk(
            "movescu",
            "-S",
            "-aem",
            dest.ae_title,
            "-aec",
            server_any.ae_title,
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            "StudyInstanceUID=" + "\\".join(studies),
            server_any.host,
            str(server_any.port),
        )
        assert result.returncode == 0, result.stderr
    assert set(dest.received) == set(sent)
    for sop, data in dest.received.items():
        assert same(data, stored_data_set(archive, sop)), sop

    got = _c_get(server_any, files, studies)
    assert set(got) == set(sent)
    for sop, data in got.items():
        assert same(data, stored_data_set(archive, sop)), sop


def same(received: bytes, stored: bytes) -> bool:
    """Identical, or the stored data set has an odd length (a deflated one in the test data)
    and went out with the trailing NUL PS3.5 A.5 requires."""
    return received == stored or (len(stored) % 2 == 1 and received == stored + b"\x00")


def _c_get(endpoint: Endpoint, files: list[Path], studies: list[str]) -> dict[str, bytes]:
    """C-GET every study with one storage context per (SOP class, transfer syntax), so that
    each object comes in its stored syntax; returns the received data sets."""
    pairs = sorted({(_identity(p)[0], _identity(p)[3]) for p in files})
    contexts = [build_context(STUDY_ROOT_GET)]
    contexts += [build_context(cls, [ts]) for cls, ts in pairs]
    roles = [build_role(cls, scp_role=True) for cls in sorted({cls for cls, _ts in pairs})]
    received: dict[str, bytes] = {}

    def on_store(event: evt.Event) -> int:
        request = event.request
        if getattr(request, "_dataset_path", None):  # pynetdicom received it into a file
            data = data_set_bytes(Path(event.dataset_path))
        else:
            data = request.DataSet.getvalue()
        received[str(request.AffectedSOPInstanceUID)] = data
        return 0x0000

    assoc = associate(endpoint, contexts, ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = studies
    statuses = [int(rsp.Status) for rsp, _ in assoc.send_c_get(query, STUDY_ROOT_GET) if rsp]
    assoc.release()
    assert statuses[-1] == 0x0000, [hex(s) for s in statuses]
    assert statuses.count(0xFF00) == len(received)
    return received

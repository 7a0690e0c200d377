"""C-STORE data sets received straight into the spool (dimse/receive.py): fragment routing
rules of PS3.8 E.2 at the PDV level, and real associations whose messages are cut into many
small PDUs, mixed with messages pynetdicom serves."""

from __future__ import annotations

import struct
from io import BytesIO
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage
from pynetdicom import build_context
from pynetdicom.dimse_messages import C_ECHO_RQ, C_STORE_RQ
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.dsutils import decode as _decode
from pynetdicom.sop_class import Verification

from dimse.receive import ProtocolError, ReceivedStore, StoreReceiver, parse_command
from dimse.transfer import (
    encode_pending_retrieve_response,
    encode_store_request,
    encode_store_response,
)
from storage import FilesystemStore
from tests.dimse.conftest import (
    associate,
    data_set_bytes,
    dcmtk,
    received_leftovers,
    running,
    unindexed_store_files,
)
from tests.dimse.test_store import instance_count, stored_data_set
from tests.support.factory import make_dataset, write
from vna.archive import Archive

CT_CONTEXT, ECHO_CONTEXT = 1, 3


def decode(command: BytesIO) -> Any:
    """A command set as pydicom reads it (Implicit VR Little Endian)."""
    return _decode(command, True, True)


def _command(primitive: Any, message: Any, data_set: bool) -> bytes:
    encoded = message()
    encoded.primitive_to_message(primitive)
    encoded.command_set.CommandDataSetType = 0x0001 if data_set else 0x0101
    pdata = next(iter(encoded.encode_msg(CT_CONTEXT, 0)))
    return bytes(pdata.presentation_data_value_list[0][1][1:])


def store_command(sop_instance: str, message_id: int = 7) -> bytes:
    req = C_STORE()
    req.MessageID, req.Priority = message_id, 0
    req.AffectedSOPClassUID, req.AffectedSOPInstanceUID = CTImageStorage, sop_instance
    return _command(req, C_STORE_RQ, True)


def echo_command() -> bytes:
    req = C_ECHO()
    req.MessageID = 3
    req.AffectedSOPClassUID = Verification
    return _command(req, C_ECHO_RQ, False)


def pdv(context_id: int, header: int, value: bytes) -> bytes:
    """One PDV item (PS3.8 9.3.5.1)."""
    return struct.pack(">IBB", len(value) + 2, context_id, header) + value


@pytest.fixture
def receiver(local_archive: Archive) -> StoreReceiver:
    contexts = {
        CT_CONTEXT: SimpleNamespace(
            abstract_syntax=CTImageStorage, transfer_syntax=[ExplicitVRLittleEndian], as_scp=True
        ),
        ECHO_CONTEXT: SimpleNamespace(
            abstract_syntax=Verification, transfer_syntax=[ExplicitVRLittleEndian], as_scp=True
        ),
    }
    return StoreReceiver(SimpleNamespace(_accepted_cx=contexts), local_archive, "MODALITY")


def test_parse_command_reads_the_elements() -> None:
    elements = parse_command(store_command("1.2.3.4", message_id=9))
    assert elements is not None
    assert elements[0x0100] == b"\x01\x00"  # C-STORE-RQ
    assert struct.unpack("<H", elements[0x0110])[0] == 9
    assert elements[0x1000].rstrip(b"\x00") == b"1.2.3.4"
    assert parse_command(b"\x08\x00\x10\x00\x02\x00\x00\x00AB") is None  # not group 0000
    assert parse_command(store_command("1.2.3")[:-3]) is None  # truncated


def test_store_fragments_across_pdus_are_spooled_after_our_meta(
    receiver: StoreReceiver,
) -> None:
    data = bytes(range(256)) * 40
    command = store_command("1.2.3.4")
    # the command split in two PDUs, the data set in three, the last PDU holding two PDVs
    slow, done = receiver.feed(pdv(CT_CONTEXT, 0x01, command[:20]))
    assert (slow, done) == ([], [])
    slow, done = receiver.feed(pdv(CT_CONTEXT, 0x03, command[20:]) + pdv(1, 0x00, data[:1000]))
    assert (slow, done) == ([], [])
    slow, done = receiver.feed(pdv(CT_CONTEXT, 0x00, data[1000:5000]))
    assert (slow, done) == ([], [])
    slow, done = receiver.feed(pdv(CT_CONTEXT, 0x00, data[5000:9000]) + pdv(1, 0x02, data[9000:]))
    assert slow == []
    [(context_id, received)] = done
    assert context_id == CT_CONTEXT and isinstance(received, ReceivedStore)
    assert (received.message_id, received.sop_instance) == (7, "1.2.3.4")
    content = received.spool.path.read_bytes()
    assert content[128:132] == b"DICM" and content.endswith(data)
    assert b"MODALITY" in content[: len(content) - len(data)]  # Source AE Title in the meta
    received.abandon()
    assert not received.spool.path.exists()


def test_other_messages_pass_through_unchanged(receiver: StoreReceiver) -> None:
    echo = pdv(ECHO_CONTEXT, 0x03, echo_command())
    slow, done = receiver.feed(echo)
    assert slow == [echo] and done == []
    # a C-STORE on a context whose abstract syntax is another SOP class: pynetdicom decides
    wrong = store_command("1.2.3.5").replace(CTImageStorage.encode(), MRImageStorage.encode())
    head = pdv(CT_CONTEXT, 0x03, wrong)
    body = pdv(CT_CONTEXT, 0x02, b"\x08\x00\x16\x00\x00\x00\x00\x00")
    slow, done = receiver.feed(head)
    assert slow == [head] and done == []
    slow, done = receiver.feed(body)
    assert slow == [body] and done == []
    # and the next C-STORE is spooled again
    slow, done = receiver.feed(pdv(CT_CONTEXT, 0x03, store_command("1.2.3.6")))
    assert slow == []
    slow, done = receiver.feed(pdv(CT_CONTEXT, 0x02, b"\x00\x00"))
    assert [r.sop_instance for _, r in done] == ["1.2.3.6"]
    done[0][1].abandon()


def test_interrupted_data_set_is_a_protocol_error(receiver: StoreReceiver) -> None:
    receiver.feed(pdv(CT_CONTEXT, 0x03, store_command("1.2.3.7")) + pdv(1, 0x00, b"ab"))
    with pytest.raises(ProtocolError):
        receiver.feed(pdv(ECHO_CONTEXT, 0x02, b"cd"))  # another presentation context
    receiver.close()
    assert not received_leftovers(receiver.archive)


def test_truncated_pdv_item_is_a_protocol_error(receiver: StoreReceiver) -> None:
    with pytest.raises(ProtocolError):
        receiver.feed(pdv(CT_CONTEXT, 0x03, store_command("1.2.3.8"))[:-4] + b"\x00\x00")


def test_close_removes_what_was_not_ingested(receiver: StoreReceiver) -> None:
    receiver.feed(pdv(CT_CONTEXT, 0x03, store_command("1.2.3.9")))
    _, done = receiver.feed(pdv(CT_CONTEXT, 0x02, b"\x00\x00"))
    receiver.feed(pdv(CT_CONTEXT, 0x03, store_command("1.2.3.10")) + pdv(1, 0x00, b"ab"))
    first, second = done[0][1].spool.path, receiver._current.spool.path
    assert first.exists() and second.exists()
    assert received_leftovers(receiver.archive) == [first]  # the second is still buffered
    receiver.close()  # the association ended before the first was answered
    assert not first.exists() and not second.exists()
    assert not received_leftovers(receiver.archive)
    assert not done[0][1].take()
    receiver.archive.store.close()  # and the store's unused reserved files go with it
    assert not unindexed_store_files(receiver.archive)


def test_the_next_file_is_made_ahead_and_used(receiver: StoreReceiver) -> None:
    """From the second answer on, the next C-STORE's file is ready at once: a file reserved
    in the store under the object's future key. The next request is received into it, and
    the end of the association gives an unused one back."""
    store = receiver.archive.store
    assert isinstance(store, FilesystemStore)
    receiver.prepare()  # one object per association is common: nothing made ahead yet
    assert receiver._ready is None
    receiver.prepare()
    assert receiver._ready is not None
    ready = receiver._ready.path
    assert store.reserved_key(ready) == ready.name and ready.parent.parent.parent == store.root
    receiver.prepare()  # one at a time
    assert receiver._ready.path == ready
    receiver.feed(pdv(CT_CONTEXT, 0x03, store_command("1.2.3.11")))
    _, done = receiver.feed(pdv(CT_CONTEXT, 0x02, b"\x00\x00"))
    [(_cx, received)] = done
    assert received.spool.path == ready and ready.read_bytes().endswith(b"\x00\x00")
    received.abandon()  # not ingested: the file with its bytes goes
    assert not ready.exists() and store.reserved_key(ready) is None
    receiver.prepare()
    again = receiver._ready.path
    receiver.drop_ready()  # a release or an abort arrives
    assert again.exists() and again.stat().st_size == 0  # kept for another object
    assert store.reserved_key(again) is None
    receiver.prepare()
    receiver.close()
    assert not received_leftovers(receiver.archive)


def test_many_stores_leave_an_empty_spool_when_released(
    local_archive: Archive, tmp_path: Path
) -> None:
    """storescu returns once our release answer arrives: by then nothing is left behind."""
    files = [write(make_dataset(), tmp_path / f"{i}.dcm") for i in range(3)]
    with running(local_archive) as endpoint:
        result = dcmtk(
            "storescu", "-aec", endpoint.ae_title, endpoint.host, str(endpoint.port),
            *[str(f) for f in files],
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert not received_leftovers(local_archive)
    assert instance_count(local_archive) == 3
    local_archive.store.close()
    assert not unindexed_store_files(local_archive)


def test_small_pdus_and_mixed_messages_on_one_association(
    local_archive: Archive, tmp_path: Path
) -> None:
    """A peer limited to 4 KB PDUs: each object arrives in dozens of fragments, between
    C-ECHOs, and is stored byte for byte."""
    files = [
        write(make_dataset(rows=64 + 16 * i, columns=64), tmp_path / f"{i}.dcm") for i in range(3)
    ]
    with running(local_archive, dimse_max_pdu=4096) as endpoint:
        assoc = associate(
            endpoint,
            [
                build_context(CTImageStorage, [ExplicitVRLittleEndian]),
                build_context(Verification),
            ],
        )
        assert assoc.is_established
        for path in files:
            assert int(assoc.send_c_echo().Status) == 0
            assert int(assoc.send_c_store(path).Status) == 0
        assoc.release()
    for path in files:
        ds = pydicom_read(path)
        assert stored_data_set(local_archive, ds.SOPInstanceUID) == data_set_bytes(path)
    assert not received_leftovers(local_archive)


def pydicom_read(path: Path) -> Any:
    import pydicom

    return pydicom.dcmread(path, stop_before_pixels=True)


def test_store_response_is_decoded_here(receiver: StoreReceiver) -> None:
    """The C-STORE-RSPs of our own sub-operations skip pynetdicom's decoding too."""
    command = encode_store_response(CTImageStorage, "1.2.3.11", 42, 0xB007, "coerced")
    slow, done = receiver.feed(pdv(CT_CONTEXT, 0x03, command))
    assert slow == []
    [(context_id, response)] = done
    assert context_id == CT_CONTEXT and isinstance(response, C_STORE)
    assert (response.MessageIDBeingRespondedTo, response.Status) == (42, 0xB007)
    assert response.AffectedSOPInstanceUID == "1.2.3.11"
    assert response.ErrorComment == "coerced"


def test_commands_written_directly_decode_as_the_standard_says() -> None:
    request = decode(BytesIO(encode_store_request(CTImageStorage, "1.2.3", 5, ("MOVER", 9))))
    assert request.CommandField == 0x0001 and request.MessageID == 5
    assert request.AffectedSOPClassUID == CTImageStorage
    assert request.AffectedSOPInstanceUID == "1.2.3"
    assert request.CommandDataSetType != 0x0101 and request.Priority == 0
    assert request.MoveOriginatorApplicationEntityTitle.strip() == "MOVER"
    assert request.MoveOriginatorMessageID == 9
    assert (
        request.CommandGroupLength
        == len(encode_store_request(CTImageStorage, "1.2.3", 5, ("MOVER", 9))) - 12
    )
    pending = decode(
        BytesIO(encode_pending_retrieve_response(0x8010, CTImageStorage, 7, (3, 2, 1, 0)))
    )
    assert (pending.CommandField, pending.MessageIDBeingRespondedTo, pending.Status) == (
        0x8010,
        7,
        0xFF00,
    )
    assert pending.CommandDataSetType == 0x0101
    assert (
        pending.NumberOfRemainingSuboperations,
        pending.NumberOfCompletedSuboperations,
        pending.NumberOfFailedSuboperations,
        pending.NumberOfWarningSuboperations,
    ) == (3, 2, 1, 0)

"""Sending a stored object as a C-STORE sub-operation, byte for byte.

The stored Part 10 file is read from the object store in chunks; its File Meta Information
is skipped (it never travels on the network, PS3.10 7.1) and the data set bytes go out as
P-DATA fragments (PS3.8 9.3.5, message control header PS3.8 E.2) without being decoded, so
the peer receives exactly what the archive keeps. Memory stays bounded: fragments are queued
only a few at a time. An object the peer cannot take in its stored transfer syntax is
transcoded in memory first (vna.transcode), which is the only case that decodes it.
"""

from __future__ import annotations

import contextlib
import itertools
import struct
import time
from collections.abc import Iterable, Iterator
from typing import Any

from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu_primitives import P_DATA

from dimse.dul import WakingDUL, pdata_pdu
from vna.archive import Archive
from vna.errors import StorageError
from vna.retrieve import InstanceRef, iter_instance

#: Fragment size when the peer sets no PDU limit.
UNLIMITED_FRAGMENT = 1 << 20
#: P-DATA primitives queued for the DUL thread before the sender waits.
QUEUE_DEPTH = 8
MEDIUM = 0x0000  # Priority (PS3.7 9.1.1.1)
#: Explicit VRs with a 4-byte length after 2 reserved bytes (PS3.5 7.1.2).
EXPLICIT_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)


class SendFailed(Exception):
    """The association broke (or the peer did not answer) during a sub-operation."""


def meta_length(head: bytes) -> int:
    """Offset of the first data set byte of a stored file: after the preamble, ``DICM`` and
    the group 0002 elements, which are always Explicit VR Little Endian (PS3.10 7.1). A file
    imported as a bare data set has neither and starts with its data set.

    Raises:
        StorageError: a File Meta Information group longer than the head.
    """
    pos = 132 if head[128:132] == b"DICM" else 0
    while pos + 8 <= len(head):
        group = struct.unpack_from("<H", head, pos)[0]
        if group != 0x0002:
            return pos
        vr = head[pos + 4 : pos + 6]
        if vr in EXPLICIT_LONG_VRS:
            if pos + 12 > len(head):
                break
            length = struct.unpack_from("<I", head, pos + 8)[0]
            pos += 12 + length
        else:
            length = struct.unpack_from("<H", head, pos + 6)[0]
            pos += 8 + length
    if pos >= len(head):
        raise StorageError("the File Meta Information of the stored object is too long")
    return pos


def stored_data_set(archive: Archive, ref: InstanceRef) -> Iterator[bytes]:
    """The data set bytes of a stored object (everything after its File Meta Information).

    Raises:
        StorageError: the object is missing or malformed.
    """
    chunks = iter_instance(archive, ref)
    head = b""
    for chunk in chunks:
        head += chunk
        if len(head) >= 64 * 1024:
            break
    start = meta_length(head)
    yield head[start:]
    yield from chunks


def without_meta(part10: bytes) -> bytes:
    """The data set of a Part 10 file held in memory."""
    return part10[meta_length(part10[: 64 * 1024]) :]


@contextlib.contextmanager
def reactor_paused(assoc: Any) -> Iterator[None]:
    """Hold pynetdicom's reactor of a requested association while we exchange messages on it
    ourselves, as its own send_* methods do (else it could take our responses)."""
    assoc._reactor_checkpoint.clear()
    try:
        deadline = time.monotonic() + 5
        while not assoc._is_paused and assoc.is_established and time.monotonic() < deadline:
            time.sleep(0.0001)
        yield
    finally:
        assoc._reactor_checkpoint.set()


def _fragments(chunks: Iterable[bytes], size: int) -> Iterator[tuple[bytes, bool]]:
    """``(fragment, is_last)`` pairs of at most ``size`` (even) bytes; the last is never
    empty unless the data set is. A data set of odd length (found in the wild for deflated
    ones) gets the trailing NUL that PS3.5 A.5 requires, since peers refuse odd fragments."""
    size -= size % 2
    buffer = bytearray()
    for chunk in chunks:
        buffer += chunk
        while len(buffer) > size:
            yield bytes(buffer[:size]), False
            del buffer[:size]
    if len(buffer) % 2:
        buffer += b"\x00"
    yield bytes(buffer), True


def _send_pdata(assoc: Any, cx_id: int, header: bytes, data: bytes) -> None:
    _send_pdvs(assoc, [(cx_id, header + data)])


def send_c_store(
    assoc: Any,
    cx_id: int,
    sop_class: str,
    sop_instance: str,
    data_set: Iterable[bytes],
    message_id: int,
    originator: tuple[str, int] | None = None,
) -> int:
    """Send one C-STORE-RQ with an encoded data set and return the response's status.

    ``originator`` is the Move Originator AE Title and Message ID of a C-MOVE sub-operation
    (PS3.7 9.1.1.1). The caller holds the reactor (reactor_paused or a service loop).

    Raises:
        SendFailed: the association ended or the peer did not answer in time.
    """
    if not assoc.is_established:
        raise SendFailed("the association is not established")
    command = encode_store_request(sop_class, sop_instance, message_id, originator)
    max_pdu = int(assoc.dimse.maximum_pdu_size or 0)
    limit = max_pdu if max_pdu else UNLIMITED_FRAGMENT
    chunks = iter(data_set)
    head = bytearray()
    complete = True
    for chunk in chunks:
        head += chunk
        if len(head) + len(command) + 18 > limit:
            complete = False
            break
    if complete:  # a small object: command and data set in one PDU, one write
        send_messages(assoc, cx_id, [(command, bytes(head))])
    else:
        send_message(assoc, cx_id, command, None)
        size = max_pdu - 6 if max_pdu else UNLIMITED_FRAGMENT
        for fragment, last in _fragments(itertools.chain([bytes(head)], chunks), size):
            _send_pdata(assoc, cx_id, b"\x02" if last else b"\x00", fragment)
    while True:
        _cx, rsp = assoc.dimse.get_msg(block=True)
        if rsp is None:
            assoc.abort()
            raise SendFailed("no C-STORE response within the DIMSE timeout")
        if isinstance(rsp, C_STORE) and rsp.MessageIDBeingRespondedTo == message_id:
            return int(rsp.Status) if rsp.Status is not None else 0xC000


def _command_element(tag: int, value: bytes) -> bytes:
    """One command set element: always Implicit VR Little Endian (PS3.7 6.3.1)."""
    if len(value) % 2:
        value += b"\x00" if tag in (0x00000002, 0x00001000) else b" "
    return struct.pack("<HHI", 0x0000, tag & 0xFFFF, len(value)) + value


def encode_find_response(
    sop_class: str, message_id: int, status_code: int, has_identifier: bool, comment: str = ""
) -> bytes:
    """A C-FIND-RSP command set (PS3.7 9.3.2.2), written directly: pynetdicom builds it
    through pydicom, which costs more than answering a query from the index."""
    body = b"".join(
        [
            _command_element(0x00000002, sop_class.encode("ascii")),
            _command_element(0x00000100, struct.pack("<H", 0x8020)),
            _command_element(0x00000120, struct.pack("<H", message_id)),
            _command_element(0x00000800, struct.pack("<H", 0x0001 if has_identifier else 0x0101)),
            _command_element(0x00000900, struct.pack("<H", status_code)),
            _command_element(0x00000902, comment[:64].encode("ascii", "replace"))
            if comment
            else b"",
        ]
    )
    return _command_element(0x00000000, struct.pack("<I", len(body))) + body


def encode_store_request(
    sop_class: str, sop_instance: str, message_id: int, originator: tuple[str, int] | None
) -> bytes:
    """A C-STORE-RQ command set (PS3.7 9.3.1.1) announcing a data set, written directly."""
    elements = [
        _command_element(0x00000002, sop_class.encode("ascii")),
        _command_element(0x00000100, struct.pack("<H", 0x0001)),
        _command_element(0x00000110, struct.pack("<H", message_id)),
        _command_element(0x00000700, struct.pack("<H", MEDIUM)),
        _command_element(0x00000800, struct.pack("<H", 0x0001)),  # a data set follows
        _command_element(0x00001000, sop_instance.encode("ascii")),
    ]
    if originator is not None:  # Move Originator AE Title and Message ID
        elements.append(_command_element(0x00001030, originator[0][:16].encode("ascii")))
        elements.append(_command_element(0x00001031, struct.pack("<H", originator[1])))
    body = b"".join(elements)
    return _command_element(0x00000000, struct.pack("<I", len(body))) + body


def encode_pending_retrieve_response(
    command_field: int,
    sop_class: str,
    message_id: int,
    counts: tuple[int, int, int, int],
) -> bytes:
    """A Pending C-MOVE-RSP or C-GET-RSP (PS3.7 9.3.4.2, 9.3.3.2) with the Number of
    Remaining, Completed, Failed and Warning Sub-operations, written directly."""
    remaining, completed, failed, warning = counts
    body = b"".join(
        [
            _command_element(0x00000002, sop_class.encode("ascii")),
            _command_element(0x00000100, struct.pack("<H", command_field)),
            _command_element(0x00000120, struct.pack("<H", message_id)),
            _command_element(0x00000800, struct.pack("<H", 0x0101)),
            _command_element(0x00000900, struct.pack("<H", 0xFF00)),
            _command_element(0x00001020, struct.pack("<H", remaining)),
            _command_element(0x00001021, struct.pack("<H", completed)),
            _command_element(0x00001022, struct.pack("<H", failed)),
            _command_element(0x00001023, struct.pack("<H", warning)),
        ]
    )
    return _command_element(0x00000000, struct.pack("<I", len(body))) + body


def encode_store_response(
    sop_class: str, sop_instance: str, message_id: int, status_code: int, comment: str = ""
) -> bytes:
    """A C-STORE-RSP command set (PS3.7 9.3.1.2), written directly like the C-FIND one."""
    body = b"".join(
        [
            _command_element(0x00000002, sop_class.encode("ascii")),
            _command_element(0x00000100, struct.pack("<H", 0x8001)),
            _command_element(0x00000120, struct.pack("<H", message_id)),
            _command_element(0x00000800, struct.pack("<H", 0x0101)),
            _command_element(0x00000900, struct.pack("<H", status_code)),
            _command_element(0x00000902, comment[:64].encode("ascii", "replace"))
            if comment
            else b"",
            _command_element(0x00001000, sop_instance.encode("ascii")),
        ]
    )
    return _command_element(0x00000000, struct.pack("<I", len(body))) + body


def send_messages(assoc: Any, cx_id: int, messages: Iterable[tuple[bytes, bytes | None]]) -> None:
    """Send several messages (command set, data set), each in one P-DATA-TF PDU when the
    peer's maximum PDU length allows (a PDU may carry several PDVs, PS3.8 9.3.5): each PDU
    costs a turn of the DUL thread. A value too large for one PDU is fragmented as
    :func:`send_message` does."""
    max_pdu = int(assoc.dimse.maximum_pdu_size or 0)
    limit = max_pdu if max_pdu else UNLIMITED_FRAGMENT
    pending: list[tuple[int, bytes]] = []
    used = 0

    def flush() -> None:
        nonlocal pending, used
        if pending:
            _send_pdvs(assoc, pending)
            pending, used = [], 0

    for command, data_set in messages:
        values = [(b"\x03", command)] + ([(b"\x02", data_set)] if data_set is not None else [])
        sizes = [6 + len(value) + len(value) % 2 for _header, value in values]
        if max(sizes) > limit:
            flush()
            send_message(assoc, cx_id, command, data_set)
            continue
        for (header, value), size in zip(values, sizes, strict=True):
            if used + size > limit:
                flush()
            padded = value + b"\x00" if len(value) % 2 else value
            pending.append((cx_id, header + padded))
            used += size
        # a PDU carries fragments of one message only: some peers (dcmtk) read no further
        # than the end of the message in a PDU
        flush()


def _send_pdvs(assoc: Any, values: list[tuple[int, bytes]]) -> None:
    dul = assoc.dul
    if isinstance(dul, WakingDUL):
        try:
            if dul.send_direct(pdata_pdu(values)):
                return
        except OSError as exc:
            raise SendFailed(f"the connection failed while sending: {exc}") from exc
    while assoc.dul.to_provider_queue.qsize() >= QUEUE_DEPTH:
        if not assoc.is_established:
            raise SendFailed("the association ended while sending")
        time.sleep(0.0002)
    pdata = P_DATA()
    pdata.presentation_data_value_list.extend(values)
    assoc.dul.send_pdu(pdata)


def send_message(assoc: Any, cx_id: int, command: bytes, data_set: bytes | None) -> None:
    """Send an encoded command set and data set as P-DATA fragments (PS3.8 E.2 headers:
    bit 0 command, bit 1 last fragment). The caller holds the association's reactor."""
    max_pdu = int(assoc.dimse.maximum_pdu_size or 0)
    size = max_pdu - 6 if max_pdu else UNLIMITED_FRAGMENT
    for fragment, last in _fragments([command], size):
        _send_pdata(assoc, cx_id, b"\x03" if last else b"\x01", fragment)
    if data_set is not None:
        for fragment, last in _fragments([data_set], size):
            _send_pdata(assoc, cx_id, b"\x02" if last else b"\x00", fragment)

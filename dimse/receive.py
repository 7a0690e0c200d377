"""C-STORE requests received straight from the socket into the archive's spool.

pynetdicom turns every P-DATA-TF PDU into a primitive, runs it through the state machine,
reassembles the message in memory or a temporary file with a File Meta Information of its
own, decodes the command set with pydicom and hands the request to a handler thread, which
then copies the data set into the archive's spool. For a small object that is most of the
cost of a C-STORE. Here the DUL thread looks at each P-DATA-TF PDU itself (PS3.8 9.3.5):
the fragments of a C-STORE-RQ data set (PS3.7 9.3.1.1) are written, as they arrive, after
the archive's own File Meta Information, and the association thread gets one finished,
hashed spool file to ingest. The C-STORE-RSPs a peer sends back during our C-GET or C-MOVE
sub-operations are decoded here too (a handful of command elements), for the same reason.
Every other message (C-ECHO, C-FIND, C-MOVE, C-GET, N-ACTION, anything malformed) is handed
to pynetdicom unchanged.
"""

from __future__ import annotations

import contextlib
import logging
import struct
import threading
from dataclasses import dataclass, field
from typing import Any

from pynetdicom.dimse_primitives import C_STORE

from storage import FilesystemStore, StoreError
from vna.archive import Archive
from vna.errors import VnaError
from vna.ingest import Spool, new_storage_key, part10_meta

log = logging.getLogger(__name__)

#: Message control header bits (PS3.8 E.2).
COMMAND_BIT = 0x01
LAST_BIT = 0x02
C_STORE_RQ = 0x0001  # Command Field (PS3.7 E.1)
C_STORE_RSP = 0x8001
NO_DATA_SET = 0x0101  # Command Data Set Type: no data set follows
TAG_AFFECTED_SOP_CLASS = 0x0002
TAG_COMMAND_FIELD = 0x0100
TAG_MESSAGE_ID = 0x0110
TAG_MESSAGE_ID_RESPONDED = 0x0120
TAG_STATUS = 0x0900
TAG_ERROR_COMMENT = 0x0902
TAG_PRIORITY = 0x0700
TAG_DATA_SET_TYPE = 0x0800
TAG_AFFECTED_SOP_INSTANCE = 0x1000

IDLE, COMMAND, DATA, SLOW, PASSTHROUGH = range(5)


class ProtocolError(Exception):
    """The peer broke the fragment rules of PS3.8 E.2 inside a message (the association is
    aborted, as pynetdicom does for an invalid PDU)."""


@dataclass
class ReceivedStore:
    """A C-STORE request whose data set is in the spool, for the association thread."""

    context_id: int
    message_id: int
    sop_class: str
    sop_instance: str
    spool: Spool
    sha256: str = ""
    error: VnaError | None = None  # the spool failed (disk full): answer with its status
    taken: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self) -> bool:
        """Claim the spooled file for ingest; False when the association already ended and
        the file was removed."""
        with self.lock:
            if self.taken:
                return False
            self.taken = True
            return True

    def abandon(self) -> None:
        """Remove the spooled file unless ingest claimed it."""
        with self.lock:
            if self.taken:
                return
            self.taken = True
        self.spool.discard()


def new_spool(archive: Archive) -> Spool:
    """The file a C-STORE data set is received into: in a filesystem store, a file reserved
    under the object's future key (storage/reserve.py), so that ingest neither renames it
    nor flushes its folder; else (or when reserving fails) a file in the spool folder.

    Raises:
        OutOfResources: no file could be created.
    """
    store = archive.store
    if isinstance(store, FilesystemStore):
        try:
            path = store.reserve(new_storage_key)
        except StoreError as exc:
            log.warning("cannot reserve object files, receiving into the spool: %s", exc)
        else:
            try:
                return Spool(archive, reserved=path)
            except VnaError:
                store.unreserve(path, used=True)
    return Spool(archive)


def parse_command(data: bytes) -> dict[int, bytes] | None:
    """The elements of a command set (group 0000, Implicit VR Little Endian, PS3.7 6.3.1)
    by element number, or None when it is not one."""
    out: dict[int, bytes] = {}
    pos, end = 0, len(data)
    while pos < end:
        if pos + 8 > end:
            return None
        group, element, length = struct.unpack_from("<HHI", data, pos)
        pos += 8
        if group != 0x0000 or pos + length > end:
            return None
        out[element] = data[pos : pos + length]
        pos += length
    return out


def _us(value: bytes | None) -> int | None:
    return struct.unpack("<H", value)[0] if value is not None and len(value) == 2 else None


def _uid(value: bytes | None) -> str:
    return (value or b"").decode("ascii", "replace").rstrip("\x00 ").strip()


def _store_response(command: dict[int, bytes]) -> C_STORE | None:
    """A C-STORE-RSP (PS3.7 9.3.1.2) as pynetdicom's primitive, or None for anything else
    (or a response carrying more than pynetdicom's reading would keep simple)."""
    if _us(command.get(TAG_COMMAND_FIELD)) != C_STORE_RSP:
        return None
    if _us(command.get(TAG_DATA_SET_TYPE)) != NO_DATA_SET:
        return None
    message_id = _us(command.get(TAG_MESSAGE_ID_RESPONDED))
    code = _us(command.get(TAG_STATUS))
    if message_id is None or code is None:
        return None
    response: Any = C_STORE()
    response.MessageIDBeingRespondedTo = message_id
    response.Status = code
    sop_class = _uid(command.get(TAG_AFFECTED_SOP_CLASS))
    sop_instance = _uid(command.get(TAG_AFFECTED_SOP_INSTANCE))
    if sop_class:
        response.AffectedSOPClassUID = sop_class
    if sop_instance:
        response.AffectedSOPInstanceUID = sop_instance
    comment = command.get(TAG_ERROR_COMMENT)
    if comment:
        response.ErrorComment = comment.decode("ascii", "replace").strip(" \x00")[:64]
    return response


class StoreReceiver:
    """Routes the PDVs of received P-DATA-TF PDUs: C-STORE data sets to the spool, the
    rest to pynetdicom. One per association; used by the DUL thread only."""

    def __init__(self, assoc: Any, archive: Archive | None, calling_ae: str) -> None:
        self.assoc = assoc
        self.archive = archive  # None: requests are not spooled (an association we opened)
        self.calling_ae = calling_ae
        self._state = IDLE
        self._command = bytearray()
        self._held: list[bytes] = []  # raw PDV items of the command being received
        self._current: ReceivedStore | None = None
        self._handed: list[ReceivedStore] = []
        self._ready: Spool | None = None  # created ahead for the next C-STORE (see prepare)
        self._answered = 0  # C-STOREs answered on this association

    def feed(self, body: bytes | bytearray) -> tuple[list[bytes], list[tuple[int, Any]]]:
        """Take the PDV items of one P-DATA-TF PDU (the bytes after its 6-byte header).

        Returns the raw PDV items pynetdicom must see (in order) and the messages completed
        by this PDU, as (presentation context ID, ReceivedStore or C_STORE response) for the
        association's message queue.

        Raises:
            ProtocolError: a fragment that cannot belong to the message being received.
        """
        slow: list[bytes] = []
        done: list[tuple[int, Any]] = []
        view = memoryview(body)
        pos, end = 0, len(body)
        while pos < end:
            if pos + 6 > end:
                raise ProtocolError("a PDV item runs past the end of its PDU")
            (length,) = struct.unpack_from(">I", body, pos)
            if length < 2 or pos + 4 + length > end:
                raise ProtocolError("a PDV item runs past the end of its PDU")
            context_id = body[pos + 4]
            header = body[pos + 5]
            value = view[pos + 6 : pos + 4 + length]
            item = view[pos : pos + 4 + length]
            pos += 4 + length
            if self._state == PASSTHROUGH:
                slow.append(bytes(item))
            elif self._state == SLOW:
                slow.append(bytes(item))
                if header & LAST_BIT and not header & COMMAND_BIT:
                    self._state = IDLE
            elif self._state == DATA:
                finished = self._data(context_id, header, value)
                if finished is not None:
                    done.append((context_id, finished))
            elif not header & COMMAND_BIT:  # a data fragment without its command
                self._state = PASSTHROUGH
                slow.extend(self._held)
                slow.append(bytes(item))
                self._held.clear()
            else:
                self._command += value
                self._held.append(bytes(item))
                self._state = COMMAND
                if header & LAST_BIT:
                    slow.extend(self._decide(context_id, done))
        return slow, done

    def _decide(self, context_id: int, done: list[tuple[int, Any]]) -> list[bytes]:
        """The command is complete: start spooling a C-STORE, decode a C-STORE response,
        or return its PDVs for pynetdicom."""
        command = parse_command(bytes(self._command))
        held = self._held
        self._command = bytearray()
        self._held = []
        response = _store_response(command) if command is not None else None
        if response is not None:
            done.append((context_id, response))
            self._state = IDLE
            return []
        started = self._start(command, context_id) if command is not None else None
        if started is not None:
            self._current = started
            self._state = DATA
            return []
        if command is None:
            self._state = PASSTHROUGH  # pynetdicom judges it; we no longer track messages
        elif _us(command.get(TAG_DATA_SET_TYPE)) == NO_DATA_SET:
            self._state = IDLE
        else:
            self._state = SLOW
        return held

    def _start(self, command: dict[int, bytes], context_id: int) -> ReceivedStore | None:
        """A ReceivedStore for a well-formed C-STORE-RQ on a storage context we accepted as
        SCP, else None (pynetdicom serves, or refuses, the others)."""
        if self.archive is None or _us(command.get(TAG_COMMAND_FIELD)) != C_STORE_RQ:
            return None
        data_set_type = _us(command.get(TAG_DATA_SET_TYPE))
        message_id = _us(command.get(TAG_MESSAGE_ID))
        sop_class = _uid(command.get(TAG_AFFECTED_SOP_CLASS))
        sop_instance = _uid(command.get(TAG_AFFECTED_SOP_INSTANCE))
        if data_set_type in (None, NO_DATA_SET) or message_id is None:
            return None
        if not sop_class or not sop_instance or TAG_PRIORITY not in command:
            return None
        context = self.assoc._accepted_cx.get(context_id)
        if context is None or context.abstract_syntax != sop_class or context.as_scp is False:
            return None
        transfer_syntax = str(context.transfer_syntax[0])
        spool, self._ready = self._ready, None
        if spool is None:
            try:
                spool = new_spool(self.archive)
            except VnaError:
                return None  # pynetdicom's path answers it (0xA700)
        received = ReceivedStore(context_id, message_id, sop_class, sop_instance, spool)
        try:
            spool.write(part10_meta(sop_class, sop_instance, transfer_syntax, self.calling_ae))
        except VnaError as exc:
            received.error = exc
            spool.discard()
        return received

    def _data(self, context_id: int, header: int, value: memoryview) -> ReceivedStore | None:
        current = self._current
        assert current is not None
        if header & COMMAND_BIT or context_id != current.context_id:
            raise ProtocolError(
                "a C-STORE data set was interrupted by another message or presentation context"
            )
        if current.error is None:
            try:
                current.spool.write(value)
            except VnaError as exc:  # the spool disk is full: read on, answer 0xA700
                current.error = exc
                current.spool.discard()
        if not header & LAST_BIT:
            return None
        self._current = None
        self._state = IDLE
        if current.error is None:
            try:
                current.sha256 = current.spool.finish()
            except VnaError as exc:
                current.error = exc
                current.spool.discard()
        self._handed = [r for r in self._handed if not r.taken]
        self._handed.append(current)
        return current

    def prepare(self) -> None:
        """A C-STORE was answered: create the next one's spool file now, while the peer reads
        the answer and sends its next request. Creating a file is a large share of a small
        object's handling, and it is then off the path the peer waits on. Not after the
        first answer: many modalities send one object per association, and the file would
        only be created to be removed."""
        self._answered += 1
        if self.archive is not None and self._ready is None and self._answered > 1:
            with contextlib.suppress(VnaError):  # the next C-STORE tries again and answers
                self._ready = new_spool(self.archive)

    def drop_ready(self) -> None:
        """Remove the spool file created ahead (the association is ending)."""
        if self._ready is not None:
            self._ready.discard()
            self._ready = None

    def close(self) -> None:
        """The connection ended: remove what was received but not ingested."""
        self.drop_ready()
        if self._current is not None:
            self._current.spool.discard()
            self._current = None
        for received in self._handed:
            received.abandon()
        self._handed = []

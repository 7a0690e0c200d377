"""A minimal DIMSE client for benchmarks: raw sockets, no per-response decoding beyond the
command's Status, so that the client is not what is measured (pynetdicom's own client costs
~0.3 ms of CPU per C-FIND response)."""

from __future__ import annotations

import socket
import struct
import time
from io import BytesIO

from pydicom.dataset import Dataset
from pynetdicom.dimse_messages import C_CANCEL_RQ, C_FIND_RQ
from pynetdicom.dimse_primitives import C_CANCEL, C_FIND
from pynetdicom.pdu import P_DATA_TF

from vna.cli.scu import STUDY_ROOT_FIND

APPLICATION_CONTEXT = b"1.2.840.10008.3.1.1.1"
EXPLICIT_LE = "1.2.840.10008.1.2.1"


def _item(kind: int, body: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(body)) + body


def _uid(uid: str) -> bytes:
    data = uid.encode()
    return data + (b"\x00" if len(data) % 2 else b"")


def association_latency(host: str, port: int, called: str, classes: list[str], n: int) -> float:
    """Median ms from sending an A-ASSOCIATE-RQ proposing ``classes`` (three transfer
    syntaxes each, as storescu proposes by default) to receiving the A-ASSOCIATE-AC; each
    association is released before the next."""
    syntaxes = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.2"]
    items = b""
    for number, uid in enumerate(classes):
        context = bytes([2 * number + 1, 0, 0, 0]) + _item(0x30, _uid(uid))
        context += b"".join(_item(0x40, _uid(ts)) for ts in syntaxes)
        items += _item(0x20, context)
    user = _item(0x51, struct.pack(">I", 0)) + _item(0x52, _uid("1.2.3.4.5.6.7"))
    body = struct.pack(">HH", 1, 0) + called.ljust(16).encode() + b"BENCH".ljust(16)
    body += b"\x00" * 32 + _item(0x10, APPLICATION_CONTEXT) + items + _item(0x50, user)
    request = struct.pack(">BBI", 1, 0, len(body)) + body
    times = []
    for _ in range(n):
        sock = socket.create_connection((host, port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        started = time.perf_counter()
        sock.sendall(request)
        kind, _r, length = struct.unpack(">BBI", _recv_all(sock, 6))
        _recv_all(sock, length)
        times.append((time.perf_counter() - started) * 1000)
        if kind != 2:
            raise RuntimeError(f"association not accepted (PDU type {kind})")
        sock.sendall(struct.pack(">BBIxxxx", 5, 0, 4))  # A-RELEASE-RQ
        _recv_all(sock, 10)  # A-RELEASE-RP
        sock.close()
    times.sort()
    return times[len(times) // 2]


def _recv_all(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return bytes(data)


class RawScu:
    """One association with a single Study Root FIND context (ID 1)."""

    def __init__(self, host: str, port: int, called: str, calling: str = "BENCH") -> None:
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        context = bytes([1, 0, 0, 0]) + _item(0x30, _uid(STUDY_ROOT_FIND))
        context += _item(0x40, _uid(EXPLICIT_LE))
        user = _item(0x51, struct.pack(">I", 0)) + _item(0x52, _uid("1.2.3.4.5.6.7"))
        body = struct.pack(">HH", 1, 0) + called.ljust(16).encode() + calling.ljust(16).encode()
        body += b"\x00" * 32 + _item(0x10, APPLICATION_CONTEXT) + _item(0x20, context)
        body += _item(0x50, user)
        self.sock.sendall(struct.pack(">BBI", 1, 0, len(body)) + body)
        kind, _ = self._pdu()
        if kind != 2:
            raise RuntimeError(f"association not accepted (PDU type {kind})")
        self.message_id = 0

    def _recv(self, n: int) -> bytes:
        return _recv_all(self.sock, n)

    def _pdu(self) -> tuple[int, bytes]:
        kind, _r, length = struct.unpack(">BBI", self._recv(6))
        return kind, self._recv(length)

    @staticmethod
    def _encode(message: object) -> bytes:
        out = b""
        for pdata in message.encode_msg(1, 0):  # type: ignore[attr-defined]
            pdu = P_DATA_TF()
            pdu.from_primitive(pdata)
            out += pdu.encode()
        return out

    def find_request(self, identifier: Dataset) -> tuple[int, bytes]:
        """An encoded C-FIND-RQ (and its message ID) for this association."""
        from dimse.identifiers import encode

        self.message_id += 1
        req = C_FIND()
        req.MessageID = self.message_id
        req.AffectedSOPClassUID = STUDY_ROOT_FIND
        req.Priority = 0
        req.Identifier = BytesIO(encode(identifier, EXPLICIT_LE))
        message = C_FIND_RQ()
        message.primitive_to_message(req)
        return self.message_id, self._encode(message)

    def cancel_request(self, message_id: int) -> bytes:
        req = C_CANCEL()
        req.MessageIDBeingRespondedTo = message_id
        message = C_CANCEL_RQ()
        message.primitive_to_message(req)
        return self._encode(message)

    def find(
        self, identifier: Dataset, cancel_after: int | None = None
    ) -> tuple[int, float, float, int]:
        """(pending responses, seconds to the first response, seconds to the final one,
        final status)."""
        message_id, request = self.find_request(identifier)
        start = time.perf_counter()
        self.sock.sendall(request)
        pending, first, command = 0, 0.0, b""
        while True:
            kind, body = self._pdu()
            if kind != 4:
                raise RuntimeError(f"unexpected PDU {kind}")
            pos = 0
            while pos < len(body):
                length = struct.unpack_from(">I", body, pos)[0]
                header = body[pos + 5]
                value = body[pos + 6 : pos + 4 + length]
                pos += 4 + length
                if not header & 1:
                    continue  # a data set fragment
                command += value
                if not header & 2:
                    continue
                status = _status(command)
                command = b""
                if status in (0xFF00, 0xFF01):
                    pending += 1
                    if pending == 1:
                        first = time.perf_counter() - start
                    if cancel_after is not None and pending == cancel_after:
                        self.sock.sendall(self.cancel_request(message_id))
                    continue
                return pending, first, time.perf_counter() - start, status

    def close(self) -> None:
        self.sock.sendall(struct.pack(">BBI", 5, 0, 4) + b"\x00" * 4)
        try:
            self._pdu()
        finally:
            self.sock.close()


def _status(command: bytes) -> int:
    pos = 0
    while pos + 8 <= len(command):
        group, element, length = struct.unpack_from("<HHI", command, pos)
        if (group, element) == (0x0000, 0x0900):
            return int(struct.unpack_from("<H", command, pos + 8)[0])
        pos += 8 + length
    return -1

"""A DUL reactor that waits on the socket instead of polling it.

pynetdicom's DUL thread checks its socket and queues in a loop that sleeps a millisecond
whenever there is nothing to do, so every request waits up to a millisecond before it is
read and every response up to another before it is sent — several milliseconds per
C-FIND or C-STORE, more on a busy machine. This reactor does the same work per turn (PS3.8
state machine untouched) but, when idle, blocks in ``select`` until the peer sends data or
the association queues a primitive (a self-pipe wakes it). The wait is bounded so the ARTIM
and idle timers are still checked.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import selectors
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.utils import make_target

from dimse.receive import ProtocolError, ReceivedStore, StoreReceiver

log = logging.getLogger(__name__)

#: A-RELEASE-RQ received, A-ABORT received, connection closed (PS3.8 Table 9-10).
_ENDING_EVENTS = frozenset({"Evt12", "Evt16", "Evt17"})
#: Longest idle wait: how late an ARTIM or network timeout may be noticed.
IDLE_WAIT = 0.05


#: Linux's TCP_QUICKACK (absent elsewhere).
_TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", None)


def _quick_ack(sock: socket.socket | None) -> None:
    """Acknowledge what arrives at once instead of after the delayed-ACK timer (~40 ms).

    A peer that does not set TCP_NODELAY (dcmtk's tools unless ``TCP_NODELAY=1``, many
    modality stacks) sends a small command set and its small data set as two writes; Nagle's
    algorithm holds the second until the first is acknowledged, and a delayed ACK made every
    small C-STORE wait 40 ms. The kernel clears the flag after use, so it is set before each
    wait for data.
    """
    if sock is not None and _TCP_QUICKACK is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)


#: PDU types of PS3.8 9.3 (A-ASSOCIATE-RQ … A-ABORT).
_PDU_TYPES = frozenset(range(0x01, 0x08))


def pdata_pdu(values: list[tuple[int, bytes]]) -> bytes:
    """An encoded P-DATA-TF PDU (PS3.8 9.3.5): PDV items of (context ID, header + data)."""
    items = b"".join(struct.pack(">IB", len(value) + 1, cx_id) + value for cx_id, value in values)
    return struct.pack(">BBI", 0x04, 0x00, len(items)) + items


def _recv_exactly(sock: socket.socket, size: int) -> bytes | bytearray:
    """``size`` bytes from the socket (blocking, within its timeout).

    Raises:
        EOFError: the peer closed the connection first.
        OSError: the connection failed or timed out.
    """
    if size == 0:
        return b""
    data = sock.recv(size)
    if len(data) == size:
        return data
    if not data:
        raise EOFError(f"0 of {size} bytes received")
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = len(data)
    view[:got] = data
    while got < size:
        count = sock.recv_into(view[got:], size - got)
        if count == 0:
            raise EOFError(f"{got} of {size} bytes received")
        got += count
    return buffer


class WakingDUL(DULServiceProvider):
    """DULServiceProvider whose reactor sleeps in ``select``; see the module docstring.

    Installed on a fresh association before it starts (``install``)."""

    _wake_r: socket.socket
    _wake_w: socket.socket
    #: Held while a PDU is written, so PDUs sent from two threads never interleave.
    send_lock: threading.RLock
    _queued: int  # primitives queued for sending
    _sent: int  # PDUs the DUL thread has written
    _direct: bool  # direct writes allowed (see send_direct)
    _readable: bool  # the last wait found data on the connection, not read yet
    #: Builds the association's StoreReceiver once it is established (None: pynetdicom
    #: receives every message itself).
    receiver_factory: Callable[[Any], StoreReceiver] | None
    _receiver: StoreReceiver | None
    #: Ingests a spooled C-STORE on this thread and returns the response command set (None:
    #: no answer is due); unset, requests go to the association's message queue.
    store_handler: Callable[[Any, ReceivedStore], bytes | None] | None

    @classmethod
    def install(cls, dul: DULServiceProvider) -> None:
        """Turn a pynetdicom DUL that has not started yet into a WakingDUL."""
        dul.__class__ = cls
        woken = dul  # typed view
        assert isinstance(woken, WakingDUL)
        woken._wake_r, woken._wake_w = socket.socketpair()
        woken._wake_r.setblocking(False)
        woken._wake_w.setblocking(False)
        woken.send_lock = threading.RLock()
        woken._queued = 0
        woken._sent = 0
        woken._direct = True
        woken._readable = False
        woken.receiver_factory = None
        woken._receiver = None
        woken.store_handler = None
        # pynetdicom bound the thread's target to its own reactor when it built the DUL
        woken._target = make_target(woken.run_reactor)  # type: ignore[attr-defined]

    def _send(self, pdu: Any) -> None:
        with self.send_lock:
            super()._send(pdu)
            self._sent += 1
        # sending puts the connection back into delayed-ACK ("interactive") mode
        _quick_ack(self._raw_socket())

    def send_direct(self, pdu: bytes) -> bool:
        """Write an encoded P-DATA-TF PDU from the association's own thread, skipping the
        hand-over to the DUL thread (one thread switch per PDU is most of the cost of a
        streamed C-FIND answer). Only once every primitive queued earlier has been sent, so
        the order on the wire is kept; False when that does not happen at once (then the
        caller queues the PDU as usual).

        Raises:
            OSError: the connection failed (the state machine is told, as pynetdicom does).
        """
        if not self._direct:
            return False
        deadline = time.monotonic() + 0.05
        while self._sent < self._queued:
            if time.monotonic() > deadline:
                self._direct = False  # something queued is not sent: stay on the queue
                return False
            time.sleep(0.0001)
        raw = self._raw_socket()
        if raw is None:
            return False
        with self.send_lock:
            if self._sent < self._queued:
                return False
            try:
                raw.sendall(pdu)
            except OSError:
                self.event_queue.put("Evt17")
                self._wake()
                raise
        _quick_ack(raw)
        self._idle_timer.restart()
        return True

    def _read_pdu_data(self) -> None:
        """Read one PDU (as pynetdicom does, but in whole reads rather than 4 KB ones);
        while the association is established, P-DATA-TF PDUs go through the StoreReceiver
        first, and only what it does not take reaches the state machine."""
        raw = self._raw_socket()
        if raw is None:
            super()._read_pdu_data()
            return
        try:
            head = _recv_exactly(raw, 6)
            pdu_type, _, length = struct.unpack(">BBL", head)
            if pdu_type not in _PDU_TYPES:
                log.error("unknown PDU type 0x%02X received", pdu_type)
                self.event_queue.put("Evt19")  # unrecognised PDU
                return
            body = _recv_exactly(raw, length)
        except (OSError, EOFError) as exc:
            log.debug("connection closed while reading a PDU: %s", exc)
            self.event_queue.put("Evt17")  # transport connection closed
            return
        if pdu_type != 0x04 and self._receiver is not None:
            self._receiver.drop_ready()  # a release or abort: no C-STORE follows
        if pdu_type == 0x04 and self.state_machine.current_state == "Sta6":
            passed = self._receive_data(body)
            if passed is None:
                return
            body = passed
            head = struct.pack(">BBL", 0x04, 0x00, len(body))
        try:
            pdu, event = self._decode_pdu(bytearray(head + body))
        except Exception as exc:
            log.error("unable to decode a received PDU: %s", exc)
            self.event_queue.put("Evt19")
            return
        self.event_queue.put(event)
        self._recv_pdu.put(pdu)

    def _receive_data(self, body: bytes | bytearray) -> bytes | bytearray | None:
        """Let the StoreReceiver take its PDVs; the PDV items left for pynetdicom, or None
        when nothing is left."""
        if self._receiver is None:
            if self.receiver_factory is None:
                return body
            self._receiver = self.receiver_factory(self.assoc)
        try:
            slow, done = self._receiver.feed(body)
        except ProtocolError as exc:
            log.warning("aborting the association: %s", exc)
            self.event_queue.put("Evt19")
            return None
        messages: Any = self.assoc.dimse.msg_queue
        for context_id, message in done:
            if isinstance(message, ReceivedStore) and self.store_handler is not None:
                # the peer waits for this answer before it sends anything else: ingesting
                # here saves two thread switches per object
                command = self.store_handler(self.assoc, message)
                if command is not None:
                    self._send_command(context_id, command)
                self._receiver.prepare()
                self._idle_timer.restart()
            else:
                messages.put((context_id, message))
        return b"".join(slow) if slow else None

    def _send_command(self, context_id: int, command: bytes) -> None:
        """Send a command set from the DUL thread itself, in order with whatever the
        association queued before (PS3.8 E.2: command fragments, the last flagged)."""
        limit = int(self.assoc.dimse.maximum_pdu_size or 0) or len(command) + 12
        size = max(2, limit - 12)
        values = [
            (b"\x03" if start + size >= len(command) else b"\x01") + command[start : start + size]
            for start in range(0, len(command), size)
        ]
        pdus = [pdata_pdu([(context_id, value)]) for value in values]
        raw = self._raw_socket()
        with self.send_lock:
            if raw is not None and self._sent == self._queued:
                try:
                    for pdu in pdus:
                        raw.sendall(pdu)
                except OSError:
                    self.event_queue.put("Evt17")
                    return
                _quick_ack(raw)
                return
        for value in values:  # behind queued primitives: queue it too
            pdata = P_DATA()
            pdata.presentation_data_value_list.append((context_id, value))
            self.send_pdu(pdata)

    def _raw_socket(self) -> socket.socket | None:
        """The TCP socket under pynetdicom's AssociationSocket, if it still has one."""
        return getattr(self.socket, "socket", None) if self.socket is not None else None

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # full pipe: it is awake already
            self._wake_w.send(b"\0")

    def send_pdu(self, primitive: Any) -> None:
        with self.send_lock:
            self._queued += 1
        super().send_pdu(primitive)
        self._wake()

    def kill_dul(self) -> None:
        super().kill_dul()
        self._wake()

    def run_reactor(self) -> None:
        """The DUL loop: one primitive or one PDU, then one state machine event, per turn."""
        self._idle_timer.start()
        selector = selectors.DefaultSelector()
        selector.register(self._wake_r, selectors.EVENT_READ)
        watched: socket.socket | None = None
        try:
            while True:
                if not self.assoc._dul_ready.is_set():
                    self.assoc._dul_ready.set()
                if self._kill_thread:
                    break
                if self.artim_timer.expired:
                    self.event_queue.put("Evt18")
                try:
                    if self._process_recv_primitive():
                        pass
                    elif self._is_transport_event():
                        self._idle_timer.restart()
                except Exception as exc:  # as pynetdicom: abort rather than hang
                    log.exception("DUL failure, aborting the association: %s", exc)
                    self._abort_hard()
                    return
                try:
                    event = self.event_queue.get(block=False)
                except queue.Empty:
                    watched = self._watch(selector, watched)
                    _quick_ack(watched)
                    for key, _mask in selector.select(IDLE_WAIT):
                        if key.fileobj is self._wake_r:
                            self._drain_wake()
                        else:
                            self._readable = True
                    continue
                self.state_machine.do_action(event)
                if event in _ENDING_EVENTS:
                    # the association's reactor looks for a release or abort only between
                    # messages: wake it so that the peer is answered at once
                    self.assoc.dimse.msg_queue.put((None, None))
        finally:
            selector.close()
            if self._receiver is not None:
                self._receiver.close()
            with contextlib.suppress(OSError):
                self._wake_r.close()
                self._wake_w.close()

    def _is_transport_event(self) -> bool:
        """Read a PDU when the last wait found data on the connection. pynetdicom asks the
        socket with a select() of its own on every turn; the wait already knows (a TLS
        socket, whose buffered data the wait cannot see, and the closing state Sta13 keep
        pynetdicom's way)."""
        raw = self._raw_socket()
        if raw is None or isinstance(raw, ssl.SSLSocket):
            return bool(super()._is_transport_event())
        if self.state_machine.current_state == "Sta13":
            self._readable = False
            return bool(super()._is_transport_event())
        if not self._readable:
            return False
        self._readable = False
        if not self._connected():
            return False
        self._read_pdu_data()
        return True

    def _connected(self) -> bool:
        """Whether the transport connection is up (a requested association's socket is
        connected by the state machine, after the DUL thread has started)."""
        return bool(self.socket is not None and getattr(self.socket, "_is_connected", False))

    def _watch(
        self, selector: selectors.BaseSelector, watched: socket.socket | None
    ) -> socket.socket | None:
        """Keep the selector on the association's current socket (it may have closed)."""
        raw = self._raw_socket()
        if raw is not None and (raw.fileno() == -1 or not self._connected()):
            raw = None  # closed, or not connected yet (it would read as hung up)
        if raw is watched:
            return watched
        if watched is not None:
            with contextlib.suppress(KeyError, ValueError, OSError):
                selector.unregister(watched)
        if raw is not None:
            try:
                selector.register(raw, selectors.EVENT_READ)
            except (ValueError, OSError):
                return None
        return raw

    def _drain_wake(self) -> None:
        with contextlib.suppress(OSError):
            while self._wake_r.recv(4096):
                pass

    def _abort_hard(self) -> None:
        abort = A_ABORT_RQ()
        abort.source = 0x02
        abort.reason_diagnostic = 0x00
        with contextlib.suppress(Exception):
            self.socket.send(abort.encode())  # type: ignore[union-attr]
        self.assoc.is_aborted = True
        self.assoc.is_established = False
        self.assoc._kill = True
        self._kill_thread = True

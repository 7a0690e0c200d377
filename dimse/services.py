"""What every DIMSE handler of one server shares: the archive, the settings, the AE."""

from __future__ import annotations

import contextlib
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.association import Association

from dimse.acceptance import CallingAePolicy, Supported
from vna.archive import Archive
from vna.config import Settings


@dataclass
class Services:
    """One server's collaborators, passed to handlers instead of module globals."""

    archive: Archive
    settings: Settings
    ae: AE  # the listener's AE; it also requests the associations the server opens
    policy: CallingAePolicy
    supported: dict[str, Supported] = field(default_factory=dict)

    @property
    def ae_title(self) -> str:
        return self.settings.ae_title.strip()

    def associate(self, host: str, port: int, ae_title: str, **kwargs: Any) -> Any:
        """Request an association to a peer (TCP_NODELAY, quick DUL polling: see
        _connection_opened)."""
        handlers = [*kwargs.pop("evt_handlers", []), (evt.EVT_CONN_OPEN, _connection_opened)]
        assoc = self.ae.associate(
            host,
            port,
            ae_title=ae_title,
            max_pdu=self.settings.dimse_max_pdu,
            evt_handlers=handlers,
            **kwargs,
        )
        assoc.__class__ = QuickEndAssociation  # only a method differs: safe on a live object
        return assoc


class QuickEndAssociation(Association):
    """An association whose threads end as soon as its connection is down."""

    def kill(self) -> None:
        """As pynetdicom's, but checking every half millisecond rather than every 10 ms
        whether the connection is down. After a release it goes down a moment after the
        A-RELEASE-RP, so a C-MOVE's final response waited up to 10 ms after each
        sub-operation association, and every accepted association's threads as long."""
        self._reactor_checkpoint.set()
        self._kill = True
        self.is_established = False
        self._is_paused = True
        while self.dul.is_alive() and not self.dul.stop_dul():
            time.sleep(0.0005)


def nodelay(sock: socket.socket) -> None:
    """Disable Nagle's algorithm: without it every DIMSE round trip on a quiet link can
    wait for a delayed ACK (~40 ms)."""
    with contextlib.suppress(OSError):  # not a TCP socket, or already closed
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


#: How often the DUL thread of an association the server requested looks for a PDU.
REQUESTED_DUL_POLL = 0.0002


def _connection_opened(event: evt.Event) -> None:
    """EVT_CONN_OPEN handler for the associations the server requests: TCP_NODELAY, and
    their DUL thread looks for the peer's PDUs every 0.2 ms instead of pynetdicom's 1 ms
    (each C-STORE sub-operation of a C-MOVE waited for that poll)."""
    sock = getattr(event.assoc.dul.socket, "socket", None)
    if sock is not None:
        nodelay(sock)
    event.assoc.dul._run_loop_delay = REQUESTED_DUL_POLL

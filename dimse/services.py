"""What every DIMSE handler of one server shares: the archive, the settings, the AE."""

from __future__ import annotations

import contextlib
import socket
from dataclasses import dataclass, field
from typing import Any

from pynetdicom import AE, evt

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
        """Request an association to a peer, with TCP_NODELAY on its socket."""
        handlers = [*kwargs.pop("evt_handlers", []), (evt.EVT_CONN_OPEN, set_nodelay)]
        return self.ae.associate(
            host,
            port,
            ae_title=ae_title,
            max_pdu=self.settings.dimse_max_pdu,
            evt_handlers=handlers,
            **kwargs,
        )


def nodelay(sock: socket.socket) -> None:
    """Disable Nagle's algorithm: without it every DIMSE round trip on a quiet link can
    wait for a delayed ACK (~40 ms)."""
    with contextlib.suppress(OSError):  # not a TCP socket, or already closed
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def set_nodelay(event: evt.Event) -> None:
    """EVT_CONN_OPEN handler for the associations the server requests."""
    sock = getattr(event.assoc.dul.socket, "socket", None)
    if sock is not None:
        nodelay(sock)

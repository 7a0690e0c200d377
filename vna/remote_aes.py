"""Known DICOM peers: C-MOVE destinations and storage commitment requesters.

Peers come from two places: the ``remote_ae`` table of the index (``vna ae add``; a running
server sees a change on its next lookup, since nothing is cached) and the
``dimse_destinations`` setting. An AE title in the index wins over the same title in the
settings, so an administrator can correct a peer without a restart.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from vna.archive import Archive
from vna.config import check_ae_title
from vna.errors import BadRequest, ConfigError, NotFound
from vna.index.tables import RemoteAE

INDEX = "index"
SETTINGS = "settings"


@dataclass(frozen=True)
class RemoteAe:
    """A peer the archive can open an association to."""

    ae_title: str
    host: str
    port: int
    description: str = ""
    origin: str = INDEX  # INDEX or SETTINGS


def _title(ae_title: str) -> str:
    try:
        return check_ae_title(ae_title)
    except ConfigError as exc:
        raise BadRequest(str(exc)) from exc


def _check_address(host: str, port: int) -> None:
    if not host.strip() or any(c.isspace() for c in host.strip()):
        raise BadRequest(f"{host!r} is not a host name or address")
    if not 0 < port < 65536:
        raise BadRequest(f"{port} is not a TCP port (1-65535)")


def add_remote_ae(
    archive: Archive, ae_title: str, host: str, port: int, description: str = ""
) -> tuple[RemoteAe, bool]:
    """Add a peer to the index, or update its address; returns (peer, created).

    Raises:
        BadRequest: a malformed AE title, host or port.
    """
    title = _title(ae_title)
    _check_address(host, port)
    with archive.db.write() as session:
        row = session.execute(
            select(RemoteAE).where(RemoteAE.ae_title == title)
        ).scalar_one_or_none()
        created = row is None
        if row is None:
            row = RemoteAE(ae_title=title, host=host.strip(), port=port, description=description)
            session.add(row)
        else:
            row.host, row.port = host.strip(), port
            if description:
                row.description = description
        peer = RemoteAe(title, row.host, row.port, row.description or "", INDEX)
    return peer, created


def remove_remote_ae(archive: Archive, ae_title: str) -> None:
    """Remove a peer from the index.

    Raises:
        NotFound: the index holds no such AE title (settings-defined peers are removed from
            the settings, not here).
    """
    title = _title(ae_title)
    with archive.db.write() as session:
        row = session.execute(
            select(RemoteAE).where(RemoteAE.ae_title == title)
        ).scalar_one_or_none()
        removed = row is not None
        if row is not None:
            session.delete(row)
    if not removed:
        raise NotFound(f"no remote AE {title!r} in the index")


def list_remote_aes(archive: Archive) -> list[RemoteAe]:
    """Every known peer, index entries first, sorted by AE title."""
    with archive.db.read() as session:
        rows = session.execute(select(RemoteAE).order_by(RemoteAE.ae_title)).scalars().all()
        known = [RemoteAe(r.ae_title, r.host, r.port, r.description or "", INDEX) for r in rows]
    titles = {peer.ae_title for peer in known}
    from_settings = [
        RemoteAe(title, host, port, "", SETTINGS)
        for title, (host, port) in sorted(archive.settings.dimse_destination_map.items())
        if title not in titles
    ]
    return known + from_settings


def get_remote_ae(archive: Archive, ae_title: str) -> RemoteAe:
    """The peer with this AE title (the index first, then the settings).

    Raises:
        NotFound: no such peer.
    """
    title = ae_title.strip()
    with archive.db.read() as session:
        row = session.execute(
            select(RemoteAE).where(RemoteAE.ae_title == title)
        ).scalar_one_or_none()
        if row is not None:
            return RemoteAe(row.ae_title, row.host, row.port, row.description or "", INDEX)
    address = archive.settings.dimse_destination_map.get(title)
    if address is None:
        raise NotFound(f"unknown AE title {title!r}: add it with `vna ae add`")
    return RemoteAe(title, address[0], address[1], "", SETTINGS)

"""Real peers for the DIMSE tests: our listener on a free port, dcmtk tools, a dcmtk
storescp destination, and pynetdicom SCUs. Readiness is polled, never slept on."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import AE, evt

from dimse.server import DimseServer
from vna.archive import Archive


@dataclass
class Endpoint:
    """A running listener."""

    server: DimseServer
    archive: Archive
    host: str
    port: int
    ae_title: str

    @property
    def target(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


@contextmanager
def running(archive: Archive, **overrides: Any) -> Iterator[Endpoint]:
    """Our listener on a free loopback port with some settings changed."""
    settings = archive.settings.with_overrides(
        dimse_port=0, bind_address="127.0.0.1", dimse_timeout=20, **overrides
    )
    before, archive.settings = archive.settings, settings  # the core reads the policies there
    server = DimseServer(archive)
    server.start()
    try:
        yield Endpoint(server, archive, "127.0.0.1", server.port, settings.ae_title)
    finally:
        server.stop()
        archive.settings = before


@pytest.fixture
def server(local_archive: Archive) -> Iterator[Endpoint]:
    """The listener over the embedded archive (SQLite + files)."""
    with running(local_archive) as endpoint:
        yield endpoint


@pytest.fixture
def server_any(archive: Archive) -> Iterator[Endpoint]:
    """The listener over each back end (sqlite-fs and pg-s3)."""
    with running(archive) as endpoint:
        yield endpoint


def received_leftovers(archive: Archive) -> list[Path]:
    """Received bytes that were not stored: files in the spool folder, and files in the
    store that hold bytes but have no index row (the reserved file a transfer wrote to)."""
    from storage import FilesystemStore

    spool = archive.spool_dir
    found = [p for p in spool.iterdir() if p.is_file()] if spool.is_dir() else []
    store = archive.store
    if isinstance(store, FilesystemStore):
        paths = (store.path_for(key) for key in unindexed_store_files(archive))
        found.extend(path for path in paths if path.stat().st_size)
    return found


def unindexed_store_files(archive: Archive) -> list[str]:
    """Keys of files in the store without an index row (empty reserved ones included)."""
    from sqlalchemy import select

    from vna.index.tables import Instance

    with archive.db.reading() as conn:
        indexed = set(conn.execute(select(Instance.storage_key)).scalars())
    return [key for key in archive.store.keys() if key not in indexed]  # noqa: SIM118


def require_dcmtk() -> None:
    if shutil.which("storescu") is None:
        pytest.skip("dcmtk is not installed")


def dcmtk(tool: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a dcmtk tool with TCP_NODELAY (dcmtk reads it from the environment)."""
    require_dcmtk()
    env = {**os.environ, "TCP_NODELAY": "1"}
    return subprocess.run(
        [tool, *args], capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, process: subprocess.Popen[bytes] | None = None) -> None:
    """Poll until something accepts TCP connections on the port."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the peer exited with {process.returncode}")
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)  # polling interval, not a readiness guess
    raise TimeoutError(f"nothing listens on port {port}")


@dataclass
class StoreScp:
    """A dcmtk storescp destination writing what it receives, bit-preserving."""

    ae_title: str
    port: int
    folder: Path

    def files(self) -> list[Path]:
        return sorted(p for p in self.folder.rglob("*") if p.is_file())


@contextmanager
def storescp(folder: Path, *options: str, ae_title: str = "DEST") -> Iterator[StoreScp]:
    """storescp on a free port; ``options`` choose the accepted transfer syntaxes."""
    require_dcmtk()
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {**os.environ, "TCP_NODELAY": "1"}
    process = subprocess.Popen(
        ["storescp", "-aet", ae_title, "+B", "-od", str(folder), *options, str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_listening(port, process)
        yield StoreScp(ae_title, port, folder)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def data_set_bytes(path: Path) -> bytes:
    """The data set of a Part 10 file (what travels on the network), or the whole file when
    it has no File Meta Information."""
    from pynetdicom.dsutils import split_dataset

    data = path.read_bytes()
    if data[128:132] != b"DICM":
        return data
    _meta, offset = split_dataset(path)
    return data[offset:]


def nodelay(event: evt.Event) -> None:
    event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def associate(
    endpoint: Endpoint, contexts: list[Any], *, ae_title: str = "TESTSCU", **kwargs: Any
) -> Any:
    """A pynetdicom SCU association to the listener."""
    ae = AE(ae_title=ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
    handlers = [*kwargs.pop("evt_handlers", []), (evt.EVT_CONN_OPEN, nodelay)]
    assoc = ae.associate(
        endpoint.host,
        endpoint.port,
        contexts=contexts,
        ae_title=endpoint.ae_title,
        evt_handlers=handlers,
        **kwargs,
    )
    for name in (
        "send_c_echo",
        "send_c_store",
        "send_c_find",
        "send_c_move",
        "send_c_get",
        "send_n_action",
    ):
        setattr(assoc, name, _after_reactor_pause(assoc, getattr(assoc, name)))
    return assoc


REACTOR_PAUSE_WAIT = 1.0


def _after_reactor_pause(assoc: Any, send: Any) -> Any:
    """``send`` once the SCU association's reactor is really paused.

    pynetdicom's send_* methods clear the reactor's checkpoint and go on as soon as its
    ``_is_paused`` flag is set, but the flag still holds from the reactor's previous pause
    while it wakes up from it: the woken reactor can then take the answer off the queue
    ("Received unexpected C-STORE service message") and the send waits for it until the
    DIMSE timeout. A server answering within a few microseconds hits that window. Here the
    flag is cleared and the reactor seen to set it again before the send starts.
    """

    def paused_send(*args: Any, **kwargs: Any) -> Any:
        assoc._reactor_checkpoint.clear()
        assoc._is_paused = False
        deadline = time.monotonic() + REACTOR_PAUSE_WAIT  # a reactor that ended never pauses
        while not assoc._is_paused and time.monotonic() < deadline:
            time.sleep(0.0001)
        return send(*args, **kwargs)

    return paused_send


@dataclass
class Receiver:
    """A pynetdicom storage SCP that keeps the data set bytes it receives, as received."""

    ae_title: str
    port: int
    received: dict[str, bytes]
    syntaxes: dict[str, str]


@contextmanager
def receiver(ae_title: str = "PYDEST") -> Iterator[Receiver]:
    """A storage SCP accepting every storage class in every transfer syntax."""
    from pynetdicom import ALL_TRANSFER_SYNTAXES

    from dimse.acceptance import storage_classes

    received: dict[str, bytes] = {}
    syntaxes: dict[str, str] = {}

    def on_store(event: evt.Event) -> int:
        request = event.request
        if getattr(request, "_dataset_path", None):  # received into a file (chunked mode)
            data = data_set_bytes(Path(event.dataset_path))
        else:
            data = request.DataSet.getvalue()
        received[str(request.AffectedSOPInstanceUID)] = data
        syntaxes[str(request.AffectedSOPInstanceUID)] = str(event.context.transfer_syntax)
        return 0x0000

    ae = AE(ae_title=ae_title)
    for uid in sorted(storage_classes()):
        ae.add_supported_context(uid, ALL_TRANSFER_SYNTAXES)
    ae.maximum_pdu_size = 0
    server = ae.start_server(
        ("127.0.0.1", 0),
        block=False,
        evt_handlers=[(evt.EVT_C_STORE, on_store), (evt.EVT_CONN_OPEN, nodelay)],
    )
    assert server is not None
    try:
        yield Receiver(ae_title, int(server.server_address[1]), received, syntaxes)
    finally:
        ae.shutdown()

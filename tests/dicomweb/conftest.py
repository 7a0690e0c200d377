"""The DICOMweb server on a free loopback port, run on its own event loop in a thread so
that synchronous clients (dicomweb-client, requests, urllib) can talk to it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web

from dicomweb.app import create_app
from vna.archive import Archive


@dataclass
class WebServer:
    """A running DICOMweb server."""

    archive: Archive
    host: str
    port: int

    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The service root, e.g. http://127.0.0.1:PORT/dicom-web."""
        return f"{self.origin}/dicom-web"

    def client(self) -> Any:
        """A dicomweb-client session on this server."""
        from dicomweb_client.api import DICOMwebClient

        return DICOMwebClient(url=self.url)


@contextmanager
def running_web(archive: Archive, **overrides: Any) -> Iterator[WebServer]:
    """Serve ``archive`` over DICOMweb until the block ends (settings changed by overrides)."""
    before = archive.settings
    if overrides:
        archive.settings = archive.settings.with_overrides(**overrides)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    state: dict[str, Any] = {}

    async def start() -> None:
        runner = web.AppRunner(create_app(archive), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None and server.sockets  # type: ignore[attr-defined]
        state["port"] = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        state["runner"] = runner

    def main() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(start())
        except BaseException as exc:
            state["error"] = exc
            started.set()
            return
        started.set()
        loop.run_forever()
        loop.run_until_complete(state["runner"].cleanup())
        loop.close()

    thread = threading.Thread(target=main, name="dicomweb-test-server", daemon=True)
    thread.start()
    if not started.wait(30):
        raise RuntimeError("the DICOMweb server did not start")
    if "error" in state:
        raise state["error"]
    try:
        yield WebServer(archive, "127.0.0.1", state["port"])
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        archive.settings = before


@pytest.fixture
def web_server(local_archive: Archive) -> Iterator[WebServer]:
    """DICOMweb over the embedded archive (SQLite + files)."""
    with running_web(local_archive) as server:
        yield server


@pytest.fixture
def any_web_server(archive: Archive) -> Iterator[WebServer]:
    """DICOMweb over each back end (SQLite + files, PostgreSQL + S3)."""
    with running_web(archive) as server:
        yield server

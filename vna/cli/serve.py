"""`vna serve`: run the DIMSE listener and the DICOMweb server over one archive.

This is the only place that imports the front ends (ARCHITECTURE.md dependency rule).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import multiprocessing
import multiprocessing.process
import os
import signal
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import typer

from vna.archive import Archive
from vna.cli import balance
from vna.cli.base import DataDir, app, console, fail, settings_from_cli
from vna.config import Settings
from vna.errors import VnaError
from vna.memory import keep_freed_memory
from vna.reservations import recover_reservations

log = logging.getLogger(__name__)


def _front_end(module: str) -> Any | None:
    """Import a front end package's module, or None when it is not part of this install."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and module.startswith(exc.name):
            return None
        raise


async def _serve(archive: Archive, dimse: bool, http: bool) -> None:
    settings = archive.settings
    stop = _stop_event()
    dimse_mod = _front_end("dimse.server") if dimse else None
    web_mod = _front_end("dicomweb.app") if http else None
    if dimse_mod is None and web_mod is None:
        console.print("no front end is enabled; nothing to serve")
        return
    # One Python process uses one core: several serve, and this one accepts every connection
    # and hands it to the least busy (vna/cli/balance.py). A port of 0 (any free port) is
    # served by this process alone.
    serving: dict[str, int] = {}
    if dimse_mod is not None:
        serving["dimse"] = settings.effective_dimse_processes if settings.dimse_port else 1
    if web_mod is not None:
        serving["http"] = settings.effective_http_processes if settings.http_port else 1
    if max(serving.values()) == 1:
        await _serve_alone(archive, dimse_mod, web_mod, stop)
        return
    listeners = {}
    try:
        if dimse_mod is not None:
            listeners["dimse"] = balance.listen(settings.bind_address, settings.dimse_port)
        if web_mod is not None:
            listeners["http"] = balance.listen(settings.bind_address, settings.http_port)
    except OSError:
        for listener in listeners.values():
            listener.close()
        raise
    shared, child_ends = balance.make_shared(serving)
    fronts, close_fronts = await _fronts(archive, dimse_mod, web_mod)
    reporter = balance.Reporter(shared, 0, fronts)
    reporter.start(None)
    children = [
        _spawn(
            settings, shared.for_child(), i, child_ends[i], {k for k in serving if i < serving[k]}
        )
        for i in range(1, shared.processes)
    ]
    for end in child_ends:
        end.close()
    dispatcher = balance.Dispatcher(shared, reporter, listeners)
    dispatcher.start()
    _announce(archive, serving)
    try:
        await stop.wait()
    finally:
        dispatcher.stop()
        reporter.stop()
        for child in children:
            child.terminate()
        for child in children:
            child.join(15)
            if child.is_alive():
                child.kill()
        await close_fronts()


async def _serve_alone(
    archive: Archive, dimse_mod: Any | None, web_mod: Any | None, stop: asyncio.Event
) -> None:
    """One process listening on the ports itself."""
    dimse_server = None
    runner = None
    try:
        if dimse_mod is not None:
            dimse_server = dimse_mod.DimseServer(archive)
            dimse_server.start()
        if web_mod is not None:
            runner = await _start_http(web_mod, archive)
        _announce(archive, {k: 1 for k, mod in (("dimse", dimse_mod), ("http", web_mod)) if mod})
        await stop.wait()
    finally:
        if runner is not None:
            await runner.cleanup()
        if dimse_server is not None:
            dimse_server.stop()


def _announce(archive: Archive, serving: dict[str, int]) -> None:
    settings = archive.settings
    if "dimse" in serving:
        console.print(
            f"DIMSE: AE {settings.ae_title} on {settings.bind_address}:{settings.dimse_port} "
            f"({_count(serving['dimse'])})",
            highlight=False,
        )
    if "http" in serving:
        console.print(
            f"DICOMweb: http://{settings.bind_address}:{settings.http_port}/dicom-web "
            f"({_count(serving['http'])})",
            highlight=False,
        )
    console.print(f"archive: {archive.describe()} — Ctrl-C to stop", highlight=False)


def _count(processes: int) -> str:
    return f"{processes} process{'es' if processes > 1 else ''}"


def _stop_event() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    return stop


async def _start_http(web_mod: Any, archive: Archive) -> Any:
    """The DICOMweb site listening on the HTTP port."""
    from aiohttp import web

    settings = archive.settings
    runner = web.AppRunner(web_mod.create_app(archive), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.bind_address, settings.http_port)
    await site.start()
    return runner


async def _fronts(
    archive: Archive, dimse_mod: Any | None, web_mod: Any | None
) -> tuple[dict[str, balance.Front], Callable[[], Awaitable[None]]]:
    """The front ends of a balanced process: servers that do not listen but adopt the
    connections handed to them; and how to close them."""
    fronts: dict[str, balance.Front] = {}
    dimse_server = None
    runner = None
    if dimse_mod is not None:
        dimse_server = dimse_mod.DimseServer(archive, listen=False)
        dimse_server.start()
        server = dimse_server
        fronts["dimse"] = balance.Front(server.adopt, lambda: server.open_associations)
    if web_mod is not None:
        from aiohttp import web

        runner = web.AppRunner(web_mod.create_app(archive), access_log=None)
        await runner.setup()
        loop = asyncio.get_running_loop()
        protocol = runner.server
        assert protocol is not None

        starting = [0]  # adopted, not yet among the server's connections

        def adopt_http(sock: socket.socket) -> None:
            async def connect() -> None:
                try:
                    await loop.connect_accepted_socket(protocol, sock)
                finally:
                    starting[0] -= 1

            starting[0] += 1
            loop.call_soon_threadsafe(lambda: loop.create_task(connect()))

        fronts["http"] = balance.Front(
            adopt_http, lambda: len(protocol.connections) + max(0, starting[0])
        )

    async def close() -> None:
        if runner is not None:
            await runner.cleanup()
        if dimse_server is not None:
            dimse_server.stop()

    return fronts, close


def _spawn(
    settings: Settings, shared: balance.Shared, index: int, channel: socket.socket, kinds: set[str]
) -> multiprocessing.process.BaseProcess:
    """One more server process (a fresh interpreter: no shared state but the counters)."""
    process = multiprocessing.get_context("spawn").Process(
        target=_server_process,
        args=(settings, os.getpid(), shared, index, channel, kinds),
        name="vna-serve",
        daemon=True,
    )
    process.start()
    return process


def _server_process(
    settings: Settings,
    parent: int,
    shared: balance.Shared,
    index: int,
    channel: socket.socket,
    kinds: set[str],
) -> None:
    """Body of an extra server process: serve what is handed over until told to stop or the
    parent is gone."""
    keep_freed_memory()
    archive = Archive.open(settings, migrate=False)  # the parent has migrated

    async def main() -> None:
        stop = _stop_event()
        dimse_mod = _front_end("dimse.server") if "dimse" in kinds else None
        web_mod = _front_end("dicomweb.app") if "http" in kinds else None
        fronts, close = await _fronts(archive, dimse_mod, web_mod)
        reporter = balance.Reporter(shared, index, fronts)
        reporter.start(channel)
        try:
            while not stop.is_set() and os.getppid() == parent:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
        finally:
            reporter.stop()
            with contextlib.suppress(OSError):
                channel.close()
            await close()

    try:
        asyncio.run(main())
    finally:
        archive.close()


@app.command("serve")
def serve_command(
    dimse: bool = typer.Option(True, "--dimse/--no-dimse", help="Run the DIMSE listener."),
    http: bool = typer.Option(True, "--http/--no-http", help="Run the DICOMweb server."),
    data_dir: Path | None = DataDir,
) -> None:
    """Run the archive: DIMSE on VNA_DIMSE_PORT and DICOMweb on VNA_HTTP_PORT."""
    settings = settings_from_cli(data_dir)
    keep_freed_memory()
    try:
        archive = Archive.open(settings)
    except VnaError as exc:
        fail(f"cannot open the archive: {exc}", 2)
    try:
        recover_reservations(archive)
    except Exception as exc:  # the archive still serves; `vna verify` tries again
        console.print(f"[yellow]warning:[/] cannot recover reserved object files: {exc}")
    try:
        asyncio.run(_serve(archive, dimse, http))
    except OSError as exc:
        fail(f"cannot listen: {exc}", 2)
    finally:
        archive.close()

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
from pathlib import Path
from typing import Any

import typer

from vna.archive import Archive
from vna.cli.base import DataDir, app, console, fail, settings_from_cli
from vna.config import Settings
from vna.errors import VnaError

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
    # Several processes share each port (SO_REUSEPORT), since one Python process uses one
    # core; a port of 0 (any free port) cannot be shared.
    n_dimse = settings.effective_dimse_processes if dimse_mod and settings.dimse_port else 1
    n_http = settings.effective_http_processes if web_mod and settings.http_port else 1
    dimse_server = None
    runner = None
    if dimse_mod is not None:
        dimse_server = dimse_mod.DimseServer(archive, share_port=n_dimse > 1)
        dimse_server.start()
        console.print(
            f"DIMSE: AE {settings.ae_title} on {settings.bind_address}:{settings.dimse_port} "
            f"({_count(n_dimse)})",
            highlight=False,
        )
    if web_mod is not None:
        runner = await _start_http(web_mod, archive, reuse_port=n_http > 1)
        console.print(
            f"DICOMweb: http://{settings.bind_address}:{settings.http_port}/dicom-web "
            f"({_count(n_http)})",
            highlight=False,
        )
    if dimse_server is None and runner is None:
        console.print("no front end is enabled; nothing to serve")
        return
    # the counts are 1 for a front end that is off, so it starts in no child
    children = [_spawn(settings, i < n_dimse, i < n_http) for i in range(1, max(n_dimse, n_http))]
    console.print(f"archive: {archive.describe()} — Ctrl-C to stop", highlight=False)
    try:
        await stop.wait()
    finally:
        for child in children:
            child.terminate()
        for child in children:
            child.join(15)
            if child.is_alive():
                child.kill()
        if runner is not None:
            await runner.cleanup()
        if dimse_server is not None:
            dimse_server.stop()


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


async def _start_http(web_mod: Any, archive: Archive, *, reuse_port: bool) -> Any:
    """The DICOMweb site on the HTTP port; with ``reuse_port`` several processes share it
    (SO_REUSEPORT: the kernel spreads new connections over them)."""
    from aiohttp import web

    settings = archive.settings
    runner = web.AppRunner(web_mod.create_app(archive), access_log=None)
    await runner.setup()
    site = web.TCPSite(
        runner, settings.bind_address, settings.http_port, reuse_port=reuse_port or None
    )
    await site.start()
    return runner


def _spawn(settings: Settings, dimse: bool, http: bool) -> multiprocessing.process.BaseProcess:
    """One more server process on the shared ports (a fresh interpreter: no shared state)."""
    process = multiprocessing.get_context("spawn").Process(
        target=_server_process,
        args=(settings, os.getpid(), dimse, http),
        name="vna-serve",
        daemon=True,
    )
    process.start()
    return process


def _server_process(settings: Settings, parent: int, dimse: bool, http: bool) -> None:
    """Body of an extra server process: serve until told to stop or the parent is gone."""
    archive = Archive.open(settings, migrate=False)  # the parent has migrated

    async def main() -> None:
        stop = _stop_event()
        dimse_server = None
        runner = None
        try:
            dimse_mod = _front_end("dimse.server") if dimse else None
            web_mod = _front_end("dicomweb.app") if http else None
            if dimse_mod is not None:
                dimse_server = dimse_mod.DimseServer(archive, share_port=True)
                dimse_server.start()
            if web_mod is not None:
                runner = await _start_http(web_mod, archive, reuse_port=True)
            while not stop.is_set() and os.getppid() == parent:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
        finally:
            if runner is not None:
                await runner.cleanup()
            if dimse_server is not None:
                dimse_server.stop()

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
    try:
        archive = Archive.open(settings)
    except VnaError as exc:
        fail(f"cannot open the archive: {exc}", 2)
    try:
        asyncio.run(_serve(archive, dimse, http))
    except OSError as exc:
        fail(f"cannot listen: {exc}", 2)
    finally:
        archive.close()

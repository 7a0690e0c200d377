"""QIDO-RS (PS3.18 10.6): search for patients, studies, series and instances."""

from __future__ import annotations

from aiohttp import web


async def search(request: web.Request) -> web.StreamResponse:
    """Search (not yet wired)."""
    raise web.HTTPNotImplemented()

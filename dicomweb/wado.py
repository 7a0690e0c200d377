"""WADO-RS (PS3.18 10.4): instances, metadata, frames and bulk data."""

from __future__ import annotations

from aiohttp import web


async def retrieve(request: web.Request) -> web.StreamResponse:
    """Retrieve (not yet wired)."""
    raise web.HTTPNotImplemented()


async def metadata(request: web.Request) -> web.StreamResponse:
    """Metadata (not yet wired)."""
    raise web.HTTPNotImplemented()


async def frames(request: web.Request) -> web.StreamResponse:
    """Frames (not yet wired)."""
    raise web.HTTPNotImplemented()


async def bulkdata(request: web.Request) -> web.StreamResponse:
    """Bulk data (not yet wired)."""
    raise web.HTTPNotImplemented()

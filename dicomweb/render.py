"""WADO-RS rendered resources and thumbnails (PS3.18 10.4.1.1.3, 10.4.1.1.4)."""

from __future__ import annotations

from aiohttp import web


async def rendered(request: web.Request) -> web.StreamResponse:
    """Rendered (not yet wired)."""
    raise web.HTTPNotImplemented()


async def thumbnail(request: web.Request) -> web.StreamResponse:
    """Thumbnail (not yet wired)."""
    raise web.HTTPNotImplemented()

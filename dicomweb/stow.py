"""STOW-RS (PS3.18 10.5): store instances."""

from __future__ import annotations

from aiohttp import web


async def store(request: web.Request) -> web.StreamResponse:
    """Store (not yet wired)."""
    raise web.HTTPNotImplemented()

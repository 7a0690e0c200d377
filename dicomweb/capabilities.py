"""The Capabilities transaction (PS3.18 8.9): what the service supports."""

from __future__ import annotations

from aiohttp import web


async def describe(request: web.Request) -> web.StreamResponse:
    """Describe (not yet wired)."""
    raise web.HTTPNotImplemented()

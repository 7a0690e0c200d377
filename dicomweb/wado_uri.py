"""WADO-URI (PS3.18 9): the legacy single-object retrieval by query string."""

from __future__ import annotations

from aiohttp import web


async def retrieve(request: web.Request) -> web.StreamResponse:
    """Retrieve (not yet wired)."""
    raise web.HTTPNotImplemented()

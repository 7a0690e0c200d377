"""The one table mapping the core's errors to HTTP statuses, and the JSON error body.

Every error leaves the server as ``{"error": "...", "status": N}`` with
``Content-Type: application/json``, so scripts and viewers can show the reason.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from vna import errors

#: Most specific first: the first class an error is an instance of decides its status.
HTTP_STATUS: tuple[tuple[type[errors.VnaError], int], ...] = (
    (errors.NotFound, 404),
    (errors.BadRequest, 400),
    (errors.NotAcceptable, 406),
    (errors.PermissionDenied, 403),
    (errors.Conflict, 409),
    (errors.InvalidObject, 400),
    (errors.OutOfResources, 507),
    (errors.StorageError, 503),
    (errors.ConfigError, 500),
    (errors.VnaError, 500),
)


def status_of(exc: errors.VnaError) -> int:
    """The HTTP status of a core error."""
    for cls, status in HTTP_STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    """A JSON error body with its status."""
    body: dict[str, Any] = {"error": message, "status": status}
    return web.Response(
        status=status,
        text=json.dumps(body),
        content_type="application/json",
        headers=headers,
    )

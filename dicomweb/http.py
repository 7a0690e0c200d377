"""Shared plumbing of the handlers: the archive, the worker threads, JSON bodies, URLs.

Concurrency model: the core is synchronous (SQLAlchemy sessions, the minio client, file
I/O); every call into it runs on the application's thread pool through :func:`run`, so the
event loop only parses, streams and renders. SQLite connections come from the index's pool
and are used by one thread at a time; writes are serialised by the index itself.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from aiohttp import web

from vna.archive import Archive

T = TypeVar("T")

ARCHIVE: web.AppKey[Archive] = web.AppKey("archive", Archive)
EXECUTOR: web.AppKey[ThreadPoolExecutor] = web.AppKey("executor", ThreadPoolExecutor)
#: Path of the service root, e.g. ``/dicom-web``.
PREFIX: web.AppKey[str] = web.AppKey("prefix", str)
#: The service root a request came in on, and its ingest route (None for the plain root).
ROOT: web.RequestKey[str] = web.RequestKey("root", str)
INGEST_ROUTE: web.RequestKey[str | None] = web.RequestKey("ingest_route", object)  # type: ignore[arg-type]

DICOM_JSON = "application/dicom+json"
#: Smallest JSON body worth compressing when the client accepts gzip.
GZIP_MIN = 1024


def archive_of(request: web.Request) -> Archive:
    """The archive the application serves."""
    return request.app[ARCHIVE]


async def run(request: web.Request, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking core call on the worker threads and wait for it."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(request.app[EXECUTOR], functools.partial(fn, *args, **kwargs))


def route_of(request: web.Request) -> str | None:
    """The ingest route of the request (``http:NAME`` under ``/NAME/dicom-web``), or None."""
    return request.get(INGEST_ROUTE)


def service_url(request: web.Request) -> str:
    """Absolute URL of the service root, for RetrieveURL and BulkDataURI values.

    ``dicomweb_base_url`` wins (a proxy in front); otherwise the request's scheme and Host,
    with the route prefix the request came in on.
    """
    configured = archive_of(request).settings.dicomweb_base_url
    if configured:
        return configured.rstrip("/")
    root = request.get(ROOT) or request.app[PREFIX]
    return f"{request.scheme}://{_authority(request)}{root}"


def _authority(request: web.Request) -> str:
    """Host and port the client reached. Some clients send ``Host`` without the port; then
    the listening port is added unless a proxy forwarded the request (a proxy's clients
    reach it on the scheme's default port; set ``dicomweb_base_url`` for anything else)."""
    host = request.host
    if host.endswith("]") or ":" not in host:
        if "X-Forwarded-Host" in request.headers or "Forwarded" in request.headers:
            return host
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        port = sockname[1] if isinstance(sockname, tuple) and len(sockname) >= 2 else None
        default = 443 if request.scheme == "https" else 80
        if port and port != default:
            return f"{host}:{port}"
    return host


def wants_gzip(request: web.Request) -> bool:
    """Whether the client accepts a gzip-compressed body."""
    return "gzip" in request.headers.get("Accept-Encoding", "").lower()


def json_response(
    request: web.Request,
    payload: Any,
    *,
    status: int = 200,
    content_type: str = DICOM_JSON,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """A JSON body (``payload`` may be pre-serialised text), gzip-compressed when worth it."""
    text = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    response = web.Response(
        status=status, text=text, content_type=content_type, charset="utf-8", headers=headers
    )
    if len(text) >= GZIP_MIN and wants_gzip(request):
        response.enable_compression(web.ContentCoding.gzip)
    return response

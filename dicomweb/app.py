"""The DICOMweb application: ``create_app(archive)`` builds the aiohttp server.

Handlers live in qido/wado/stow/render/wado_uri; this module wires them to the route table,
maps errors to statuses in one place (dicomweb.errors), adds CORS headers, and runs the
core on a thread pool (see dicomweb.http for the concurrency model).

Besides ``/dicom-web``, each ``[routes."http:NAME"]`` of the settings serves the same
service under ``/NAME/dicom-web``, and objects stored through it take that ingest route
(e.g. de-identification for a teaching platform).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from dicomweb.errors import error_response, status_of
from dicomweb.http import ARCHIVE, EXECUTOR, INGEST_ROUTE, PREFIX, ROOT
from dicomweb.routes import ROUTES
from vna.archive import Archive
from vna.errors import VnaError
from vna.routes import configured_routes

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "/dicom-web"
ROOTS: web.AppKey[list[tuple[str, str | None]]] = web.AppKey("roots", list)
#: Response headers a browser script may read (PS3.18 8.10 Warning, caching, paging).
EXPOSED_HEADERS = "Warning, ETag, Content-Length, Content-Location, Content-Type, Location"


def create_app(archive: Archive, *, prefix: str = DEFAULT_PREFIX) -> web.Application:
    """The DICOMweb application over an open archive (the caller closes the archive)."""
    app = web.Application(middlewares=[_root_middleware, _error_middleware])
    app[ARCHIVE] = archive
    app[PREFIX] = prefix.rstrip("/")
    roots: list[tuple[str, str | None]] = [(app[PREFIX], None)]
    for name in configured_routes(archive):
        kind, _, door = str(name).partition(":")
        if kind == "http" and door.strip("/"):
            roots.append((f"/{door.strip('/')}{app[PREFIX]}", f"http:{door.strip('/')}"))
    app[ROOTS] = roots
    for root, _route in roots:
        for route in ROUTES:
            paths = [root + route.path] + ([root + "/"] if not route.path else [])
            for path in paths:
                if route.method == "GET":
                    app.router.add_get(path, route.handler)  # HEAD too
                else:
                    app.router.add_route(route.method, path, route.handler)
    # Legacy viewers are often configured with http://host:port/wado.
    wado_uri = next(r for r in ROUTES if r.transaction == "WADO-URI")
    app.router.add_get("/wado", wado_uri.handler)
    app.cleanup_ctx.append(_executor)
    app.on_response_prepare.append(_cors_headers)
    return app


async def _executor(app: web.Application) -> AsyncIterator[None]:
    workers = max(1, app[ARCHIVE].settings.dicomweb_workers)
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dicomweb")
    app[EXECUTOR] = executor
    yield
    executor.shutdown(wait=True, cancel_futures=True)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _root_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Note which service root (and so which ingest route) the request came in on, and
    answer OPTIONS on any resource (CORS pre-flight or an Allow list)."""
    for root, route in request.app[ROOTS]:
        if request.path == root or request.path.startswith(root + "/"):
            request[ROOT] = root
            request[INGEST_ROUTE] = route
            break
    if request.method == "OPTIONS" and request.path.rstrip("/") not in {
        root for root, _ in request.app[ROOTS]
    }:
        exc = request.match_info.http_exception
        if isinstance(exc, web.HTTPNotFound):
            return error_response(404, f"no such resource: {request.path}")
        allowed = getattr(exc, "allowed_methods", None) or {"GET", "HEAD"}
        methods = ", ".join(sorted({*allowed, "OPTIONS"}))
        return web.Response(status=204, headers={"Allow": methods})
    return await handler(request)


@web.middleware
async def _error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error as a JSON body with the status of dicomweb.errors' table."""
    try:
        return await handler(request)
    except VnaError as exc:
        return error_response(status_of(exc), str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() != "content-type"}
        headers.pop("Content-Length", None)
        return error_response(exc.status, exc.reason if not exc.text else _text(exc), headers)
    except ConnectionResetError:
        raise
    except Exception:
        log.exception("DICOMweb request %s %s failed", request.method, request.path_qs)
        return error_response(500, "internal error; the server log has the details")


def _text(exc: web.HTTPException) -> str:
    text = exc.text or ""
    return text.removeprefix(f"{exc.status}: ").strip() or exc.reason


async def _cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """CORS (Fetch standard) for the configured origins, on every response."""
    allowed = request.app[ARCHIVE].settings.dicomweb_cors_origins.strip()
    origin = request.headers.get("Origin")
    if not allowed or not origin:
        return
    if allowed == "*":
        response.headers["Access-Control-Allow-Origin"] = "*"
    elif origin in {o.strip().rstrip("/") for o in allowed.split(",")}:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = "Origin"
    else:
        return
    response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
    if request.method == "OPTIONS":
        response.headers["Access-Control-Allow-Methods"] = "GET, HEAD, POST, OPTIONS"
        asked = request.headers.get("Access-Control-Request-Headers")
        response.headers["Access-Control-Allow-Headers"] = asked or "Accept, Content-Type"
        response.headers["Access-Control-Max-Age"] = "600"

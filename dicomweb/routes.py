"""The whole PS3.18 route table in one place.

Paths are relative to the service root (``/dicom-web``). The conformance statement
(docs/conformance.md) and the capabilities description are checked against this table.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from dicomweb import capabilities, qido, render, stow, wado, wado_uri

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

STUDY = "/studies/{study}"
SERIES = STUDY + "/series/{series}"
INSTANCE = SERIES + "/instances/{instance}"
FRAMES = INSTANCE + "/frames/{frames}"


@dataclass(frozen=True)
class Route:
    """One resource and method of the service."""

    method: str
    path: str
    handler: Handler
    transaction: str
    summary: str


ROUTES: tuple[Route, ...] = (
    # STOW-RS (PS3.18 10.5)
    Route("POST", "/studies", stow.store, "STOW-RS", "Store instances"),
    Route("POST", STUDY, stow.store, "STOW-RS", "Store instances of one study"),
    # QIDO-RS (PS3.18 10.6)
    Route("GET", "/patients", qido.search, "QIDO-RS", "Search for patients"),
    Route("GET", "/studies", qido.search, "QIDO-RS", "Search for studies"),
    Route("GET", "/series", qido.search, "QIDO-RS", "Search for series"),
    Route("GET", "/instances", qido.search, "QIDO-RS", "Search for instances"),
    Route("GET", STUDY + "/series", qido.search, "QIDO-RS", "Search for a study's series"),
    Route("GET", STUDY + "/instances", qido.search, "QIDO-RS", "Search for a study's instances"),
    Route("GET", SERIES + "/instances", qido.search, "QIDO-RS", "Search for a series' instances"),
    # WADO-RS (PS3.18 10.4)
    Route("GET", STUDY, wado.retrieve, "WADO-RS", "Retrieve a study"),
    Route("GET", SERIES, wado.retrieve, "WADO-RS", "Retrieve a series"),
    Route("GET", INSTANCE, wado.retrieve, "WADO-RS", "Retrieve an instance"),
    Route("GET", STUDY + "/metadata", wado.metadata, "WADO-RS", "Study metadata"),
    Route("GET", SERIES + "/metadata", wado.metadata, "WADO-RS", "Series metadata"),
    Route("GET", INSTANCE + "/metadata", wado.metadata, "WADO-RS", "Instance metadata"),
    Route("GET", FRAMES, wado.frames, "WADO-RS", "Retrieve frames"),
    Route("GET", INSTANCE + "/bulkdata/{path:.+}", wado.bulkdata, "WADO-RS", "Bulk data"),
    Route("GET", STUDY + "/rendered", render.rendered, "WADO-RS", "Rendered study"),
    Route("GET", SERIES + "/rendered", render.rendered, "WADO-RS", "Rendered series"),
    Route("GET", INSTANCE + "/rendered", render.rendered, "WADO-RS", "Rendered instance"),
    Route("GET", FRAMES + "/rendered", render.rendered, "WADO-RS", "Rendered frames"),
    Route("GET", STUDY + "/thumbnail", render.thumbnail, "WADO-RS", "Study thumbnail"),
    Route("GET", SERIES + "/thumbnail", render.thumbnail, "WADO-RS", "Series thumbnail"),
    Route("GET", INSTANCE + "/thumbnail", render.thumbnail, "WADO-RS", "Instance thumbnail"),
    Route("GET", FRAMES + "/thumbnail", render.thumbnail, "WADO-RS", "Frame thumbnail"),
    # WADO-URI (PS3.18 9)
    Route("GET", "/wado", wado_uri.retrieve, "WADO-URI", "Retrieve an object (legacy URI)"),
    # Capabilities (PS3.18 8.9)
    Route("OPTIONS", "", capabilities.describe, "Capabilities", "Service description"),
    Route("GET", "", capabilities.describe, "Capabilities", "Service description"),
)

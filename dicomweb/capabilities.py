"""The Capabilities transaction (PS3.18 8.9): a machine-readable description of the service.

``OPTIONS /dicom-web`` (and ``GET``) answers a WADL document (``application/vnd.sun.wadl+xml``,
the standard's form) or, when the client prefers JSON, the same content as JSON. Both are
built from the route table (dicomweb.routes) and the tables below, which the conformance
statement (docs/conformance.md) is tested against.
"""

from __future__ import annotations

import json
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from aiohttp import web

from dicomweb.accept import accepted, parse_accept
from dicomweb.errors import error_response
from dicomweb.http import service_url, wants_gzip

WADL = "application/vnd.sun.wadl+xml"

#: Query parameters of each transaction (beyond attribute matching for QIDO-RS).
PARAMETERS: dict[str, tuple[str, ...]] = {
    "QIDO-RS": ("{attributeID}", "fuzzymatching", "includefield", "limit", "offset"),
    "WADO-RS": ("accept", "window", "viewport", "quality", "annotation"),
    "WADO-URI": (
        "requestType",
        "studyUID",
        "seriesUID",
        "objectUID",
        "contentType",
        "transferSyntax",
        "frameNumber",
        "rows",
        "columns",
        "windowCenter",
        "windowWidth",
        "imageQuality",
        "region",
        "charset",
    ),
    "STOW-RS": (),
    "Capabilities": (),
}

#: Media types each transaction accepts or produces.
MEDIA_TYPES: dict[str, tuple[str, ...]] = {
    "STOW-RS": (
        'multipart/related; type="application/dicom"',
        'multipart/related; type="application/dicom+json"',
        "application/dicom",
        "application/dicom+json",
        "application/dicom+xml",
    ),
    "QIDO-RS": ("application/dicom+json", 'multipart/related; type="application/dicom+xml"'),
    "WADO-RS": (
        'multipart/related; type="application/dicom"',
        "application/dicom",
        "application/dicom+json",
        "application/json",
        'multipart/related; type="application/dicom+xml"',
        'multipart/related; type="application/octet-stream"',
        "application/octet-stream",
        'multipart/related; type="image/jpeg"',
        'multipart/related; type="image/jls"',
        'multipart/related; type="image/jp2"',
        'multipart/related; type="image/jpx"',
        'multipart/related; type="image/jphc"',
        'multipart/related; type="image/jxl"',
        'multipart/related; type="image/x-dicom-rle"',
        'multipart/related; type="video/mpeg"',
        'multipart/related; type="video/mp4"',
        "image/jpeg",
        "image/png",
        "image/gif",
        "application/pdf",
        "video/mp4",
        "video/mpeg",
    ),
    "WADO-URI": ("application/dicom", "image/jpeg", "image/png", "image/gif", "application/pdf"),
    "Capabilities": (WADL, "application/json"),
}


def description(base_url: str) -> dict[str, Any]:
    """The service as JSON: every resource, its methods, transactions and parameters."""
    from dicomweb.routes import ROUTES  # the route table imports this module

    resources: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        entry = resources.setdefault(route.path or "/", {"path": route.path or "/", "methods": []})
        entry["methods"].append(
            {
                "method": route.method,
                "transaction": route.transaction,
                "summary": route.summary,
                "parameters": list(PARAMETERS.get(route.transaction, ())),
                "mediaTypes": list(MEDIA_TYPES.get(route.transaction, ())),
            }
        )
    return {"base": base_url, "resources": list(resources.values())}


def to_wadl(desc: dict[str, Any]) -> str:
    """The description as a WADL document (W3C member submission, as PS3.18 8.9 uses)."""
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<application xmlns="http://wadl.dev.java.net/2009/02">',
        f"  <resources base={quoteattr(desc['base'])}>",
    ]
    for resource in desc["resources"]:
        out.append(f"    <resource path={quoteattr(resource['path'])}>")
        for method in resource["methods"]:
            out.append(
                f"      <method name={quoteattr(method['method'])} "
                f"id={quoteattr(method['transaction'] + ' ' + method['summary'])}>"
            )
            out.append(f"        <doc>{escape(method['summary'])}</doc>")
            out.append("        <request>")
            for param in method["parameters"]:
                out.append(f'          <param name={quoteattr(param)} style="query"/>')
            out.append("        </request>")
            out.append("        <response>")
            for media in method["mediaTypes"]:
                out.append(f"          <representation mediaType={quoteattr(media)}/>")
            out.append("        </response>")
            out.append("      </method>")
        out.append("    </resource>")
    out += ["  </resources>", "</application>", ""]
    return "\n".join(out)


async def describe(request: web.Request) -> web.StreamResponse:
    """Capabilities (PS3.18 8.9): WADL by default, JSON when preferred."""
    choice = accepted(
        parse_accept(request.headers.get("Accept")),
        [WADL, "application/xml", "application/json", "application/dicom+json"],
    )
    if choice is None:
        return error_response(406, f"capabilities are available as {WADL} or application/json only")
    desc = description(service_url(request))
    headers = {"Allow": "GET, HEAD, OPTIONS"}
    if choice in ("application/json", "application/dicom+json"):
        response = web.Response(
            text=json.dumps(desc, indent=1), content_type="application/json", headers=headers
        )
    else:
        response = web.Response(
            text=to_wadl(desc),
            content_type=WADL if choice == WADL else "application/xml",
            charset="utf-8",
            headers=headers,
        )
    if wants_gzip(request):
        response.enable_compression(web.ContentCoding.gzip)
    return response

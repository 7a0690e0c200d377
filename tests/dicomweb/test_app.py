"""The application shell: errors as JSON, CORS, OPTIONS."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from tests.dicomweb.conftest import WebServer, running_web
from vna.archive import Archive


def _request(url: str, method: str = "GET", headers: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    req = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_unknown_resource_is_a_json_404(web_server: WebServer) -> None:
    status, headers, body = _request(web_server.url + "/nothing-here")
    assert status == 404
    assert headers["Content-Type"].startswith("application/json")
    assert json.loads(body)["status"] == 404


def test_cors_preflight_from_a_viewer_origin(web_server: WebServer) -> None:
    status, headers, _ = _request(
        web_server.url + "/studies",
        "OPTIONS",
        {
            "Origin": "http://viewer.example",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "accept",
        },
    )
    assert status == 204
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert "GET" in headers["Access-Control-Allow-Methods"]
    assert headers["Access-Control-Allow-Headers"] == "accept"
    assert "GET" in headers["Allow"] and "POST" in headers["Allow"]


def test_cors_limited_to_configured_origins(local_archive: Archive) -> None:
    with running_web(local_archive, dicomweb_cors_origins="https://ohif.example") as server:
        _, good, _ = _request(server.url + "/x", headers={"Origin": "https://ohif.example"})
        _, bad, _ = _request(server.url + "/x", headers={"Origin": "https://evil.example"})
    assert good["Access-Control-Allow-Origin"] == "https://ohif.example"
    assert "Access-Control-Allow-Origin" not in bad


def test_capabilities_describe_every_route(web_server: WebServer) -> None:
    from xml.etree import ElementTree

    from dicomweb.routes import ROUTES

    status, headers, body = _request(web_server.url, "OPTIONS")
    assert status == 200
    assert headers["Content-Type"].startswith("application/vnd.sun.wadl+xml")
    ns = {"w": "http://wadl.dev.java.net/2009/02"}
    root = ElementTree.fromstring(body)
    paths = {r.get("path") for r in root.iterfind(".//w:resource", ns)}
    assert {route.path or "/" for route in ROUTES} == paths
    base = root.find("w:resources", ns)
    assert base is not None and base.get("base") == web_server.url

    status, headers, body = _request(web_server.url + "/", headers={"Accept": "application/json"})
    assert status == 200
    described = json.loads(body)
    methods = {(r["path"], m["method"]) for r in described["resources"] for m in r["methods"]}
    assert ("/studies", "POST") in methods and ("/studies", "GET") in methods


def test_options_on_a_resource_lists_its_methods(web_server: WebServer) -> None:
    status, headers, _ = _request(web_server.url + "/studies/1.2.3/metadata", "OPTIONS")
    assert status == 204
    assert set(headers["Allow"].replace(" ", "").split(",")) == {"GET", "HEAD", "OPTIONS"}

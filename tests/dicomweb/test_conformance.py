"""The conformance statement (docs/conformance.md) and the README cover the route table."""

from __future__ import annotations

import re
from pathlib import Path

from dicomweb.capabilities import MEDIA_TYPES, PARAMETERS
from dicomweb.routes import ROUTES

ROOT = Path(__file__).resolve().parents[2]
CONFORMANCE = (ROOT / "docs" / "conformance.md").read_text(encoding="utf-8")
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _documented_paths(text: str) -> set[str]:
    return set(re.findall(r"`((?:/[^`\s]*)?)`", text))


def _path(route_path: str) -> str:
    """A route path as documented: ``{path:.+}`` is written ``{path}``."""
    return re.sub(r"\{(\w+):[^}]*\}", r"{\1}", route_path) or "/"


def test_every_route_is_in_the_conformance_statement() -> None:
    documented = _documented_paths(CONFORMANCE)
    missing = [
        f"{route.method} {route.path or '/'}"
        for route in ROUTES
        if _path(route.path) not in documented
    ]
    assert missing == []


def test_every_documented_resource_exists() -> None:
    """No resource in the statement's resource tables that the server does not serve."""
    table_rows = [line for line in CONFORMANCE.splitlines() if line.startswith("| `/")]
    served = {_path(route.path) for route in ROUTES}
    unknown = []
    for row in table_rows:
        path = row.split("`")[1]
        if path not in served:
            unknown.append(path)
    assert unknown == []


def test_every_media_type_and_parameter_is_documented() -> None:
    missing = [m for types in MEDIA_TYPES.values() for m in types if f"`{m}`" not in CONFORMANCE]
    missing += [p for params in PARAMETERS.values() for p in params if f"`{p}" not in CONFORMANCE]
    assert missing == []


def test_readme_points_to_the_statement() -> None:
    assert "docs/conformance.md" in README

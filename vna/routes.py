"""Ingest routes: a named door (a calling AE title, a DICOMweb path prefix) bound to a
transformation applied before anything is stored — e.g. a de-identification profile and a
target project for a teaching platform's uploads.

Doors pass the route they received an object on (``ae:TEACHING``, ``http:teaching``);
``apply`` returns the file to store instead of the received one, or None when the route
changes nothing. Routes are configured in the ``[routes]`` table of the settings file::

    [routes."ae:TEACHING"]
    profile = "teaching"      # de-identify with this profile (optional)
    project = "teaching"      # key store project; an anonymous-only project refuses
                              # objects that still carry identity
    options = []              # more PS3.15 E.3 options

The decision (stored de-identified, refused and why) is audited.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vna.errors import ConfigError, InvalidObject

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
            project, burned-in text under the reject policy, a slide label image).
        ConfigError: the route names an unknown profile or an impossible combination.
    """
    if not route:
        return None
    options = configured_routes(archive).get(route)
    if not isinstance(options, dict):
        return None
    from vna.deid import service  # the de-identification layer is loaded only when routed

    profile = str(options.get("profile", "") or "")
    project = str(options.get("project", "") or archive.settings.deid_default_project)
    if not profile:
        _check_only(archive, route, project, path, service)
        return None
    try:
        engine = service.Deidentifier(
            archive.settings,
            profile,
            project,
            service.keystore_of(archive),
            options=[str(o) for o in options.get("options", [])],
        )
        result, decision = engine.apply_file(path)
    except (InvalidObject, ConfigError) as exc:
        service.audit(
            archive,
            "deid-route-refused",
            origin=route,
            reason=str(exc),
            detail={"profile": profile, "project": project},
        )
        raise
    out = archive.spool_dir / f"{uuid.uuid4().hex}.deid"
    service.write(result, out)
    service.audit(
        archive,
        "deid-route",
        object_uid=result.sop_instance_uid,
        origin=route,
        detail={
            "profile": profile,
            "options": list(engine.profile.options),
            "project": project,
            "pixels": decision.action,
            "pixel_reason": decision.reason,
        },
    )
    return out


def _check_only(archive: Archive, route: str, project: str, path: Path, service: Any) -> None:
    """A route without a profile into an anonymous-only project only checks the object."""
    if not service.project_options(archive.settings, project).get("anonymous_only"):
        return None
    from pydicom import dcmread

    problems = service.identity_problems(dcmread(path, force=True, stop_before_pixels=True))
    if problems:
        service.audit(archive, "deid-route-refused", origin=route, reason="; ".join(problems))
        raise service.IdentityLeft(
            f"project {project} accepts anonymous objects only: {'; '.join(problems)}"
        )
    return None

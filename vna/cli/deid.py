"""De-identification commands: deid, deid-check, reidentify (PS3.15 Annex E profiles)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from vna.cli.base import DataDir, app, console, fail, open_archive
from vna.errors import BadRequest, ConfigError, InvalidObject, NotFound, PermissionDenied, VnaError


@app.command("deid")
def deid_command(
    sources: list[Path] = typer.Argument(None, help="Files and folders to de-identify."),
    profile: str = typer.Option(..., "--profile", "-p", help="basic, teaching or research."),
    options: list[str] = typer.Option([], "--option", help="PS3.15 E.3 option (repeatable)."),
    project: str = typer.Option(None, "--project", help="Key store project (UIDs, pseudonyms)."),
    out: Path = typer.Option(None, "--out", "-o", help="Folder to write the copies to."),
    into_archive: bool = typer.Option(
        False, "--into-archive", help="Store the copies in the archive (source deid:PROJECT)."
    ),
    study: list[str] = typer.Option([], "--study", help="Archived Study Instance UID."),
    keys: list[str] = typer.Option([], "--key", "-k", help="KEY=VALUE choosing archived studies."),
    reason: str = typer.Option("", "--reason", help="Why (recorded in the audit)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    data_dir: Path | None = DataDir,
) -> None:
    """De-identify files, folders or archived studies into a folder or an archive project.

    The clinical originals are never changed. Exits 1 when any object was refused.
    """
    from vna.deid import service

    if out is None and not into_archive:
        fail("give --out DIR and/or --into-archive", 2)
    if not sources and not study and not keys:
        fail("give files or folders, --study UID or -k KEY=VALUE", 2)
    with open_archive(data_dir) as archive:
        name = project or archive.settings.deid_default_project
        try:
            engine = service.Deidentifier(
                archive.settings, profile, name, service.keystore_of(archive), options=options
            )
        except ConfigError as exc:
            fail(str(exc), 2)
        items = list(_items(archive, sources or [], study, keys))
        done, refused = 0, []
        for label, opener in items:
            outcome = _one(archive, engine, label, opener, out, into_archive, reason)
            if outcome.ok:
                done += 1
            else:
                refused.append({"source": label, "reason": outcome.error})
    summary = {"deidentified": done, "refused": refused, "profile": profile, "project": name}
    if as_json:
        print(json.dumps(summary, indent=2))
    else:
        console.print(f"de-identified {done}, refused {len(refused)}", highlight=False)
        for item in refused:
            console.print(f"  refused {item['source']}: {item['reason']}", highlight=False)
    raise typer.Exit(0 if not refused else 1)


def _items(archive: Any, sources: list[Path], study: list[str], keys: list[str]) -> Any:
    """(label, callable giving a readable file path or stream) for every object to process."""
    from vna.ingest import iter_files

    for path in sources:
        if not path.exists():
            fail(f"{path}: no such file or folder", 2)
    for path in iter_files(sources):
        if path.name.upper() != "DICOMDIR":
            yield str(path), lambda p=path: p
    if study or keys:
        from vna.cli.core import _query
        from vna.query import find
        from vna.retrieve import find_instances, open_instance

        uids = list(study)
        try:
            if keys:
                uids += [m.study_uid for m in find(archive, _query("study", keys, [], None))]
            for uid in dict.fromkeys(uids):
                for ref in find_instances(archive, study_uid=uid):
                    yield ref.sop_instance_uid, lambda r=ref: open_instance(archive, r)
        except (BadRequest, NotFound) as exc:
            fail(str(exc))


def _one(
    archive: Any,
    engine: Any,
    label: str,
    opener: Any,
    out: Path | None,
    into_archive: bool,
    reason: str,
) -> Any:
    from pydicom import dcmread

    from vna.deid import service
    from vna.ingest import ingest_file

    outcome = service.Outcome(source=label)
    try:
        handle = opener()
        ds = dcmread(handle, force=True)
        if hasattr(handle, "close"):
            handle.close()
        original = str(ds.get("SOPInstanceUID", ""))
        result, decision = engine.apply(ds)
        outcome.result, outcome.pixel = result, decision.action
        target = service.output_path(out or archive.spool_dir / "deid", result)
        service.write(result, target)
        outcome.output = target
        if into_archive:
            ingest_file(archive, target, source=f"deid:{engine.project}"[:128])
            outcome.stored = True
            if out is None:
                target.unlink(missing_ok=True)
        service.audit(
            archive,
            "deid",
            object_uid=original,
            reason=reason,
            detail={
                "profile": engine.profile_name,
                "options": list(engine.profile.options),
                "project": engine.project,
                "pixels": decision.action,
                "pixel_reason": decision.reason,
                "stored_in_archive": outcome.stored,
            },
        )
    except (InvalidObject, VnaError, OSError, ValueError) as exc:
        outcome.error = str(exc) or type(exc).__name__
        service.audit(
            archive,
            "deid-refused",
            object_uid=label if len(label) <= 64 else "",
            reason=outcome.error,
            detail={"profile": engine.profile_name, "project": engine.project},
        )
    return outcome


@app.command("deid-check")
def deid_check_command(
    source: Path = typer.Argument(..., help="The original file or folder."),
    deidentified: Path = typer.Argument(..., help="The de-identified file or folder."),
    as_json: bool = typer.Option(False, "--json", help="Print the leaks as JSON."),
) -> None:
    """Report every identifying value of the source left in the de-identified objects.

    Exits 1 on any leak.
    """
    from vna.deid.leaks import check_paths

    for path in (source, deidentified):
        if not path.exists():
            fail(f"{path}: no such file or folder", 2)
    leaks = check_paths(source, deidentified)
    if as_json:
        print(
            json.dumps(
                [
                    {
                        "kind": leak.identifier.kind,
                        "value": leak.identifier.value,
                        "source": leak.identifier.source,
                        "source_attribute": leak.identifier.where,
                        "output": leak.output,
                        "found_in": leak.found_in,
                    }
                    for leak in leaks
                ],
                indent=2,
                ensure_ascii=False,
            )
        )
    else:
        for leak in leaks:
            console.print(f"LEAK {leak.describe()}", highlight=False)
        console.print(f"{len(leaks)} leak(s)", highlight=False)
    raise typer.Exit(1 if leaks else 0)


@app.command("reidentify")
def reidentify_command(
    project: str = typer.Option(..., "--project", help="The de-identification project."),
    pseudonym: str = typer.Option("", "--pseudonym", help="A pseudonym of the project."),
    uid: str = typer.Option("", "--uid", help="A UID of a de-identified object."),
    reason: str = typer.Option(..., "--reason", help="Why (required, audited)."),
    user: str = typer.Option(None, "--user", help="Who asks (default: the login name)."),
    data_dir: Path | None = DataDir,
) -> None:
    """Give back the original identity behind a pseudonym or UID (admins only; audited)."""
    from vna.deid import service

    if not pseudonym and not uid:
        fail("give --pseudonym or --uid", 2)
    with open_archive(data_dir) as archive:
        try:
            found = service.reidentify(
                archive,
                project,
                pseudonym=pseudonym,
                uid=uid,
                user=user or service.current_user(),
                reason=reason,
            )
        except PermissionDenied as exc:
            fail(f"not allowed: {exc}")
    if not found:
        fail("nothing known under that pseudonym or UID in this project")
    print(json.dumps(found, indent=2, ensure_ascii=False))

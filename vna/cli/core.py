"""Core admin commands: import, find, export, verify, stats, conflicts, config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from pydicom.datadict import keyword_for_tag, tag_for_keyword
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import func, select

from vna import dicomjson
from vna.cli.base import DataDir, app, console, err_console, fail, open_archive, settings_from_cli
from vna.cli.convert import slide_tasks, with_conversion_options
from vna.config import setting_docs
from vna.convert.batch import ConversionPlan
from vna.errors import BadRequest, NotFound
from vna.export import export
from vna.importer import REJECTED, FileOutcome, run_import
from vna.index.tables import IngestConflict, Instance, Series
from vna.index.writer import count_rows
from vna.query import QueryRequest, find
from vna.retrieve import InstanceRef, find_instances
from vna.verify import verify

DEFAULT_RETURN = {
    "PATIENT": [
        "PatientID",
        "PatientName",
        "PatientBirthDate",
        "PatientSex",
        "NumberOfPatientRelatedStudies",
    ],
    "STUDY": [
        "StudyInstanceUID",
        "StudyDate",
        "AccessionNumber",
        "PatientID",
        "PatientName",
        "StudyDescription",
        "ModalitiesInStudy",
        "NumberOfStudyRelatedInstances",
    ],
    "SERIES": [
        "SeriesInstanceUID",
        "Modality",
        "SeriesNumber",
        "SeriesDescription",
        "NumberOfSeriesRelatedInstances",
    ],
    "IMAGE": [
        "SOPInstanceUID",
        "SOPClassUID",
        "InstanceNumber",
        "Rows",
        "Columns",
        "NumberOfFrames",
    ],
}
LEVEL_ALIASES = {
    "patient": "PATIENT",
    "study": "STUDY",
    "series": "SERIES",
    "image": "IMAGE",
    "instance": "IMAGE",
}


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    )


@app.command("import")
@with_conversion_options
def import_command(
    paths: list[Path] = typer.Argument(None, help="Files and folders (walked recursively)."),
    workers: int = typer.Option(None, "--workers", "-j", help="Parallel workers."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    data_dir: Path | None = DataDir,
    plan: ConversionPlan | None = None,
) -> None:
    """Archive files and folders; a DICOMDIR is followed, not stored. Photos, video, sound,
    PDFs and slides are converted to DICOM with the context given by the options or the
    manifest (a file without a patient ID is rejected).

    Exits 0 when every file was stored or was already there, 1 when any was rejected.
    """
    paths = list(paths or []) or (plan.manifest.files if plan and plan.manifest else [])
    if not paths:
        fail("give files or folders to import, or --manifest", 2)
    for path in paths:
        if not path.exists():
            fail(f"{path}: no such file or folder", 2)
    with open_archive(data_dir) as archive, _progress() as progress:
        task = progress.add_task("importing", total=None)
        on_slide = slide_tasks(progress)

        def tick(outcome: FileOutcome) -> None:
            progress.advance(task)
            if outcome.status == REJECTED:
                progress.console.print(
                    f"[yellow]rejected[/yellow] {outcome.path}: {outcome.reason}", highlight=False
                )

        summary = run_import(
            archive, paths, workers=workers, on_outcome=tick, plan=plan, on_slide=on_slide
        )
    rejected = [{"path": o.path, "reason": o.reason} for o in summary.rejected]
    if as_json:
        console.print_json(
            json.dumps(
                {
                    "stored": summary.stored,
                    "duplicates": summary.duplicates,
                    "converted": summary.converted,
                    "with_warnings": summary.warnings,
                    "rejected": rejected,
                    "followed_dicomdirs": summary.followed_dicomdirs,
                }
            )
        )
    else:
        console.print(
            f"stored {summary.stored}, duplicates {summary.duplicates}, "
            f"converted {summary.converted}, with warnings {summary.warnings}, "
            f"rejected {len(summary.rejected)}",
            highlight=False,
        )
        for item in rejected:
            console.print(f"  rejected {item['path']}: {item['reason']}", highlight=False)
    raise typer.Exit(0 if summary.ok else 1)


def parse_keys(keys: list[str]) -> dict[int, str]:
    """``-k KEY=VALUE`` pairs (KEY a keyword or 8 hex digits) to a tag → value map.

    Raises:
        BadRequest: an unknown keyword or a pair without ``=``.
    """
    out: dict[int, str] = {}
    for item in keys:
        if "=" not in item:
            key, value = item, ""
        else:
            key, value = item.split("=", 1)
        out[tag_of(key.strip())] = value
    return out


def tag_of(key: str) -> int:
    """A keyword or a hex tag (``00100010`` / ``0010,0010``) as an int tag.

    Raises:
        BadRequest: neither.
    """
    text = key.replace(",", "").replace("(", "").replace(")", "")
    if len(text) == 8 and all(c in "0123456789abcdefABCDEF" for c in text):
        return int(text, 16)
    tag = tag_for_keyword(key)
    if tag is None:
        raise BadRequest(f"unknown attribute {key!r}")
    return int(tag)


def _query(level: str, keys: list[str], returns: list[str], limit: int | None) -> QueryRequest:
    level_name = LEVEL_ALIASES.get(level.lower())
    if level_name is None:
        raise BadRequest(f"level must be patient, study, series or image, not {level!r}")
    key_map = parse_keys(keys)
    return_tags = [tag_of(k) for k in DEFAULT_RETURN[level_name] + returns]
    return QueryRequest(level=level_name, keys=key_map, return_tags=return_tags, limit=limit)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)


@app.command("find")
def find_command(
    level: str = typer.Option("study", "--level", "-l", help="patient, study, series or image."),
    keys: list[str] = typer.Option([], "--key", "-k", help="KEY=VALUE to match (repeatable)."),
    returns: list[str] = typer.Option([], "--return", "-r", help="Extra attribute to return."),
    limit: int = typer.Option(None, "--limit", help="At most this many results."),
    as_json: bool = typer.Option(False, "--json", help="Print DICOM JSON (PS3.18 Annex F)."),
    remote: str = typer.Option(
        None, "--remote", help="Ask a DICOM peer (AET@HOST:PORT or a known AE) with C-FIND."
    ),
    data_dir: Path | None = DataDir,
) -> None:
    """Query the index like C-FIND / QIDO-RS, e.g. `-k PatientID=123 -k StudyDate=20200101-`."""
    try:
        request = _query(level, keys, returns, limit)
    except BadRequest as exc:
        fail(str(exc), 2)
    if remote:
        from vna.cli.scu import remote_find
        from vna.query import QueryMatch

        answers = remote_find(
            remote, request.level, request.keys, request.return_tags, as_json, data_dir
        )
        if as_json:
            return
        matches = [QueryMatch(answer) for answer in answers]
    else:
        with open_archive(data_dir) as archive:
            try:
                matches = find(archive, request)
            except BadRequest as exc:
                fail(str(exc), 2)
    if as_json:
        print(dicomjson.dumps([dicomjson.dataset_to_json(m.dataset, None)[0] for m in matches]))
        return
    if not matches:
        console.print("no match")
        return
    columns = list(
        dict.fromkeys(
            [keyword_for_tag(t) or f"{t:08X}" for t in [*request.keys, *request.return_tags]]
        )
    )
    table = Table(*columns, show_lines=False)
    for match in matches:
        table.add_row(
            *[_cell(match.dataset[c].value if c in match.dataset else None) for c in columns]
        )
    console.print(table)
    console.print(f"{len(matches)} match(es)", highlight=False)


@app.command("export")
def export_command(
    out: Path = typer.Option(None, "--out", "-o", help="Folder to write (with a DICOMDIR)."),
    zip_file: Path = typer.Option(None, "--zip", help="Write one zip instead of a folder."),
    study: list[str] = typer.Option([], "--study", help="Study Instance UID (repeatable)."),
    keys: list[str] = typer.Option([], "--key", "-k", help="KEY=VALUE choosing what to export."),
    data_dir: Path | None = DataDir,
) -> None:
    """Export studies (by UID or by query keys) as files with a DICOMDIR, or as a zip."""
    if out is None and zip_file is None:
        fail("give --out DIR or --zip FILE", 2)
    if not study and not keys:
        fail("choose what to export with --study UID or -k KEY=VALUE", 2)
    with open_archive(data_dir) as archive:
        refs: list[InstanceRef] = []
        try:
            study_uids = list(study)
            if keys:
                request = _query("study", keys, [], None)
                study_uids += [m.study_uid for m in find(archive, request)]
            for uid in dict.fromkeys(study_uids):
                refs.extend(find_instances(archive, study_uid=uid))
        except (BadRequest, NotFound) as exc:
            fail(str(exc))
        if not refs:
            fail("nothing matches: no instance to export")
        with _progress() as progress:
            task = progress.add_task("exporting", total=len(refs))
            try:
                report = export(
                    archive,
                    refs,
                    out,
                    zip_path=zip_file,
                    progress=lambda n: progress.advance(task, n),
                )
            except FileExistsError as exc:
                fail(str(exc), 2)
    where = report.zip_path or report.dicomdir
    console.print(
        f"exported {report.instances} instance(s), {report.bytes} bytes to {where}", highlight=False
    )
    for item in report.skipped:
        console.print(f"  skipped {item}", highlight=False)
    raise typer.Exit(0 if not report.skipped else 1)


@app.command("verify")
def verify_command(
    repair: bool = typer.Option(False, "--repair", help="Fix what can be fixed."),
    quick: bool = typer.Option(False, "--quick", help="Check sizes only, not checksums."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    data_dir: Path | None = DataDir,
) -> None:
    """Check the index against the store: missing objects, orphans, checksum mismatches.

    Exits 0 when everything agrees (or was repaired), 1 otherwise.
    """
    with open_archive(data_dir) as archive, _progress() as progress:
        task = progress.add_task("verifying", total=None)
        report = verify(
            archive,
            checksums=not quick,
            repair=repair,
            progress=lambda n: progress.advance(task, n),
        )
        after = verify(archive, checksums=False) if repair else report
    if as_json:
        print(json.dumps({**report.as_dict(), "ok_after_repair": after.ok}, indent=2))
    else:
        console.print(
            f"checked {report.checked_rows} index rows and {report.checked_objects} objects",
            highlight=False,
        )
        for label, items in (
            ("missing object", report.missing_objects),
            ("size mismatch", report.size_mismatches),
            ("checksum mismatch", report.checksum_mismatches),
            ("orphan object", report.orphan_objects),
            ("unreadable orphan", report.unreadable_orphans),
            ("repaired", report.repaired),
        ):
            for item in items:
                console.print(f"  {label}: {item}", highlight=False)
        console.print("consistent" if after.ok else "NOT consistent", highlight=False)
    ok = after.ok and not report.checksum_mismatches
    raise typer.Exit(0 if ok else 1)


def gather_stats(archive: Any) -> dict[str, Any]:
    """Counts, bytes, and breakdowns by modality, SOP class, transfer syntax and source."""
    with archive.db.read() as session:
        counts = count_rows(session)
        total = session.execute(select(func.coalesce(func.sum(Instance.size), 0))).scalar_one()
        current = Instance.is_current.is_(True)

        def breakdown(column: Any) -> dict[str, int]:
            rows = session.execute(
                select(column, func.count(Instance.pk)).where(current).group_by(column)
            ).all()
            return {str(k or ""): int(v) for k, v in rows}

        modalities = {
            str(k or ""): int(v)
            for k, v in session.execute(
                select(Series.modality, func.count(Instance.pk))
                .join(Instance, Instance.series_fk == Series.pk)
                .where(current)
                .group_by(Series.modality)
            ).all()
        }
        conflicts = session.execute(
            select(func.count(IngestConflict.pk)).where(IngestConflict.resolved.is_(False))
        ).scalar_one()
        stats = {
            **counts,
            "bytes": int(total),
            "open_conflicts": int(conflicts),
            "by_modality": modalities,
            "by_sop_class": breakdown(Instance.sop_class_uid),
            "by_transfer_syntax": breakdown(Instance.transfer_syntax_uid),
            "by_source": breakdown(Instance.source),
        }
    stats["where"] = archive.describe()
    return stats


@app.command("stats")
def stats_command(
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
    data_dir: Path | None = DataDir,
) -> None:
    """Counts of patients, studies, series, instances and versions; bytes; breakdowns."""
    with open_archive(data_dir) as archive:
        stats = gather_stats(archive)
    if as_json:
        print(json.dumps(stats, indent=2))
        return
    for key in (
        "patients",
        "studies",
        "series",
        "instances",
        "versions",
        "bytes",
        "open_conflicts",
    ):
        console.print(f"{key:>16}: {stats[key]}", highlight=False)
    for key in ("by_modality", "by_sop_class", "by_transfer_syntax", "by_source"):
        if stats[key]:
            console.print(f"{key}:", highlight=False)
            for name, count in sorted(stats[key].items(), key=lambda kv: -kv[1]):
                console.print(f"  {name or '(none)'}: {count}", highlight=False)
    for key, value in stats["where"].items():
        console.print(f"{key:>16}: {value}", highlight=False)


@app.command("conflicts")
def conflicts_command(
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
    show_all: bool = typer.Option(False, "--all", help="Include resolved ones."),
    data_dir: Path | None = DataDir,
) -> None:
    """List what ingest flagged: studies under two patients, Patient ID collisions, versions."""
    with open_archive(data_dir) as archive, archive.db.read() as session:
        stmt = select(IngestConflict).order_by(IngestConflict.pk)
        if not show_all:
            stmt = stmt.where(IngestConflict.resolved.is_(False))
        rows = [
            {
                "id": c.pk,
                "at": c.at.isoformat(),
                "kind": c.kind,
                "study": c.study_instance_uid,
                "sop_instance": c.sop_instance_uid,
                "patient_id": c.patient_id,
                "source": c.source,
                "detail": json.loads(c.detail) if c.detail else {},
            }
            for c in session.execute(stmt).scalars()
        ]
    if as_json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    if not rows:
        console.print("no open conflicts")
        return
    table = Table("id", "at", "kind", "patient id", "study", "detail")
    for row in rows:
        table.add_row(
            str(row["id"]),
            row["at"][:19],
            row["kind"],
            row["patient_id"],
            row["study"],
            json.dumps(row["detail"], ensure_ascii=False),
        )
    console.print(table)


@app.command("config")
def config_command(
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """Print the effective settings (file + environment) and where each can be set."""
    settings = settings_from_cli()
    docs = setting_docs()
    values = {name: str(getattr(settings, name.removeprefix("VNA_").lower())) for name in docs}
    values["VNA_INDEX_URL"] = settings.effective_index_url
    values["VNA_STORE_URL"] = settings.effective_store_url
    for secret in ("VNA_S3_SECRET_KEY",):
        if values.get(secret):
            values[secret] = "***"
    if as_json:
        print(json.dumps(values, indent=2))
        return
    for name, value in values.items():
        console.print(f"{name}={value}", highlight=False)

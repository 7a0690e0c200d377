"""`vna convert` (media → DICOM files in a folder) and the conversion options it shares with
`vna import`: the patient/study/source context, the manifest, and conversion choices."""

from __future__ import annotations

import functools
import inspect
import json
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)

from vna.cli.base import app, console, err_console, fail, settings_from_cli
from vna.convert import classify, convert_file, load_manifest, without_slide_companions
from vna.convert.batch import ConversionPlan
from vna.convert.common import Options, ProgressFn
from vna.convert.context import Context
from vna.errors import VnaError
from vna.ingest import iter_files

CONTEXT_PANEL = "Patient, study and source (for non-DICOM files)"
CHOICES_PANEL = "Conversion choices"


def _opt(flag: str, help_text: str, panel: str = CONTEXT_PANEL, default: Any = "") -> Any:
    return typer.Option(default, flag, help=help_text, rich_help_panel=panel)


#: name → (type, typer option); the context fields first, then the choices.
OPTIONS: dict[str, tuple[Any, Any]] = {
    "patient_id": (str, _opt("--patient-id", "Patient ID (required for non-DICOM files).")),
    "issuer": (str, _opt("--issuer", "Issuer of the Patient ID.")),
    "patient_name": (str, _opt("--patient-name", "Patient's name, DICOM form FAMILY^GIVEN.")),
    "birth_date": (str, _opt("--birth-date", "Birth date, YYYYMMDD or YYYY-MM-DD.")),
    "sex": (str, _opt("--sex", "Sex: M, F or O.")),
    "accession": (str, _opt("--accession", "Accession number (one case = one study).")),
    "study_description": (str, _opt("--study-description", "Study description.")),
    "study_date": (str, _opt("--study-date", "Study date (default today without accession).")),
    "study_time": (str, _opt("--study-time", "Study time, HHMMSS.")),
    "study_uid": (str, _opt("--study-uid", "Put the objects in this existing study.")),
    "referring_physician": (str, _opt("--referring-physician", "Referring physician.")),
    "body_part": (str, _opt("--body-part", "Body part (hand, skin…) or SCHEME:CODE:MEANING.")),
    "laterality": (str, _opt("--laterality", "R or L, for paired body parts.")),
    "department": (str, _opt("--department", "Department that took the media.")),
    "operator": (str, _opt("--operator", "Operator's name.")),
    "device_type": (
        str,
        _opt(
            "--device-type",
            "camera, phone, dermatoscope, endoscope, microscope, recorder, "
            "scanner or ultrasound; endoscope/microscope video becomes Video Endoscopic/"
            "Microscopic.",
        ),
    ),
    "series_description": (str, _opt("--series-description", "Series description.")),
    "document_title": (str, _opt("--document-title", "Title of a converted PDF.")),
    "manifest": (
        Path | None,
        _opt(
            "--manifest", "JSON or CSV manifest: one row per file with its context.", default=None
        ),
    ),
    "exif_datetime": (
        bool,
        _opt(
            "--exif-datetime",
            "Take a photo's acquisition date/time from its EXIF.",
            CHOICES_PANEL,
            False,
        ),
    ),
    "orientation": (
        str,
        _opt(
            "--orientation",
            "EXIF orientation: apply (rotate the pixels) or record.",
            CHOICES_PANEL,
            "apply",
        ),
    ),
    "jpeg_quality": (
        int | None,
        _opt(
            "--jpeg-quality",
            "Transcode photos to JPEG baseline at this quality (lossy).",
            CHOICES_PANEL,
            None,
        ),
    ),
    "include_label": (
        bool,
        _opt("--include-label", "Keep a slide's label image.", CHOICES_PANEL, False),
    ),
    "include_overview": (
        bool,
        _opt("--include-overview", "Keep a slide's overview (macro).", CHOICES_PANEL, False),
    ),
    "include_thumbnail": (
        bool,
        _opt("--include-thumbnail", "Keep a slide's thumbnail.", CHOICES_PANEL, False),
    ),
    "keep_pdf_metadata": (
        bool,
        _opt(
            "--keep-pdf-metadata",
            "Keep a PDF's document information and XMP.",
            CHOICES_PANEL,
            False,
        ),
    ),
    "audio_source": (
        str,
        _opt(
            "--audio-source",
            "What a sound is: physiological, phonocardiogram, voice, doppler or ambient.",
            CHOICES_PANEL,
            "physiological",
        ),
    ),
}
CONTEXT_FIELDS = {f for f in OPTIONS if f in Context.__dataclass_fields__}


def build_plan(values: dict[str, Any]) -> ConversionPlan:
    """The ConversionPlan of the given option values (exits 2 on a bad manifest/choice)."""
    if values["orientation"] not in ("apply", "record"):
        fail("--orientation must be apply or record", 2)
    quality = values["jpeg_quality"]
    if quality is not None and not 1 <= quality <= 100:
        fail("--jpeg-quality must be between 1 and 100", 2)
    manifest = None
    if values["manifest"] is not None:
        try:
            manifest = load_manifest(values["manifest"])
        except VnaError as exc:
            fail(str(exc), 2)
    options = Options(
        exif_datetime=values["exif_datetime"],
        orientation=values["orientation"],
        jpeg_quality=quality,
        include_label=values["include_label"],
        include_overview=values["include_overview"],
        include_thumbnail=values["include_thumbnail"],
        keep_pdf_metadata=values["keep_pdf_metadata"],
        audio_source=values["audio_source"],
    )
    defaults = Context(**{k: v for k, v in values.items() if k in CONTEXT_FIELDS})
    return ConversionPlan(defaults=defaults, manifest=manifest, options=options)


def with_conversion_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add the conversion options to a command; it receives them as ``plan``."""
    signature = inspect.signature(func)
    own = [p for p in signature.parameters.values() if p.name != "plan"]
    added = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=kind)
        for name, (kind, info) in OPTIONS.items()
    ]

    @functools.wraps(func)
    def command(**kwargs: Any) -> Any:
        values = {name: kwargs.pop(name) for name in OPTIONS}
        return func(plan=build_plan(values), **kwargs)

    command.__signature__ = signature.replace(parameters=own + added)  # type: ignore[attr-defined]
    annotations = {k: v for k, v in func.__annotations__.items() if k != "plan"}
    command.__annotations__ = {**annotations, **{n: k for n, (k, _) in OPTIONS.items()}}
    return command


def slide_tasks(bar: Progress) -> Callable[[Path], ProgressFn]:
    """``start(path)`` adds a slide's task to ``bar`` and returns its progress callback."""

    def start(path: Path) -> ProgressFn:
        task = bar.add_task(f"slide {path.name}", total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)
            if done >= total:
                bar.remove_task(task)

        return update

    return start


@contextmanager
def slide_progress() -> Iterator[Callable[[Path], ProgressFn]]:
    """A byte progress bar per slide (rich allows one live display: `vna import` adds the
    slides' tasks to its own bar with :func:`slide_tasks` instead)."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        DownloadColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as bar:
        yield slide_tasks(bar)


@app.command("convert")
@with_conversion_options
def convert_command(
    paths: list[Path] = typer.Argument(None, help="Files and folders; DICOM files are copied."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write the DICOM files to."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    plan: ConversionPlan | None = None,
) -> None:
    """Convert photos, video, sound, PDFs and slides into DICOM files (nothing is archived).

    Exits 0 when every file was converted (or copied), 1 when any failed.
    """
    assert plan is not None
    settings_from_cli()  # logging as for every command
    sources = list(paths or []) or (plan.manifest.files if plan.manifest else [])
    if not sources:
        fail("give files or folders to convert, or --manifest", 2)
    for path in sources:
        if not path.exists():
            fail(f"{path}: no such file or folder", 2)
    out.mkdir(parents=True, exist_ok=True)
    written: list[dict[str, Any]] = []
    failed: list[dict[str, str]] = []
    files = [f for f in iter_files(sources) if not f.resolve().is_relative_to(out.resolve())]
    files = without_slide_companions(files)
    with slide_progress() as start:
        for path, number in plan.numbered(files):
            try:
                written.append(_convert_one(path, out, plan, number, start))
            except VnaError as exc:
                failed.append({"path": str(path), "reason": str(exc)})
                err_console.print(f"[yellow]failed[/yellow] {path}: {exc}", highlight=False)
    objects = sum(len(item["objects"]) for item in written)
    if as_json:
        print(json.dumps({"converted": written, "failed": failed, "objects": objects}, indent=2))
    else:
        console.print(
            f"converted {len(written)} file(s) into {objects} DICOM file(s) in {out}, "
            f"failed {len(failed)}",
            highlight=False,
        )
        for item in written:
            for note in item["warnings"]:
                console.print(f"  note {item['path']}: {note}", highlight=False)
        for item in failed:
            console.print(f"  failed {item['path']}: {item['reason']}", highlight=False)
    raise typer.Exit(1 if failed else 0)


def _convert_one(
    path: Path, out: Path, plan: ConversionPlan, number: int, start: Callable[[Path], ProgressFn]
) -> dict[str, Any]:
    """Convert (or, for DICOM, copy) one file; what was written and why."""
    notes: list[str] = []
    kind, found = classify(path)
    notes.extend(found)
    if kind is None:
        from vna.dicomfile import read_object

        parsed = read_object(path)  # raises NotDicom with the reason
        target = out / f"{parsed.sop_instance_uid}.dcm"
        shutil.copyfile(path, target)
        return {"path": str(path), "kind": "dicom", "objects": [str(target)], "warnings": []}
    progress = start(path) if kind == "wsi" else None
    created = convert_file(
        path,
        plan.context_for(path),
        out,
        plan.options,
        kind=kind,
        instance_number=number,
        progress=progress,
        warnings=notes,
    )
    objects = [str(p) for p in created]
    return {"path": str(path), "kind": kind, "objects": objects, "warnings": notes}

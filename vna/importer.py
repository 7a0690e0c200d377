"""Bulk import of files and folders (what `vna import` runs).

Files are ingested in parallel worker processes (parsing and hashing are CPU-bound; the
index serialises its own writes). A DICOMDIR is followed: the files it references are
imported, the DICOMDIR itself is not stored. Every file ends with one outcome; a batch never
stops at a bad file.

Non-DICOM files (photos, video, sound, PDF, slides) are converted first (vna.convert) with the
context of a ConversionPlan, then ingested like any DICOM object. Slides are converted one at
a time in the calling process (wsidicomizer runs its own workers and reports progress);
everything else goes through the worker pool.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pydicom.fileset import FileSet

from vna.archive import Archive
from vna.config import Settings
from vna.convert import (
    EXTENSIONS,
    WSI,
    classify,
    convert_file,
    is_slide,
    without_slide_companions,
)
from vna.convert.batch import ConversionPlan
from vna.convert.common import ProgressFn
from vna.errors import VnaError
from vna.ingest import DUPLICATE, file_sha256, ingest_file, ingest_spooled, iter_files

log = logging.getLogger(__name__)

MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
STORED, DUPLICATE_OUTCOME, REJECTED = "stored", "duplicate", "rejected"


@dataclass
class FileOutcome:
    """The result for one file."""

    path: str
    status: str  # stored / duplicate / rejected
    reason: str = ""
    sop_instance_uid: str = ""
    warnings: list[str] = field(default_factory=list)
    kind: str = "dicom"  # or the kind of media converted: photo, video, audio, pdf, wsi
    objects: int = 1  # DICOM objects stored from this file


@dataclass
class ImportSummary:
    """Counts of a batch and the reasons of every rejection."""

    stored: int = 0
    duplicates: int = 0
    warnings: int = 0
    rejected: list[FileOutcome] = field(default_factory=list)
    followed_dicomdirs: list[str] = field(default_factory=list)
    bytes: int = 0
    converted: int = 0  # non-DICOM files made into DICOM objects

    @property
    def ok(self) -> bool:
        return not self.rejected

    def add(self, outcome: FileOutcome) -> None:
        if outcome.kind != "dicom" and outcome.status != REJECTED:
            self.converted += 1
        if outcome.status == STORED:
            self.stored += 1
        elif outcome.status == DUPLICATE_OUTCOME:
            self.duplicates += 1
        else:
            self.rejected.append(outcome)
        if outcome.warnings:
            self.warnings += 1


def is_dicomdir(path: Path) -> bool:
    """A DICOMDIR by name or by its Media Storage SOP Class (PS3.10 8.6)."""
    if path.name.upper() == "DICOMDIR":
        return True
    try:
        with path.open("rb") as fp:
            head = fp.read(132)
            if head[128:132] != b"DICM":
                return False
            meta = dcmread(path, stop_before_pixels=True, specific_tags=[0x00020002]).file_meta
    except Exception:
        return False
    return str(meta.get("MediaStorageSOPClassUID", "")) == MEDIA_STORAGE_DIRECTORY


def dicomdir_files(path: Path) -> list[Path]:
    """Files a DICOMDIR references (PS3.10 Referenced File ID), resolved against its folder."""
    fileset = FileSet(dcmread(path))
    return [Path(instance.path) for instance in fileset]


def expand(
    paths: Iterable[Path], summary: ImportSummary, own_folders: Iterable[Path] = ()
) -> Iterator[Path]:
    """Files to import: folders walked, DICOMDIRs followed (once), duplicates removed."""
    seen: set[Path] = set()
    own = [d.resolve() for d in own_folders]
    for path in iter_files(paths):
        if own and any(path.resolve().is_relative_to(d) for d in own):
            continue  # never import the archive's own files
        if is_dicomdir(path):
            summary.followed_dicomdirs.append(str(path))
            try:
                referenced = dicomdir_files(path)
            except Exception as exc:
                summary.add(FileOutcome(str(path), REJECTED, f"unreadable DICOMDIR: {exc}"))
                continue
            for ref in referenced:
                real = ref.resolve()
                if real not in seen:
                    seen.add(real)
                    yield ref
            continue
        real = path.resolve()
        if real not in seen:
            seen.add(real)
            yield path


def import_one(
    archive: Archive,
    path: Path,
    plan: ConversionPlan | None = None,
    instance_number: int = 1,
    progress: ProgressFn | None = None,
) -> FileOutcome:
    """Ingest one file; every failure becomes a rejected outcome with its reason.

    With a ``plan``, a photo, video, sound, PDF or slide is converted first; DICOM files are
    ingested as they are either way.
    """
    try:
        kind, notes = classify(path) if plan is not None else (None, [])
        if kind is not None:
            assert plan is not None
            return _convert_and_ingest(archive, path, kind, notes, plan, instance_number, progress)
        result = ingest_file(archive, path, source="import")
    except VnaError as exc:
        return FileOutcome(str(path), REJECTED, str(exc))
    except OSError as exc:
        return FileOutcome(str(path), REJECTED, f"cannot read: {exc.strerror or exc}")
    except Exception as exc:  # a parser bug must not stop the batch
        log.exception("unexpected error importing %s", path)
        return FileOutcome(str(path), REJECTED, f"unexpected error: {exc}")
    status = DUPLICATE_OUTCOME if result.status == DUPLICATE else STORED
    return FileOutcome(str(path), status, "", result.sop_instance_uid, result.warnings)


def _convert_and_ingest(
    archive: Archive,
    path: Path,
    kind: str,
    notes: list[str],
    plan: ConversionPlan,
    instance_number: int,
    progress: ProgressFn | None,
) -> FileOutcome:
    """Convert into the spool folder (same disk as the store), then ingest each object."""
    archive.spool_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=archive.spool_dir, prefix="convert-") as tmp:
        created = convert_file(
            path,
            plan.context_for(path),
            Path(tmp),
            plan.options,
            kind=kind,
            instance_number=instance_number,
            progress=progress,
            warnings=notes,
        )
        results = []
        for obj in created:
            sha, size = file_sha256(obj)
            results.append(ingest_spooled(archive, obj, sha, size, source=f"convert:{kind}"))
    duplicates = all(r.status == DUPLICATE for r in results)
    warnings = list(dict.fromkeys([*notes, *(w for r in results for w in r.warnings)]))
    return FileOutcome(
        str(path),
        DUPLICATE_OUTCOME if duplicates else STORED,
        "",
        results[0].sop_instance_uid,
        warnings,
        kind=kind,
        objects=len(results),
    )


class _Worker:
    """Process-local archive of a pool worker (opened once per worker process)."""

    archive: Archive | None = None
    plan: ConversionPlan | None = None

    @classmethod
    def start(cls, settings: Settings, plan: ConversionPlan | None = None) -> None:
        cls.archive = Archive.open(settings, migrate=False)
        cls.plan = plan

    @classmethod
    def run(cls, item: tuple[str, int]) -> FileOutcome:
        assert cls.archive is not None
        return import_one(cls.archive, Path(item[0]), cls.plan, item[1])


def run_import(
    archive: Archive,
    paths: Iterable[Path],
    *,
    workers: int | None = None,
    on_outcome: Callable[[FileOutcome], None] | None = None,
    plan: ConversionPlan | None = None,
    on_slide: Callable[[Path], ProgressFn] | None = None,
) -> ImportSummary:
    """Import everything under ``paths``; return the summary (never raises for a bad file).

    With a ``plan``, non-DICOM files are converted with its context; ``on_slide`` is called
    before each slide's conversion and returns the progress callback for it.
    """
    summary = ImportSummary()
    files = list(expand(paths, summary, [archive.settings.data_dir]))
    if plan is not None:
        files = without_slide_companions(files)
    items = plan.numbered(files) if plan is not None else [(p, 1) for p in files]
    slides = [item for item in items if plan is not None and _is_slide_file(item[0])]
    items = [item for item in items if item not in slides]
    n_workers = workers if workers is not None else archive.settings.import_workers
    n_workers = max(1, min(n_workers, len(items)))

    def record(outcome: FileOutcome) -> None:
        summary.add(outcome)
        if on_outcome:
            on_outcome(outcome)

    for path, number in slides:
        progress = on_slide(path) if on_slide else None
        record(import_one(archive, path, plan, number, progress))
    if n_workers == 1 or len(items) < 8:
        for path, number in items:
            record(import_one(archive, path, plan, number))
        return summary
    with cf.ProcessPoolExecutor(
        max_workers=n_workers, initializer=_Worker.start, initargs=(archive.settings, plan)
    ) as pool:
        work = [(str(p), n) for p, n in items]
        for outcome in pool.map(_Worker.run, work, chunksize=4):
            record(outcome)
    return summary


def _is_slide_file(path: Path) -> bool:
    """A slide (converted in this process, with progress), told cheaply from the others."""
    try:
        with path.open("rb") as fp:
            head = fp.read(132)
    except OSError:
        return False
    if head[128:132] == b"DICM":
        return False
    return (head[:2] in (b"II", b"MM") or path.suffix.lower() in WSI_SUFFIXES) and is_slide(path)


WSI_SUFFIXES = frozenset(suffix for suffix, kind in EXTENSIONS.items() if kind == WSI)

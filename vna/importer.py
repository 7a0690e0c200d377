"""Bulk import of files and folders (what `vna import` runs).

Files are ingested in parallel worker processes (parsing and hashing are CPU-bound; the
index serialises its own writes). A DICOMDIR is followed: the files it references are
imported, the DICOMDIR itself is not stored. Every file ends with one outcome; a batch never
stops at a bad file.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pydicom.fileset import FileSet

from vna.archive import Archive
from vna.config import Settings
from vna.errors import VnaError
from vna.ingest import DUPLICATE, ingest_file, iter_files

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


@dataclass
class ImportSummary:
    """Counts of a batch and the reasons of every rejection."""

    stored: int = 0
    duplicates: int = 0
    warnings: int = 0
    rejected: list[FileOutcome] = field(default_factory=list)
    followed_dicomdirs: list[str] = field(default_factory=list)
    bytes: int = 0

    @property
    def ok(self) -> bool:
        return not self.rejected

    def add(self, outcome: FileOutcome) -> None:
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


def import_one(archive: Archive, path: Path) -> FileOutcome:
    """Ingest one file; every failure becomes a rejected outcome with its reason."""
    try:
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


class _Worker:
    """Process-local archive of a pool worker (opened once per worker process)."""

    archive: Archive | None = None

    @classmethod
    def start(cls, settings: Settings) -> None:
        cls.archive = Archive.open(settings, migrate=False)

    @classmethod
    def run(cls, path: str) -> FileOutcome:
        assert cls.archive is not None
        return import_one(cls.archive, Path(path))


def run_import(
    archive: Archive,
    paths: Iterable[Path],
    *,
    workers: int | None = None,
    on_outcome: Callable[[FileOutcome], None] | None = None,
) -> ImportSummary:
    """Import everything under ``paths``; return the summary (never raises for a bad file)."""
    summary = ImportSummary()
    files = list(expand(paths, summary, [archive.settings.data_dir]))
    n_workers = workers if workers is not None else archive.settings.import_workers
    n_workers = max(1, min(n_workers, len(files)))

    def record(outcome: FileOutcome) -> None:
        summary.add(outcome)
        if on_outcome:
            on_outcome(outcome)

    if n_workers == 1 or len(files) < 8:
        for path in files:
            record(import_one(archive, path))
        return summary
    with cf.ProcessPoolExecutor(
        max_workers=n_workers, initializer=_Worker.start, initargs=(archive.settings,)
    ) as pool:
        for outcome in pool.map(_Worker.run, [str(p) for p in files], chunksize=4):
            record(outcome)
    return summary

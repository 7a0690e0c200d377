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
from vna.dicomfile import sniff
from vna.errors import InvalidObject, VnaError
from vna.ingest import (
    DUPLICATE,
    IngestResult,
    Outcome,
    Staged,
    index_staged,
    ingest_file,
    iter_files,
    stage_files,
)

log = logging.getLogger(__name__)

MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
STORED, DUPLICATE_OUTCOME, REJECTED = "stored", "duplicate", "rejected"
#: Files indexed per transaction: large enough to amortise commits, small enough that a
#: progress bar moves and a failed batch is cheap to redo one by one.
BATCH = 32


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
    """A DICOMDIR by name or by its Media Storage SOP Class in the file meta (PS3.10 8.6),
    judged from the first bytes only: this runs on every file of an import."""
    if path.name.upper() == "DICOMDIR":
        return True
    try:
        with path.open("rb") as fp:
            head = fp.read(1024)
    except OSError:
        return False
    if head[128:132] != b"DICM":
        return False
    at = head.find(MEDIA_STORAGE_DIRECTORY.encode(), 132)
    # the UID must end there (padding NUL or space), not continue as a longer UID
    return at != -1 and head[at + len(MEDIA_STORAGE_DIRECTORY) : at + 21] in (b"\x00", b" ", b"")


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


def _looks_like_dicom(path: Path) -> bool:
    try:
        with path.open("rb") as fp:
            return sniff(fp)
    except OSError:
        return False


def _outcome(path: Path, result: Outcome) -> FileOutcome:
    if result is None:
        return FileOutcome(str(path), REJECTED, "not processed")
    if isinstance(result, VnaError):
        return FileOutcome(str(path), REJECTED, str(result))
    status = DUPLICATE_OUTCOME if result.status == DUPLICATE else STORED
    return FileOutcome(str(path), status, "", result.sop_instance_uid, result.warnings)


def stage_batch(archive: Archive, paths: list[Path]) -> tuple[list[Outcome], list[Staged]]:
    """Stage the DICOM files of a batch (store them, rows not yet written); other files are
    imported one by one through import_one and come back as finished outcomes."""
    out: list[Outcome] = [None] * len(paths)
    dicom = [i for i, p in enumerate(paths) if _looks_like_dicom(p)]
    done, staged = stage_files(archive, [paths[i] for i in dicom])
    for j, result in enumerate(done):
        out[dicom[j]] = result
    for item in staged:
        item.index = dicom[item.index]
    others = set(range(len(paths))) - set(dicom)
    finished: dict[int, FileOutcome] = {i: import_one(archive, paths[i]) for i in others}
    return [_as_result(finished.get(i), out[i]) for i in range(len(paths))], staged


def _as_result(finished: FileOutcome | None, result: Outcome) -> Outcome:
    if finished is None:
        return result
    if finished.status == REJECTED:
        return InvalidObject(finished.reason)
    return IngestResult(
        status=DUPLICATE if finished.status == DUPLICATE_OUTCOME else "stored",
        sop_class_uid="",
        sop_instance_uid=finished.sop_instance_uid,
        study_instance_uid="",
        series_instance_uid="",
        transfer_syntax_uid="",
        size=0,
        sha256="",
        warnings=finished.warnings,
    )


def import_batch(archive: Archive, paths: list[Path]) -> list[FileOutcome]:
    """Import several files: DICOM ones indexed together in one transaction."""
    out, staged = stage_batch(archive, paths)
    index_staged(archive, staged, "import", out)
    return [_outcome(p, r) for p, r in zip(paths, out, strict=True)]


class _Worker:
    """Process-local archive of a pool worker (opened once per worker process)."""

    archive: Archive | None = None

    @classmethod
    def start(cls, settings: Settings) -> None:
        cls.archive = Archive.open(settings, migrate=False)

    @classmethod
    def run(cls, paths: list[str]) -> tuple[list[Outcome], list[Staged]]:
        """Stage a batch in this worker; the parent process writes the rows, so that a
        SQLite index has one writer instead of processes queueing on its lock."""
        assert cls.archive is not None
        out, staged = stage_batch(cls.archive, [Path(p) for p in paths])
        return out, [item.detach() for item in staged]


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

    batches = [files[i : i + BATCH] for i in range(0, len(files), BATCH)]
    if n_workers == 1 or len(files) < 2 * BATCH:
        for batch in batches:
            for outcome in import_batch(archive, batch):
                record(outcome)
        return summary
    with cf.ProcessPoolExecutor(
        max_workers=n_workers, initializer=_Worker.start, initargs=(archive.settings,)
    ) as pool:
        jobs = [[str(p) for p in b] for b in batches]
        for batch, (out, staged) in zip(batches, pool.map(_Worker.run, jobs), strict=True):
            index_staged(archive, staged, "import", out)
            for path, result in zip(batch, out, strict=True):
                record(_outcome(path, result))
    return summary

"""Bulk import of files and folders (what `vna import` runs).

Files are staged in parallel worker processes (hashing, parsing and storing are the work;
DICOM files go in batches), and the calling process writes the index rows of each batch in
one transaction: one writer, few commits. A DICOMDIR is followed: the files it references are
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
from vna.dicomfile import sniff
from vna.errors import VnaError
from vna.ingest import (
    DUPLICATE,
    Outcome,
    Staged,
    file_sha256,
    index_staged,
    ingest_file,
    ingest_spooled,
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
    end = at + len(MEDIA_STORAGE_DIRECTORY)
    return at != -1 and head[end : end + 1] in (b"\x00", b" ", b"")


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


Item = tuple[Path, int]  # a file and the instance number a conversion gives it


@dataclass
class StagedBatch:
    """A batch after staging: outcomes already decided, and stored DICOM objects whose
    rows are still to be written (by whichever process owns the index writes)."""

    items: list[Item]
    finished: dict[int, FileOutcome]
    out: list[Outcome]
    staged: list[Staged]

    def finish(self, archive: Archive) -> list[FileOutcome]:
        """Write the rows; the outcome of every file, in batch order."""
        index_staged(archive, self.staged, "import", self.out)
        return [
            self.finished.get(i) or _outcome(path, self.out[i])
            for i, (path, _n) in enumerate(self.items)
        ]


def stage_batch(
    archive: Archive, items: list[Item], plan: ConversionPlan | None = None
) -> StagedBatch:
    """Stage the DICOM files of a batch (stored, rows not written); media files are
    converted and ingested one by one through import_one."""
    out: list[Outcome] = [None] * len(items)
    dicom = [i for i, (p, _n) in enumerate(items) if _looks_like_dicom(p)]
    done, staged = stage_files(archive, [items[i][0] for i in dicom])
    for j, result in enumerate(done):
        out[dicom[j]] = result
    for item in staged:
        item.index = dicom[item.index]
    dicom_set = set(dicom)
    finished = {
        i: import_one(archive, path, plan, number)
        for i, (path, number) in enumerate(items)
        if i not in dicom_set
    }
    return StagedBatch(items, finished, out, staged)


def import_batch(
    archive: Archive, items: list[Item], plan: ConversionPlan | None = None
) -> list[FileOutcome]:
    """Import several files: DICOM ones indexed together in one transaction."""
    return stage_batch(archive, items, plan).finish(archive)


class _Worker:
    """Process-local archive of a pool worker (opened once per worker process)."""

    archive: Archive | None = None
    plan: ConversionPlan | None = None

    @classmethod
    def start(cls, settings: Settings, plan: ConversionPlan | None = None) -> None:
        cls.archive = Archive.open(settings, migrate=False)
        cls.plan = plan

    @classmethod
    def run(cls, batch: list[tuple[str, int]]) -> StagedBatch:
        """Stage a batch in this worker; the parent process writes the rows, so that a
        SQLite index has one writer instead of processes queueing on its lock."""
        assert cls.archive is not None
        staged = stage_batch(cls.archive, [(Path(p), n) for p, n in batch], cls.plan)
        staged.staged = [item.detach() for item in staged.staged]
        return staged


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
    batches = [items[i : i + BATCH] for i in range(0, len(items), BATCH)]
    if n_workers == 1 or len(items) < 2 * BATCH:
        for batch in batches:
            for outcome in import_batch(archive, batch, plan):
                record(outcome)
        return summary
    with cf.ProcessPoolExecutor(
        max_workers=n_workers, initializer=_Worker.start, initargs=(archive.settings, plan)
    ) as pool:
        jobs = [[(str(p), n) for p, n in batch] for batch in batches]
        for staged in pool.map(_Worker.run, jobs):
            for outcome in staged.finish(archive):
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

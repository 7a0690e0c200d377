"""Exports: chosen instances written to a folder with a DICOMDIR (PS3.10 / PS3.11 General
Purpose media layout), optionally packed into one zip that any DICOM viewer opens."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pydicom.fileset import FileSet

from vna.archive import Archive
from vna.retrieve import InstanceRef, open_instance


@dataclass
class ExportReport:
    """What an export wrote."""

    instances: int = 0
    bytes: int = 0
    skipped: list[str] = field(default_factory=list)  # "UID: reason"
    dicomdir: Path | None = None
    zip_path: Path | None = None


def export(
    archive: Archive,
    refs: Iterable[InstanceRef],
    out_dir: Path | None = None,
    *,
    zip_path: Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> ExportReport:
    """Write the instances (as stored, byte for byte) under ``out_dir`` with a DICOMDIR.

    With ``zip_path`` the folder is built in a temporary place and packed into the zip.
    Raises:
        FileExistsError: ``out_dir`` already holds a DICOMDIR.
    """
    report = ExportReport()
    with contextlib.ExitStack() as stack:
        if zip_path is not None and out_dir is None:
            out_dir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        assert out_dir is not None
        out_dir.mkdir(parents=True, exist_ok=True)
        if (out_dir / "DICOMDIR").exists():
            raise FileExistsError(f"{out_dir} already holds a DICOMDIR")
        staging = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=archive.spool_dir)))
        # pydicom builds the DICOMDIR records from header-only copies; the files it writes are
        # then replaced by the stored bytes, so the export is byte-identical to the archive.
        fileset = FileSet()
        chosen: dict[str, InstanceRef] = {}
        for i, ref in enumerate(refs):
            if ref.sop_instance_uid in chosen:
                continue
            header = staging / f"{i:08d}.dcm"
            _copy_header(archive, ref, header)
            try:
                fileset.add(dcmread(header, stop_before_pixels=True, defer_size="64 KB"))
            except Exception as exc:  # a record pydicom cannot make: keep going
                report.skipped.append(f"{ref.sop_instance_uid}: {exc}")
                continue
            finally:
                header.unlink(missing_ok=True)
            chosen[ref.sop_instance_uid] = ref
        fileset.write(out_dir)
        for instance in fileset:
            ref = chosen[instance.SOPInstanceUID]
            with open_instance(archive, ref) as src, Path(instance.path).open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            report.instances += 1
            report.bytes += ref.size
            if progress:
                progress(1)
        report.dicomdir = out_dir / "DICOMDIR"
        if zip_path is not None:
            _zip_folder(out_dir, zip_path)
            report.zip_path = zip_path
    return report


def _copy_header(archive: Archive, ref: InstanceRef, path: Path) -> None:
    """The stored bytes up to the pixel data (enough for a directory record)."""
    end = ref.pixel_offset if ref.pixel_offset is not None else ref.size
    with path.open("wb") as dst:
        for chunk in archive.store.iter_chunks(ref.storage_key, 0, end):
            dst.write(chunk)


def _zip_folder(folder: Path, zip_path: Path) -> None:
    """Pack a folder; DICOM files are stored as they are (most are already compressed)."""
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = zip_path.with_suffix(zip_path.suffix + ".part")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(folder).as_posix())
    tmp.replace(zip_path)

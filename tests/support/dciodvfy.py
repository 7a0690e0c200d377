"""dicom3tools' dciodvfy as a test oracle: the errors it reports for a file, normalised so that
the same problem with another value compares equal (before / after de-identification)."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pydicom
import pydicom.uid
import pytest


def available() -> bool:
    return shutil.which("dciodvfy") is not None


DEFLATED = "1.2.840.10008.1.2.1.99"


def _inflated(path: Path) -> Path:
    """A Deflated Explicit VR Little Endian file rewritten as Explicit VR Little Endian.

    dciodvfy's inflater misreads some valid deflate streams (a garbage tag with an odd
    length, content-dependent); pydicom and zlib read them whole. The IOD checks are made on
    the same data set without the compression layer.
    """
    head = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    meta = getattr(head, "file_meta", None)
    if meta is None or str(meta.get("TransferSyntaxUID", "")) != DEFLATED:
        return path
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    folder = Path(tempfile.mkdtemp(prefix="vna-inflated-"))  # never beside the source
    out = folder / path.name
    ds.save_as(out, enforce_file_format=True)
    return out


def errors(path: Path) -> set[str]:
    """The set of normalised error lines dciodvfy prints for ``path``."""
    if not available():
        pytest.skip("dciodvfy (dicom3tools) is not installed")
    target = _inflated(path)
    try:
        run = subprocess.run(
            ["dciodvfy", "-new", str(target)],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=60,
        )
    finally:
        if target != path:
            shutil.rmtree(target.parent, ignore_errors=True)
    out = set()
    for line in (run.stdout + run.stderr).splitlines():
        if line.startswith("Error"):
            line = re.sub(r"<[^>]*>", "<>", line)
            line = re.sub(r"\[\d+\]", "[]", line)
            out.add(line.strip())
    return out


def new_errors(source: Path, result: Path) -> set[str]:
    """Errors of ``result`` that ``source`` did not have."""
    return errors(result) - errors(source)

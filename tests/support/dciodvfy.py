"""dicom3tools' dciodvfy as a test oracle: the errors it reports for a file, normalised so that
the same problem with another value compares equal (before / after de-identification)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest


def available() -> bool:
    return shutil.which("dciodvfy") is not None


def errors(path: Path) -> set[str]:
    """The set of normalised error lines dciodvfy prints for ``path``."""
    if not available():
        pytest.skip("dciodvfy (dicom3tools) is not installed")
    run = subprocess.run(
        ["dciodvfy", "-new", str(path)],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=60,
    )
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

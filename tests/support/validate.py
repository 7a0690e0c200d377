"""Checking what the converters write: dciodvfy (dicom3tools) and byte searches.

dciodvfy's errors must be none. Its warnings are tolerated only when they match one of
``ACCEPTED_WARNINGS``, each justified in docs/conversion.md.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

import pydicom
import pytest

GENERAL_AUDIO = "1.2.840.10008.5.1.4.1.1.9.4.2"
BASIC_VOICE = "1.2.840.10008.5.1.4.1.1.9.4.1"
ACCEPTED_WARNINGS = [
    # Laterality (Type 2C) sent empty for a paired body part whose side the user did not give
    re.compile(r"is only permitted to be empty when actually unknown.*<Laterality>"),
]


def dciodvfy(path: Path) -> tuple[list[str], list[str]]:
    """(errors, warnings) dciodvfy reports for a file.

    dicom3tools (2022) knows no General Audio Waveform IOD; such an object is checked as Basic
    Voice Audio, which has the same modules (only its value constraints differ, and
    dciodvfy does not check those).
    """
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (dicom3tools) is not installed")
    target = path
    with tempfile.TemporaryDirectory() as tmp:
        ds = pydicom.dcmread(path, stop_before_pixels=False)
        if ds.SOPClassUID == GENERAL_AUDIO:
            ds.SOPClassUID = BASIC_VOICE
            ds.file_meta.MediaStorageSOPClassUID = BASIC_VOICE
            target = Path(tmp) / "as-basic-voice.dcm"
            ds.save_as(target)
        result = subprocess.run(
            ["dciodvfy", str(target)], capture_output=True, text=True, timeout=120
        )
    lines = [line.strip() for line in (result.stdout + result.stderr).splitlines()]
    errors = [line for line in lines if line.startswith("Error")]
    warnings = [line for line in lines if line.startswith("Warning")]
    return errors, warnings


def assert_valid(paths: Iterable[Path]) -> None:
    """No dciodvfy error, only accepted warnings, and a pydicom round trip, for each file."""
    for path in paths:
        errors, warnings = dciodvfy(path)
        assert errors == [], f"{path.name}: {errors}"
        unexpected = [w for w in warnings if not any(p.search(w) for p in ACCEPTED_WARNINGS)]
        assert unexpected == [], f"{path.name}: {unexpected}"
        ds = pydicom.dcmread(path)
        assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
        again = Path(tempfile.mkdtemp()) / "again.dcm"
        ds.save_as(again, enforce_file_format=True)
        assert pydicom.dcmread(again).SOPInstanceUID == ds.SOPInstanceUID
        shutil.rmtree(again.parent)


def find_planted(paths: Iterable[Path], needles: Iterable[bytes]) -> list[str]:
    """Which needles occur in which file (raw bytes: header, pixel data fragments, all)."""
    found = []
    items = list(needles)
    for path in paths:
        data = path.read_bytes()
        found += [f"{path.name}: {n!r}" for n in items if n in data]
    return found

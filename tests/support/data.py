"""Test data: the shared real-world files, pydicom's files, and generated objects."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@cache
def real_data_dir() -> Path | None:
    """The real-world files (``VNA_TESTDATA`` or ``../shared/testdata/real``), if present."""
    candidates = [
        os.environ.get("VNA_TESTDATA", ""),
        str(ROOT.parent / "shared" / "testdata" / "real"),
        "/work/shared/testdata/real",
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


def require_real_data() -> Path:
    """The real-world folder, or skip the test with the reason."""
    found = real_data_dir()
    if found is None:
        pytest.skip("real-world test data not found (set VNA_TESTDATA)")
    return found


def real_files() -> list[Path]:
    """Every real-world DICOM file (DICOMDIRs excluded), in a stable order."""
    base = real_data_dir()
    if base is None:
        return []
    return sorted(p for p in base.rglob("*") if p.is_file() and p.name.upper() != "DICOMDIR")


def real_ids() -> list[str]:
    base = real_data_dir()
    return [str(p.relative_to(base)) for p in real_files()] if base else []


def pydicom_file(name: str) -> Path:
    """A file bundled with pydicom or pydicom-data (never downloaded)."""
    from pydicom.data import get_testdata_file

    found = get_testdata_file(name, download=False)
    if found is None:
        pytest.fail(f"pydicom test file {name} is not installed (pydicom-data missing?)")
    return Path(str(found))

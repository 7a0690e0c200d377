"""Fixtures shared by every test: settings and archives on both back ends, test data.

Back ends: ``sqlite-fs`` (the embedded default) and ``pg-s3`` (PostgreSQL at 127.0.0.1:5432
in a throwaway database, plus a real SeaweedFS S3 gateway started by tests/support/seaweed).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = ["tests.support.seaweed", "tests.support.postgres"]

ROOT = Path(__file__).resolve().parent


@pytest.fixture(
    params=[
        "sqlite-fs",
        pytest.param("pg-s3", marks=[pytest.mark.postgres, pytest.mark.s3]),
    ]
)
def backend(request: pytest.FixtureRequest) -> str:
    """Which index + store pair a test runs on."""
    return str(request.param)


@pytest.fixture
def settings(tmp_path: Path, backend: str, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """Settings for a fresh, empty archive on the chosen back end."""
    from vna.config import Settings

    data_dir = tmp_path / "data"
    if backend == "sqlite-fs":
        return Settings(data_dir=data_dir)
    pg_url = request.getfixturevalue("pg_index_url")
    s3_url = request.getfixturevalue("s3_bucket_url")
    return Settings(data_dir=data_dir, index_url=pg_url, store_url=s3_url)


@pytest.fixture
def archive(settings):  # type: ignore[no-untyped-def]
    """An open archive on the chosen back end, closed after the test."""
    from vna.archive import Archive

    arch = Archive.open(settings)
    yield arch
    arch.close()


@pytest.fixture
def local_settings(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Settings of the embedded default (SQLite + filesystem) in a temporary folder."""
    from vna.config import Settings

    return Settings(data_dir=tmp_path / "data")


@pytest.fixture
def local_archive(local_settings) -> Iterator[object]:  # type: ignore[no-untyped-def]
    """An open embedded-default archive (front-end tests that need one back end only)."""
    from vna.archive import Archive

    arch = Archive.open(local_settings)
    yield arch
    arch.close()


@pytest.fixture
def unique() -> str:
    """A short unique string for names that must not collide between tests."""
    return uuid.uuid4().hex[:8]


def pytest_report_header(config: pytest.Config) -> str:
    from tests.support.data import real_data_dir

    found = real_data_dir()
    return f"real-world test data: {found if found else 'NOT FOUND'}; cwd {os.getcwd()}"

"""Fixtures of the de-identification tests: settings, a key store, a de-identifier factory."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from vna.config import Settings
from vna.deid import service
from vna.deid.keystore import KeyStore

REGIONS = {"*": ["0,0,10000,24"]}


@pytest.fixture
def deid_settings(tmp_path: Path) -> Settings:
    """Settings with a key in a file, the clean policy and a catch-all region."""
    key_file = tmp_path / "deid.key"
    key_file.write_text("test-key-material")
    return Settings(
        data_dir=tmp_path / "data",
        deid_key_file=key_file,
        deid_key_env="",
        deid_burned_in_policy="clean",
        deid_reidentify_admins="alice",
        extra={
            "deid_pixel_regions": REGIONS,
            "deid_projects": {"teach": {"anonymous_only": True}},
        },
    )


@pytest.fixture
def keystore(deid_settings: Settings) -> Iterator[KeyStore]:
    store = service.open_keystore(deid_settings)
    yield store
    store.close()


@pytest.fixture
def deidentifier(
    deid_settings: Settings, keystore: KeyStore
) -> Callable[..., service.Deidentifier]:
    def make(profile: str, project: str = "p1", options: list[str] | None = None):  # type: ignore[no-untyped-def]
        return service.Deidentifier(
            deid_settings, profile, project, keystore, options=options or []
        )

    return make

"""The archive's services: settings, index and object store, opened once and passed down.

Front ends (DIMSE, DICOMweb, CLI) receive an Archive and call the core modules with it
(``vna.ingest``, ``vna.query``, ``vna.retrieve``); nothing is kept in module globals.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from storage import ObjectStore, open_store
from vna.config import Settings
from vna.errors import ConfigError
from vna.index.db import Database

log = logging.getLogger(__name__)


@dataclass
class Archive:
    """Open services of one archive."""

    settings: Settings
    db: Database
    store: ObjectStore
    #: services opened on first use by a part of the core (e.g. the de-identification key
    #: store), closed with the archive; each must have a ``close()`` method
    services: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def open(cls, settings: Settings, *, migrate: bool = True) -> Archive:
        """Open (and on first use create) the index and the store described by ``settings``.

        Raises:
            ConfigError: a URL is malformed or names an unsupported back end.
        """
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        settings.effective_spool_dir.mkdir(parents=True, exist_ok=True)
        db = Database(settings.effective_index_url)
        if migrate:
            db.migrate()
        try:
            store = open_store(
                settings.effective_store_url,
                access_key=settings.s3_access_key,
                secret_key=settings.s3_secret_key,
            )
        except ValueError as exc:
            db.dispose()
            raise ConfigError(str(exc)) from exc
        return cls(settings, db, store)

    @property
    def spool_dir(self) -> Path:
        return self.settings.effective_spool_dir

    def describe(self) -> dict[str, str]:
        """Where things are, without credentials (for `vna stats` and the startup log)."""
        return {
            "index": _redact(self.db.url),
            "store": self.store.location,
            "data_dir": str(self.settings.data_dir.resolve()),
        }

    def close(self) -> None:
        """Release the store's and the index's connections (and lazily opened services)."""
        for service in self.services.values():
            with contextlib.suppress(Exception):
                service.close()
        self.services.clear()
        with contextlib.suppress(Exception):
            self.store.close()
        self.db.dispose()

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _redact(url: str) -> str:
    """A database URL without its password."""
    parsed = urlparse(url)
    if parsed.password:
        netloc = parsed.netloc.replace(f":{parsed.password}@", ":***@")
        return parsed._replace(netloc=netloc).geturl()
    if parse_qs(parsed.query).get("password"):
        return parsed._replace(query="").geturl()
    return url

"""The index schema: migrations and table definitions agree, and upgrades keep the data."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from tests.support.factory import make_dataset, write
from vna.archive import Archive
from vna.config import Settings
from vna.index.db import MIGRATIONS
from vna.index.tables import Base
from vna.ingest import ingest_file
from vna.retrieve import find_instances

DROPPED = {"ix_instance_sha256", "ix_instance_received_at", "ix_instance_series_fk"}


def test_migrated_schema_matches_the_tables(archive: Archive) -> None:
    """What `alembic upgrade head` builds is what the code declares, on both back ends."""
    with archive.db.engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert differences == []
    names = {ix["name"] for ix in inspect(archive.db.engine).get_indexes("instance")}
    assert not names & DROPPED
    assert "ix_instance_series_current" in names


def _config(conn: object) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = conn
    return cfg


def test_an_archive_of_the_first_schema_is_upgraded_in_place(tmp_path: Path) -> None:
    """An index made by the first release keeps its rows and loses the unused indexes when
    the archive opens; downgrading puts them back."""
    settings = Settings(data_dir=tmp_path / "data")
    (tmp_path / "data").mkdir()
    engine = create_engine(settings.effective_index_url)
    with engine.begin() as conn:
        command.upgrade(_config(conn), "0001")
    names = {ix["name"] for ix in inspect(engine).get_indexes("instance")}
    assert names >= DROPPED
    engine.dispose()

    ds = make_dataset()
    with Archive.open(settings) as archive:
        ingest_file(archive, write(ds, tmp_path / "a.dcm"), source="import")
        names = {ix["name"] for ix in inspect(archive.db.engine).get_indexes("instance")}
        assert not names & DROPPED
        with archive.db.engine.begin() as conn:
            command.downgrade(_config(conn), "0001")
        names = {ix["name"] for ix in inspect(archive.db.engine).get_indexes("instance")}
        assert names >= DROPPED
        assert [i.sop_instance_uid for i in find_instances(archive)] == [ds.SOPInstanceUID]

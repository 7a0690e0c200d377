"""The index's write path on both back ends: prepared statements, the Core write transaction,
the computed attributes ingest keeps, and the order of durability and commit."""

from __future__ import annotations

import datetime as dt
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import bindparam, insert, select
from sqlalchemy.exc import IntegrityError

import storage.filesystem
from storage import FilesystemStore
from tests.support.factory import make_dataset, uid, write
from vna.archive import Archive
from vna.index import writer
from vna.index.db import Prepared
from vna.index.tables import Patient, RemoteAE, Series, Study
from vna.ingest import (
    STORED,
    Outcome,
    Staged,
    index_staged,
    ingest_file,
    ingest_files,
    stage_files,
)
from vna.verify import recount

_AE_COLUMNS = ["ae_title", "host", "port", "description", "created_at"]
_INSERT_AE = Prepared(insert(RemoteAE), _AE_COLUMNS)
_AE_HOST = Prepared(select(RemoteAE.host).where(RemoteAE.ae_title == bindparam("aet")))


def _ae(title: str, when: dt.datetime) -> dict[str, Any]:
    return {"ae_title": title, "host": "h", "port": 104, "description": "", "created_at": when}


def _utc(value: dt.datetime) -> dt.datetime:
    """A stored time as aware UTC (SQLite gives it back naive, PostgreSQL aware)."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def test_prepared_statements_store_what_the_orm_reads(archive: Archive) -> None:
    when = dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.UTC)
    with archive.db.transaction() as conn:
        assert _INSERT_AE.execute(conn, _ae("PREPARED", when)) == 1
        assert _AE_HOST.scalar(conn, {"aet": "PREPARED"}) == "h"
    with archive.db.read() as session:
        row = session.execute(select(RemoteAE).where(RemoteAE.ae_title == "PREPARED")).scalar_one()
        assert (row.host, row.port, _utc(row.created_at)) == ("h", 104, when)
    with archive.db.engine.connect() as conn:
        assert _AE_HOST.first(conn, {"aet": "NOBODY"}) is None
        assert _AE_HOST.all(conn, {"aet": "PREPARED"}) == [("h",)]
        with pytest.raises(KeyError):
            _AE_HOST.first(conn, {})


def test_prepared_errors_are_sqlalchemy_errors_and_roll_back(archive: Archive) -> None:
    """Callers catch IntegrityError to retry a race: a prepared statement raises the same."""
    now = dt.datetime.now(dt.UTC)
    with pytest.raises(IntegrityError), archive.db.transaction() as conn:
        _INSERT_AE.execute(conn, _ae("FIRST", now))
        _INSERT_AE.execute(conn, _ae("FIRST", now))
    with archive.db.engine.connect() as conn:
        assert _AE_HOST.first(conn, {"aet": "FIRST"}) is None  # the whole transaction went
    with archive.db.transaction() as conn:  # and the connection is fine for the next one
        _INSERT_AE.execute(conn, _ae("FIRST", now))


def test_core_statements_share_the_write_transaction(archive: Archive) -> None:
    now = dt.datetime.now(dt.UTC)
    with pytest.raises(RuntimeError), archive.db.transaction() as conn:
        _INSERT_AE.execute(conn, _ae("PREP", now))
        conn.execute(insert(RemoteAE).values(ae_title="CORE", host="h", port=1))
        raise RuntimeError("give up")
    with archive.db.transaction() as conn:
        assert _AE_HOST.first(conn, {"aet": "PREP"}) is None
        assert _AE_HOST.first(conn, {"aet": "CORE"}) is None
        conn.execute(insert(RemoteAE).values(ae_title="CORE", host="core", port=1))
        _INSERT_AE.execute(conn, _ae("PREP", now))
    with archive.db.engine.connect() as conn:
        assert _AE_HOST.scalar(conn, {"aet": "CORE"}) == "core"
        assert _AE_HOST.scalar(conn, {"aet": "PREP"}) == "h"


def test_kept_connections_see_other_writers_and_hold_no_lock(archive: Archive) -> None:
    """The ingest path keeps its connections open between objects: an idle one must neither
    read an old snapshot nor keep another process from writing."""
    if not archive.db.is_sqlite:
        pytest.skip("connections are kept on SQLite only")
    from vna.index.db import Database

    other = Database(archive.settings.effective_index_url)
    now = dt.datetime.now(dt.UTC)
    try:
        with archive.db.transaction() as conn:  # a Core statement: SQLAlchemy's own begin
            conn.execute(insert(RemoteAE).values(ae_title="CORE", host="h", port=1))
            core = conn
        assert core.closed  # SQLAlchemy believes it is still in a transaction: not kept
        with archive.db.connection() as conn:
            assert _AE_HOST.first(conn, {"aet": "LATER"}) is None
            kept = conn
        with other.transaction() as conn:  # another writer is not blocked
            _INSERT_AE.execute(conn, _ae("LATER", now))
        with archive.db.connection() as conn:
            assert conn is kept  # kept open, not checked out again
            assert _AE_HOST.scalar(conn, {"aet": "LATER"}) == "h"  # and up to date
            assert _AE_HOST.scalar(conn, {"aet": "CORE"}) == "h"
        with pytest.raises(RuntimeError), archive.db.connection() as conn:
            raise RuntimeError("a failed caller's connection is closed, not kept")
        assert kept.closed
    finally:
        other.dispose()


def _counters(archive: Archive) -> dict[str, list[tuple[Any, ...]]]:
    with archive.db.read() as session:
        return {
            "patient": [
                tuple(r)
                for r in session.execute(
                    select(
                        Patient.patient_key,
                        Patient.number_of_studies,
                        Patient.number_of_series,
                        Patient.number_of_instances,
                    ).order_by(Patient.patient_key)
                )
            ],
            "study": [
                tuple(r)
                for r in session.execute(
                    select(
                        Study.study_instance_uid,
                        Study.number_of_series,
                        Study.number_of_instances,
                        Study.modalities_in_study,
                        Study.sop_classes_in_study,
                    ).order_by(Study.study_instance_uid)
                )
            ],
            "series": [
                tuple(r)
                for r in session.execute(
                    select(Series.series_instance_uid, Series.number_of_instances).order_by(
                        Series.series_instance_uid
                    )
                )
            ],
        }


def test_counters_and_computed_attributes_match_the_rows(archive: Archive, tmp_path: Path) -> None:
    """What ingest keeps up to date object by object equals a recount from the rows."""
    study_a, study_b, study_c = uid(), uid(), uid()
    series = [uid() for _ in range(4)]
    files = []
    for i in range(4):  # a new study, then new instances of its series
        files.append(make_dataset(study_uid=study_a, series_uid=series[0], instance_number=i))
    files.append(make_dataset(study_uid=study_a, series_uid=series[1], modality="MR"))
    files.append(
        make_dataset(
            study_uid=study_a,
            series_uid=series[2],
            modality="OT",
            sop_class="1.2.840.10008.5.1.4.1.1.7",
        )
    )
    files.append(make_dataset(patient_id="PID2", study_uid=study_b, series_uid=series[3]))
    files.append(make_dataset(patient_id="PID2", study_uid=study_c, modality="MR"))
    changed = make_dataset(study_uid=study_a, series_uid=series[0], study_description="v1")
    files.append(changed)
    paths = [write(ds, tmp_path / f"{i}.dcm") for i, ds in enumerate(files)]
    changed.StudyDescription = "v2"  # a second version of the same object
    paths.append(write(changed, tmp_path / "v2.dcm"))
    for path in paths[:5]:
        assert ingest_file(archive, path, source="dimse:CT1").status == STORED
    assert all(not isinstance(r, Exception) for r in ingest_files(archive, paths[5:], source="x"))

    counted = _counters(archive)
    study_rows = {row[0]: row[1:] for row in counted["study"]}
    assert study_rows[study_a] == (
        3,
        7,
        "CT\\MR\\OT",
        "1.2.840.10008.5.1.4.1.1.2\\1.2.840.10008.5.1.4.1.1.7",
    )
    recount(archive)
    assert _counters(archive) == counted


def test_objects_are_durable_before_their_rows(
    archive: Archive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each object's bytes and folder entry are flushed before its row is written; objects
    indexed together share one flush of their folder."""
    if not isinstance(archive.store, FilesystemStore):
        pytest.skip("the filesystem store's flushes")
    events: list[str] = []
    real_fsync = os.fsync
    real_add = writer.add_instance

    def spy_fsync(fd: int) -> None:
        events.append("folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "object")
        real_fsync(fd)

    def spy_add(*args: Any, **kwargs: Any) -> writer.AddOutcome:
        events.append("row")
        return real_add(*args, **kwargs)

    monkeypatch.setattr(storage.filesystem.os, "fsync", spy_fsync)
    monkeypatch.setattr(writer, "add_instance", spy_add)
    study = uid()
    one = write(make_dataset(study_uid=study), tmp_path / "one.dcm")
    assert ingest_file(archive, one, source="import").status == STORED
    assert events[-2:] == ["folder", "row"] and "object" in events
    events.clear()
    batch = [
        write(make_dataset(study_uid=study, instance_number=i), tmp_path / f"{i}.dcm")
        for i in range(5)
    ]
    assert all(not isinstance(r, Exception) for r in ingest_files(archive, batch, source="x"))
    first_row = events.index("row")
    assert events[first_row:] == ["row"] * 5
    assert events[:first_row].count("object") == 5
    assert events[first_row - 1] == "folder"
    assert events[:first_row].count("folder") < 5  # the batch shared its folder's flush
    events.clear()
    # staged one by one as STOW-RS parts arrive: the folder waits for the batch's index
    parts = [
        write(make_dataset(study_uid=study, instance_number=10 + i), tmp_path / f"p{i}.dcm")
        for i in range(4)
    ]
    staged: list[Staged] = []
    out: list[Outcome] = [None] * len(parts)
    for i, path in enumerate(parts):
        done, items = stage_files(archive, [path], defer_flush=True)
        assert done == [None] and len(items) == 1
        items[0].index = i
        staged += items
    assert "folder" not in events and events.count("object") == 4
    index_staged(archive, staged, "stow", out)
    assert all(r is not None and not isinstance(r, Exception) for r in out)
    assert events[4:] == ["folder", "row", "row", "row", "row"]

"""The ingest path on both back ends: stored bytes, duplicates, versions, conflicts, errors."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from storage import FilesystemStore
from tests.support.data import real_files, require_real_data
from tests.support.factory import make_dataset, uid, write
from vna.archive import Archive
from vna.errors import (
    DuplicateRejected,
    MissingAttribute,
    NotDicom,
    OutOfResources,
    StorageError,
    StudyConflict,
)
from vna.index.tables import IngestConflict, Instance, Patient, Series, Study
from vna.ingest import DUPLICATE, STORED, ingest_file, ingest_stream
from vna.retrieve import find_instances, frames, open_instance
from vna.verify import verify


def _stored_bytes(archive: Archive, sop_uid: str) -> bytes:
    ref = find_instances(archive, sop_instance_uid=sop_uid)[0]
    with open_instance(archive, ref) as fp:
        return fp.read()


def test_real_files_stored_byte_identical(archive: Archive) -> None:
    require_real_data()
    for path in real_files():
        result = ingest_file(archive, path, source="import")
        assert result.status == STORED, path
        assert _stored_bytes(archive, result.sop_instance_uid) == path.read_bytes()
        assert result.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    report = verify(archive)
    assert report.ok, report.as_dict()


def test_stream_ingest_and_counts(archive: Archive, tmp_path: Path) -> None:
    study, series = uid(), uid()
    for i in range(3):
        path = write(
            make_dataset(study_uid=study, series_uid=series, instance_number=i + 1),
            tmp_path / f"{i}.dcm",
        )
        with path.open("rb") as fp:
            assert ingest_stream(archive, fp, source="stow").status == STORED
    path = write(make_dataset(study_uid=study, modality="MR"), tmp_path / "mr.dcm")
    ingest_file(archive, path, source="import")
    with archive.db.read() as session:
        row = session.execute(select(Study).where(Study.study_instance_uid == study)).scalar_one()
        assert row.number_of_instances == 4
        assert row.number_of_series == 2
        assert row.modalities_in_study == "CT\\MR"
        patient = session.get(Patient, row.patient_fk)
        assert patient is not None and patient.number_of_instances == 4
    assert not list(archive.spool_dir.glob("*.part"))


def test_identical_duplicate_stores_nothing_new(archive: Archive, tmp_path: Path) -> None:
    path = write(make_dataset(), tmp_path / "a.dcm")
    first = ingest_file(archive, path, source="import")
    second = ingest_file(archive, path, source="import")
    assert (first.status, second.status) == (STORED, DUPLICATE)
    assert len(list(archive.store.keys())) == 1
    with archive.db.read() as session:
        assert len(session.execute(select(Instance)).all()) == 1


def test_changed_object_kept_as_new_version(archive: Archive, tmp_path: Path) -> None:
    ds = make_dataset(study_description="first")
    a = write(ds, tmp_path / "a.dcm")
    ds.StudyDescription = "corrected"
    b = write(ds, tmp_path / "b.dcm")
    ingest_file(archive, a, source="import")
    result = ingest_file(archive, b, source="import")
    assert result.status == STORED and result.version == 2 and result.warnings
    assert _stored_bytes(archive, ds.SOPInstanceUID) == b.read_bytes()
    with archive.db.read() as session:
        versions = session.execute(
            select(Instance.version, Instance.is_current)
            .where(Instance.sop_instance_uid == ds.SOPInstanceUID)
            .order_by(Instance.version)
        ).all()
        in_series = session.execute(select(Series.number_of_instances)).scalar_one()
    assert [tuple(v) for v in versions] == [(1, False), (2, True)]
    assert in_series == 1
    assert len(list(archive.store.keys())) == 2  # nothing lost


def test_reject_policy_refuses_changed_duplicate(settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    archive = Archive.open(settings.with_overrides(duplicate_policy="reject"))
    try:
        ds = make_dataset()
        ingest_file(archive, write(ds, tmp_path / "a.dcm"), source="import")
        ds.PatientName = "Other^Name"
        with pytest.raises(DuplicateRejected):
            ingest_file(archive, write(ds, tmp_path / "b.dcm"), source="import")
        assert len(list(archive.store.keys())) == 1
    finally:
        archive.close()


def test_overwrite_policy_replaces_and_audits(settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from vna.index.tables import AuditEvent

    archive = Archive.open(settings.with_overrides(duplicate_policy="overwrite"))
    try:
        ds = make_dataset()
        ingest_file(archive, write(ds, tmp_path / "a.dcm"), source="import")
        ds.PatientName = "Other^Name"
        b = write(ds, tmp_path / "b.dcm")
        ingest_file(archive, b, source="import")
        assert len(list(archive.store.keys())) == 1
        assert _stored_bytes(archive, ds.SOPInstanceUID) == b.read_bytes()
        with archive.db.read() as session:
            actions = session.execute(select(AuditEvent.action)).scalars().all()
        assert actions == ["overwrite"]
    finally:
        archive.close()


def test_patient_id_collision_is_a_warning(archive: Archive, tmp_path: Path) -> None:
    ingest_file(
        archive, write(make_dataset(patient_name="Doe^Jane"), tmp_path / "a.dcm"), source="import"
    )
    result = ingest_file(
        archive,
        write(make_dataset(patient_name="Roe^Richard"), tmp_path / "b.dcm"),
        source="import",
    )
    assert result.status == STORED
    assert any("collision" in w for w in result.warnings)
    with archive.db.read() as session:
        kinds = session.execute(select(IngestConflict.kind)).scalars().all()
    assert kinds == ["patient-attributes"]


def test_study_under_other_patient_is_flagged(archive: Archive, tmp_path: Path) -> None:
    study = uid()
    ingest_file(
        archive,
        write(make_dataset(patient_id="P1", study_uid=study), tmp_path / "a.dcm"),
        source="import",
    )
    result = ingest_file(
        archive,
        write(
            make_dataset(patient_id="P2", patient_name="X^Y", study_uid=study), tmp_path / "b.dcm"
        ),
        source="import",
    )
    assert result.status == STORED and any("another patient" in w for w in result.warnings)
    with archive.db.read() as session:
        row = session.execute(select(Study).where(Study.study_instance_uid == study)).scalar_one()
        assert row.conflict is True
        assert row.number_of_instances == 2
        kinds = session.execute(select(IngestConflict.kind)).scalars().all()
    assert "study-patient" in kinds


def test_study_conflict_reject_policy(settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    archive = Archive.open(settings.with_overrides(study_conflict_policy="reject"))
    try:
        study = uid()
        ingest_file(
            archive,
            write(make_dataset(patient_id="P1", study_uid=study), tmp_path / "a.dcm"),
            source="import",
        )
        with pytest.raises(StudyConflict):
            ingest_file(
                archive,
                write(make_dataset(patient_id="P2", study_uid=study), tmp_path / "b.dcm"),
                source="import",
            )
        assert len(list(archive.store.keys())) == 1
    finally:
        archive.close()


def test_invalid_objects_store_nothing(archive: Archive, tmp_path: Path) -> None:
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"hello, not dicom" * 20)
    with pytest.raises(NotDicom):
        ingest_file(archive, junk, source="import")
    ds = make_dataset()
    del ds.StudyInstanceUID
    with pytest.raises(MissingAttribute):
        ingest_file(archive, write(ds, tmp_path / "nouid.dcm"), source="import")
    with junk.open("rb") as fp, pytest.raises(NotDicom):
        ingest_stream(archive, fp, source="stow")
    assert list(archive.store.keys()) == []
    assert not list(archive.spool_dir.glob("*.part"))


def test_failed_index_commit_removes_object(
    archive: Archive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vna.index import writer

    def boom(*_a: object, **_k: object) -> None:
        raise RuntimeError("index down")

    monkeypatch.setattr(writer, "add_instance", boom)
    with pytest.raises(RuntimeError):
        ingest_file(archive, write(make_dataset(), tmp_path / "a.dcm"), source="import")
    assert list(archive.store.keys()) == []


def test_frames_read_by_range(archive: Archive, tmp_path: Path) -> None:
    ds = make_dataset(rows=32, columns=32, frames=5)
    ingest_file(archive, write(ds, tmp_path / "mf.dcm"), source="import")
    ref = find_instances(archive, sop_instance_uid=ds.SOPInstanceUID)[0]
    got = frames(archive, ref, [5, 1])
    size = 32 * 32 * 2
    assert got == [ds.PixelData[4 * size : 5 * size], ds.PixelData[:size]]


def test_bare_dataset_gets_file_meta(archive: Archive, tmp_path: Path) -> None:
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    ds = make_dataset()
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, True
    write_dataset(buffer, ds)
    bare = tmp_path / "bare.dcm"
    bare.write_bytes(buffer.getvalue())
    with bare.open("rb") as fp:
        result = ingest_stream(archive, fp, source="stow")
    stored = _stored_bytes(archive, ds.SOPInstanceUID)
    assert stored[128:132] == b"DICM"
    assert stored.endswith(bare.read_bytes())
    assert any("File Meta" in w for w in result.warnings)


def test_bulk_ingest_judges_each_file(archive: Archive, tmp_path: Path) -> None:
    from vna.errors import VnaError
    from vna.ingest import ingest_files

    study = uid()
    good = [
        write(make_dataset(study_uid=study, instance_number=i), tmp_path / f"{i}.dcm")
        for i in range(3)
    ]
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not dicom at all" * 10)
    changed_ds = make_dataset(study_uid=study, study_description="v1")
    first = write(changed_ds, tmp_path / "v1.dcm")
    changed_ds.StudyDescription = "v2"
    second = write(changed_ds, tmp_path / "v2.dcm")
    paths = [*good, junk, good[0], first, second]
    results = ingest_files(archive, paths, source="import")
    assert [type(r).__name__ for r in results[:3]] == ["IngestResult"] * 3
    assert isinstance(results[3], VnaError)
    assert not isinstance(results[4], VnaError) and results[4].status == DUPLICATE
    assert not isinstance(results[6], VnaError) and results[6].version == 2
    # the identical copy inside the batch stored nothing more: 3 + 2 versions
    assert len(list(archive.store.keys())) == 5
    report = verify(archive)
    assert report.ok, report.as_dict()


@pytest.mark.postgres
def test_processes_starting_together_migrate_once(pg_database_url: str) -> None:
    """Two archive processes opening one new PostgreSQL database at once both succeed."""
    import concurrent.futures as cf

    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    from vna.index.db import Database

    engine = create_engine(pg_database_url, poolclass=NullPool)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()

    def open_db() -> list[str]:
        db = Database(pg_database_url)
        try:
            db.migrate()
            return db.table_names()
        finally:
            db.dispose()

    with cf.ThreadPoolExecutor(3) as pool:
        tables = list(pool.map(lambda _: open_db(), range(3)))
    assert all("instance" in t for t in tables)


class _FailingFlush:
    """A flush whose disk reports an error when it is awaited."""

    def __init__(self, *_args: object, error: int = 28, **_kwargs: object) -> None:
        self.error = error

    def wait(self) -> None:
        raise OSError(self.error, os.strerror(self.error))

    def close(self) -> None:
        pass


def test_received_object_not_flushed_is_not_stored(
    local_archive: Archive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The received file's flush (started before it is parsed) fails with a full disk: the
    answer is "out of resources" and nothing is stored or indexed."""
    import vna.ingest

    monkeypatch.setattr(vna.ingest, "Flush", _FailingFlush)
    path = write(make_dataset(), tmp_path / "a.dcm")
    with path.open("rb") as fp, pytest.raises(OutOfResources):
        ingest_stream(local_archive, fp, source="stow")
    assert list(local_archive.store.keys()) == []
    assert _no_instances(local_archive)
    assert not list(local_archive.spool_dir.glob("*.part"))


def test_folder_entry_not_flushed_removes_the_object(
    local_archive: Archive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The object is in the store but its folder entry cannot be flushed: the index row is
    never committed and the object is removed again."""

    monkeypatch.setattr(
        FilesystemStore, "folder_flush", lambda _self, _key: _FailingFlush(error=errno.EIO)
    )
    path = write(make_dataset(), tmp_path / "a.dcm")
    with path.open("rb") as fp, pytest.raises(StorageError):
        ingest_stream(local_archive, fp, source="stow")
    assert list(local_archive.store.keys()) == []
    assert _no_instances(local_archive)


def _no_instances(archive: Archive) -> bool:
    with archive.db.engine.connect() as conn:
        return conn.execute(select(Instance)).first() is None


def test_verify_leaves_the_files_a_running_listener_reserved(
    local_archive: Archive, tmp_path: Path
) -> None:
    """A running DIMSE listener keeps files reserved in the store for the objects it is
    receiving (one half written here): they are not orphans, and --repair leaves them."""
    from vna.ingest import new_storage_key

    store = local_archive.store
    assert isinstance(store, FilesystemStore)
    ingest_file(local_archive, write(make_dataset(), tmp_path / "a.dcm"), source="test")
    receiving = store.reserve(new_storage_key)
    receiving.write_bytes(b"DICM half an object")
    report = verify(local_archive, repair=True)
    assert report.ok and report.orphan_objects == [] and report.repaired == []
    assert receiving.read_bytes() == b"DICM half an object"
    store.unreserve(receiving, used=True)
    store.close()
    assert verify(local_archive).ok and len(list(store.keys())) == 1


def test_recovery_removes_only_what_cannot_have_been_acknowledged(
    local_archive: Archive, tmp_path: Path
) -> None:
    """A listener that died left reserved files: a whole object without a row (perhaps
    acknowledged: its row may be the commit a power loss dropped), a half-received one and
    empty ones. Recovery removes the half and the empty; verify --repair indexes the whole."""
    from vna.ingest import new_storage_key
    from vna.reservations import recover_reservations

    whole = write(make_dataset(), tmp_path / "whole.dcm").read_bytes()
    child = os.fork()
    if child == 0:  # the listener's process: reserves, receives, dies
        try:
            store = FilesystemStore(local_archive.store.root)  # type: ignore[attr-defined]
            store.reserve(new_storage_key).write_bytes(whole)
            store.reserve(new_storage_key).write_bytes(whole[: len(whole) // 2])
        finally:
            os._exit(0)
    os.waitpid(child, 0)
    store = local_archive.store
    assert isinstance(store, FilesystemStore)
    assert len(list(store.keys())) > 2
    removed = recover_reservations(local_archive)
    [left] = list(store.keys())
    assert left not in removed and store.path_for(left).read_bytes() == whole
    assert store.reserved_keys() == set()
    report = verify(local_archive)
    assert report.orphan_objects == [left]
    assert verify(local_archive, repair=True).repaired and verify(local_archive).ok


def test_an_object_indexed_after_the_pre_check_is_still_judged(
    archive: Archive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another writer indexes the same SOP Instance UID between ingest's pre-check (which
    found nothing) and its write transaction: the insert fails on the unique index of
    current versions, and the retry judges the object like any duplicate."""
    import vna.ingest as ingest_module

    same = write(make_dataset(), tmp_path / "same.dcm")
    ds = make_dataset(study_description="first")
    first = write(ds, tmp_path / "first.dcm")
    ds.StudyDescription = "changed"
    changed = write(ds, tmp_path / "changed.dcm")
    real_check = ingest_module._check_policies_in
    racing: list[Path] = []

    def stale_check(conn: Any, *args: Any) -> Any:
        previous = real_check(conn, *args)
        if racing:  # the other writer's object lands right after the pre-check
            assert ingest_file(archive, racing.pop(), source="other").status == STORED
        return previous

    monkeypatch.setattr(ingest_module, "_check_policies_in", stale_check)
    racing.append(same)
    assert ingest_file(archive, same, source="test").status == DUPLICATE
    racing.append(first)
    result = ingest_file(archive, changed, source="test")
    assert result.status == STORED and result.version == 2
    with archive.db.read() as session:
        current = session.execute(
            select(Instance.sha256).where(
                Instance.sop_instance_uid == ds.SOPInstanceUID, Instance.is_current.is_(True)
            )
        ).all()
    assert len(current) == 1
    assert verify(archive).ok

"""Index ↔ store consistency: what `vna verify` reports and repairs.

Three kinds of disagreement (ARCHITECTURE.md invariants):
- a row whose object is missing (or has another size): reported; ``repair`` removes the row,
  recounts, and leaves an audit record, since the bytes are gone;
- an object without a row (an orphan, e.g. after a crash between store and index): reported;
  ``repair`` indexes it from the object itself (objects are self-describing), or removes it
  when it is an exact copy of what is already indexed;
- a checksum mismatch: reported and audited; never "repaired" silently.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import delete, func, select, update

from storage import FilesystemStore, ObjectNotFound, StoreError
from vna.archive import Archive
from vna.dicomfile import read_object
from vna.errors import InvalidObject
from vna.index import writer
from vna.index.tables import AuditEvent, Frame, Instance, Patient, Series, Study
from vna.reservations import recover_reservations

log = logging.getLogger(__name__)


@dataclass
class VerifyReport:
    """Findings of one verification run (and what was repaired)."""

    checked_rows: int = 0
    checked_objects: int = 0
    missing_objects: list[str] = field(default_factory=list)  # SOP Instance UIDs
    size_mismatches: list[str] = field(default_factory=list)
    checksum_mismatches: list[str] = field(default_factory=list)
    orphan_objects: list[str] = field(default_factory=list)  # storage keys
    unreadable_orphans: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (
            self.missing_objects
            or self.size_mismatches
            or self.checksum_mismatches
            or self.orphan_objects
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "checked_rows": self.checked_rows,
            "checked_objects": self.checked_objects,
            "missing_objects": self.missing_objects,
            "size_mismatches": self.size_mismatches,
            "checksum_mismatches": self.checksum_mismatches,
            "orphan_objects": self.orphan_objects,
            "unreadable_orphans": self.unreadable_orphans,
            "repaired": self.repaired,
        }


def _sha256(archive: Archive, key: str) -> str:
    digest = hashlib.sha256()
    for chunk in archive.store.iter_chunks(key):
        digest.update(chunk)
    return digest.hexdigest()


def verify(
    archive: Archive,
    *,
    checksums: bool = True,
    repair: bool = False,
    progress: Callable[[int], None] | None = None,
) -> VerifyReport:
    """Compare every index row with the store and every stored object with the index."""
    report = VerifyReport()
    recovered = recover_reservations(archive)
    if recovered:
        report.repaired.append(
            f"removed {len(recovered)} reserved object file(s) a stopped process never indexed"
        )
    with archive.db.read() as session:
        rows = session.execute(
            select(
                Instance.pk,
                Instance.sop_instance_uid,
                Instance.storage_key,
                Instance.size,
                Instance.sha256,
            )
        ).all()
    known_keys = {row.storage_key for row in rows}
    lost: list[int] = []
    for row in rows:
        report.checked_rows += 1
        try:
            size = archive.store.size(row.storage_key)
        except ObjectNotFound:
            report.missing_objects.append(row.sop_instance_uid)
            lost.append(row.pk)
            continue
        if size != row.size:
            report.size_mismatches.append(row.sop_instance_uid)
        elif checksums and _sha256(archive, row.storage_key) != row.sha256:
            report.checksum_mismatches.append(row.sop_instance_uid)
        if progress:
            progress(1)
    orphans = []
    for key in archive.store.keys():  # noqa: SIM118
        report.checked_objects += 1
        if key not in known_keys:
            orphans.append(key)
    if orphans and isinstance(archive.store, FilesystemStore):
        # files a running server reserved for objects it is receiving: not orphans
        in_flight = archive.store.reserved_keys()
        orphans = [key for key in orphans if key not in in_flight]
    report.orphan_objects = list(orphans)
    if report.checksum_mismatches or report.size_mismatches:
        with archive.db.write() as session:
            for uid in report.checksum_mismatches + report.size_mismatches:
                session.add(
                    AuditEvent(
                        actor="verify",
                        action="checksum-mismatch",
                        object_uid=uid,
                        origin="vna verify",
                    )
                )
    if repair:
        if lost:
            _remove_lost_rows(archive, lost, report)
        for key in orphans:
            _adopt_orphan(archive, key, report)
        recount(archive)
    return report


def _remove_lost_rows(archive: Archive, pks: list[int], report: VerifyReport) -> None:
    with archive.db.write() as session:
        for pk in pks:
            uid, key = session.execute(
                select(Instance.sop_instance_uid, Instance.storage_key).where(Instance.pk == pk)
            ).one()
            session.execute(delete(Frame).where(Frame.instance_fk == pk))
            session.execute(delete(Instance).where(Instance.pk == pk))
            session.add(
                AuditEvent(
                    actor="verify",
                    action="remove-lost-row",
                    object_uid=uid,
                    origin="vna verify --repair",
                    detail=json.dumps({"storage_key": key}),
                )
            )
            report.repaired.append(f"removed index row of {uid}: its object is missing")


def _adopt_orphan(archive: Archive, key: str, report: VerifyReport) -> None:
    """Index an orphan object from its own bytes, or drop it when it is a known copy."""
    with tempfile.TemporaryDirectory(dir=archive.spool_dir) as tmp:
        path = Path(tmp) / "orphan.dcm"
        digest = hashlib.sha256()
        size = 0
        try:
            with path.open("wb") as out:
                for chunk in archive.store.iter_chunks(key):
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
        except (ObjectNotFound, StoreError) as exc:
            report.unreadable_orphans.append(f"{key}: {exc}")
            return
        sha = digest.hexdigest()
        try:
            parsed = read_object(path)
        except InvalidObject as exc:
            report.unreadable_orphans.append(f"{key}: {exc}")
            return
        with archive.db.write() as session:
            previous = writer.current_version(session, parsed.sop_instance_uid)
            if previous is not None and previous.sha256 == sha:
                duplicate = True
            else:
                duplicate = False
                writer.add_instance(
                    session,
                    parsed,
                    storage_key=key,
                    size=size,
                    sha256=sha,
                    source="verify-repair",
                    previous=previous,
                    duplicate_policy="keep-both-versions",
                )
                session.add(
                    AuditEvent(
                        actor="verify",
                        action="adopt-orphan",
                        object_uid=parsed.sop_instance_uid,
                        origin="vna verify --repair",
                        detail=json.dumps({"storage_key": key}),
                    )
                )
    if duplicate:
        archive.store.delete(key)
        report.repaired.append(f"removed orphan {key}: a copy of the indexed object")
    else:
        report.repaired.append(f"indexed orphan {key} as {parsed.sop_instance_uid}")


def recount(archive: Archive) -> None:
    """Recompute every stored count from the rows (after repairs or deletions)."""
    with archive.db.write() as session:
        series_counts = (
            select(func.count(Instance.pk))
            .where(Instance.series_fk == Series.pk, Instance.is_current.is_(True))
            .scalar_subquery()
        )
        session.execute(update(Series).values(number_of_instances=series_counts))
        session.execute(
            update(Study).values(
                number_of_instances=select(func.coalesce(func.sum(Series.number_of_instances), 0))
                .where(Series.study_fk == Study.pk)
                .scalar_subquery(),
                number_of_series=select(func.count(Series.pk))
                .where(Series.study_fk == Study.pk, Series.number_of_instances > 0)
                .scalar_subquery(),
            )
        )
        session.execute(
            update(Patient).values(
                number_of_instances=select(func.coalesce(func.sum(Study.number_of_instances), 0))
                .where(Study.patient_fk == Patient.pk)
                .scalar_subquery(),
                number_of_series=select(func.coalesce(func.sum(Study.number_of_series), 0))
                .where(Study.patient_fk == Patient.pk)
                .scalar_subquery(),
                number_of_studies=select(func.count(Study.pk))
                .where(Study.patient_fk == Patient.pk, Study.number_of_instances > 0)
                .scalar_subquery(),
            )
        )

"""The index schema: patient / study / series / instance, their versions, and the records kept
beside them (frames, conflicts, audit, remote AEs).

Every attribute C-FIND and QIDO-RS match on or must return at a level (PS3.4 C.6.1.1 / C.6.2.1
key attributes, PS3.18 Table 10.6.3-3) is a column of that level's table. Text that is matched
with wildcards also has a ``*_fold`` column (case and accents folded) for case-insensitive
matching, and Person Names have one column per component group (PS3.5 6.2.1) so that an
ideographic or phonetic query matches its own group. Times have a normalised ``*_norm``
column (HHMMSS.FFFFFF) so that ranges compare as text.

An instance row is one *version* of an object: corrections add rows, they never edit one. The
current version of each SOP Instance UID is the one with ``is_current`` set; a partial unique
index makes that unique.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Columns are wider than the VR maxima (PS3.5 6.2): real-world objects exceed them and are
# accepted (tolerant read); anything longer still is cut to the column by the writer.
UID = String(64)
DA = String(16)
TM = String(32)
CS = String(64)
LO = String(256)
PN = String(1024)
SH = String(64)


def plain(*attributes: Any) -> tuple[Any, ...]:
    """The table columns behind ORM attributes, for Core selects on the hot read paths:
    a select of ORM attributes makes SQLAlchemy match each result column to its cached form
    by building comparison expressions, which costs more than a small query itself."""
    return tuple(a.property.columns[0] if hasattr(a, "property") else a for a in attributes)


def utcnow() -> dt.datetime:
    """Timezone-aware now, stored as UTC."""
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def _pattern_index(name: str, *columns: str) -> Index:
    """B-tree index usable for LIKE 'prefix%' on PostgreSQL whatever the collation."""
    return Index(name, *columns, postgresql_ops={c: "text_pattern_ops" for c in columns})


class Patient(Base):
    """PS3.4 C.6.1.1.2 patient level. ``patient_key`` makes a patient unique: Patient ID and
    its issuer, or name and birth date when the ID is empty."""

    __tablename__ = "patient"
    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_key: Mapped[str] = mapped_column(String(512), unique=True)
    patient_id: Mapped[str] = mapped_column(LO, default="")
    issuer_of_patient_id: Mapped[str] = mapped_column(LO, default="")
    patient_name: Mapped[str] = mapped_column(PN, default="")
    patient_name_alpha: Mapped[str] = mapped_column(PN, default="")
    patient_name_ideo: Mapped[str] = mapped_column(PN, default="")
    patient_name_phon: Mapped[str] = mapped_column(PN, default="")
    patient_name_fold: Mapped[str] = mapped_column(PN, default="")
    patient_birth_date: Mapped[str] = mapped_column(DA, default="")
    patient_birth_time: Mapped[str] = mapped_column(TM, default="")
    patient_sex: Mapped[str] = mapped_column(CS, default="")
    number_of_studies: Mapped[int] = mapped_column(Integer, default=0)
    number_of_series: Mapped[int] = mapped_column(Integer, default=0)
    number_of_instances: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    studies: Mapped[list[Study]] = relationship(back_populates="patient")

    __table_args__ = (
        _pattern_index("ix_patient_patient_id", "patient_id"),
        _pattern_index("ix_patient_name_alpha", "patient_name_alpha"),
        _pattern_index("ix_patient_name_fold", "patient_name_fold"),
        _pattern_index("ix_patient_name_ideo", "patient_name_ideo"),
        Index("ix_patient_birth_date", "patient_birth_date"),
    )


class Study(Base):
    """PS3.4 C.6.2.1.2 study level plus PS3.18 Table 10.6.3-3 study attributes."""

    __tablename__ = "study"
    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_fk: Mapped[int] = mapped_column(ForeignKey("patient.pk"), index=True)
    study_instance_uid: Mapped[str] = mapped_column(UID, unique=True)
    study_date: Mapped[str] = mapped_column(DA, default="")
    study_time: Mapped[str] = mapped_column(TM, default="")
    study_time_norm: Mapped[str] = mapped_column(TM, default="")
    accession_number: Mapped[str] = mapped_column(SH, default="")
    study_id: Mapped[str] = mapped_column(SH, default="")
    study_description: Mapped[str] = mapped_column(LO, default="")
    study_description_fold: Mapped[str] = mapped_column(LO, default="")
    referring_physician_name: Mapped[str] = mapped_column(PN, default="")
    referring_physician_name_fold: Mapped[str] = mapped_column(PN, default="")
    timezone_offset_from_utc: Mapped[str] = mapped_column(SH, default="")
    modalities_in_study: Mapped[str] = mapped_column(String(256), default="")
    sop_classes_in_study: Mapped[str] = mapped_column(Text, default="")
    number_of_series: Mapped[int] = mapped_column(Integer, default=0)
    number_of_instances: Mapped[int] = mapped_column(Integer, default=0)
    # flagged when objects of this study arrived under another patient (see conflict table)
    conflict: Mapped[bool] = mapped_column(Boolean, default=False)
    # room for access control and retention (later: confidentiality, department, purge date)
    confidential: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    patient: Mapped[Patient] = relationship(back_populates="studies")
    series: Mapped[list[Series]] = relationship(back_populates="study")

    __table_args__ = (
        Index("ix_study_study_date", "study_date", "study_time_norm"),
        _pattern_index("ix_study_accession_number", "accession_number"),
        _pattern_index("ix_study_study_id", "study_id"),
        Index("ix_study_created_at", "created_at"),
    )


class Series(Base):
    """PS3.4 C.6.2.1.2 series level plus PS3.18 Table 10.6.3-3 series attributes."""

    __tablename__ = "series"
    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_fk: Mapped[int] = mapped_column(ForeignKey("study.pk"), index=True)
    series_instance_uid: Mapped[str] = mapped_column(UID, unique=True)
    modality: Mapped[str] = mapped_column(CS, default="")
    series_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    series_description: Mapped[str] = mapped_column(LO, default="")
    series_description_fold: Mapped[str] = mapped_column(LO, default="")
    series_date: Mapped[str] = mapped_column(DA, default="")
    series_time: Mapped[str] = mapped_column(TM, default="")
    series_time_norm: Mapped[str] = mapped_column(TM, default="")
    body_part_examined: Mapped[str] = mapped_column(CS, default="")
    laterality: Mapped[str] = mapped_column(CS, default="")
    performed_procedure_step_start_date: Mapped[str] = mapped_column(DA, default="")
    performed_procedure_step_start_time: Mapped[str] = mapped_column(TM, default="")
    performed_procedure_step_start_time_norm: Mapped[str] = mapped_column(TM, default="")
    scheduled_procedure_step_id: Mapped[str] = mapped_column(SH, default="")
    requested_procedure_id: Mapped[str] = mapped_column(SH, default="")
    # the whole RequestAttributesSequence, as DICOM JSON, returned as received
    request_attributes_json: Mapped[str] = mapped_column(Text, default="")
    institution_name: Mapped[str] = mapped_column(LO, default="")
    institutional_department_name: Mapped[str] = mapped_column(LO, default="")
    station_name: Mapped[str] = mapped_column(SH, default="")
    manufacturer: Mapped[str] = mapped_column(LO, default="")
    timezone_offset_from_utc: Mapped[str] = mapped_column(SH, default="")
    number_of_instances: Mapped[int] = mapped_column(Integer, default=0)
    source_ae_title: Mapped[str] = mapped_column(String(16), default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    study: Mapped[Study] = relationship(back_populates="series")

    __table_args__ = (
        Index("ix_series_study_modality", "study_fk", "modality"),
        Index("ix_series_modality", "modality"),
    )


class Instance(Base):
    """One version of one object: PS3.4 C.6.2.1.2 instance level, PS3.18 instance attributes,
    where the bytes are, and the precomputed metadata."""

    __tablename__ = "instance"
    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    # looked up through ix_instance_series_current, whose first column it is
    series_fk: Mapped[int] = mapped_column(ForeignKey("series.pk"))
    sop_instance_uid: Mapped[str] = mapped_column(UID, index=True)
    sop_class_uid: Mapped[str] = mapped_column(UID)
    instance_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    rows: Mapped[int | None] = mapped_column(Integer, nullable=True)
    columns: Mapped[int | None] = mapped_column(Integer, nullable=True)
    bits_allocated: Mapped[int | None] = mapped_column(Integer, nullable=True)
    number_of_frames: Mapped[int | None] = mapped_column(Integer, nullable=True)
    content_date: Mapped[str] = mapped_column(DA, default="")
    content_time: Mapped[str] = mapped_column(TM, default="")
    content_time_norm: Mapped[str] = mapped_column(TM, default="")
    acquisition_date_time: Mapped[str] = mapped_column(String(32), default="")
    concept_name_code_value: Mapped[str] = mapped_column(SH, default="")
    concept_name_coding_scheme: Mapped[str] = mapped_column(SH, default="")
    verification_flag: Mapped[str] = mapped_column(CS, default="")
    completion_flag: Mapped[str] = mapped_column(CS, default="")
    content_label: Mapped[str] = mapped_column(CS, default="")
    document_title: Mapped[str] = mapped_column(LO, default="")
    timezone_offset_from_utc: Mapped[str] = mapped_column(SH, default="")
    # -- storage -------------------------------------------------------------------------------
    transfer_syntax_uid: Mapped[str] = mapped_column(UID)
    storage_key: Mapped[str] = mapped_column(String(200), unique=True)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))  # compared, never searched for
    received_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    source: Mapped[str] = mapped_column(String(128), default="")  # "dimse:AET", "stow", "import"
    # -- versions ------------------------------------------------------------------------------
    version: Mapped[int] = mapped_column(Integer, default=1)
    is_current: Mapped[bool] = mapped_column(Boolean, default=True)
    # room for rejected/hidden instances (KOS rejection notes) and corrections
    state: Mapped[str] = mapped_column(String(16), default="current")
    superseded_at: Mapped[dt.datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    # -- retrieval -----------------------------------------------------------------------------
    metadata_json: Mapped[bytes] = mapped_column(LargeBinary)  # zlib(DICOM JSON)
    bulk_json: Mapped[str] = mapped_column(Text, default="")  # {"tag path": [offset, length]}
    pixel_encapsulated: Mapped[bool] = mapped_column(Boolean, default=False)
    pixel_offset: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    pixel_length: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    frame_length: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    frames_indexed: Mapped[int] = mapped_column(Integer, default=0)  # rows in frame table
    is_video: Mapped[bool] = mapped_column(Boolean, default=False)
    warnings: Mapped[str] = mapped_column(Text, default="")

    series: Mapped[Series] = relationship()

    __table_args__ = (
        Index(
            "uq_instance_current_sop",
            "sop_instance_uid",
            unique=True,
            sqlite_where=text("is_current = 1"),
            postgresql_where=text("is_current"),
        ),
        Index("ix_instance_series_current", "series_fk", "is_current", "instance_number"),
    )


class Frame(Base):
    """Byte range of one frame of an encapsulated object inside its stored file.

    ``length`` spans ``fragments`` consecutive fragments with their item headers between them;
    a one-fragment frame is exactly the codestream. Native frames are computed from
    ``pixel_offset`` + (n-1) * ``frame_length`` and have no rows here.
    """

    __tablename__ = "frame"
    instance_fk: Mapped[int] = mapped_column(
        ForeignKey("instance.pk", ondelete="CASCADE"), primary_key=True
    )
    number: Mapped[int] = mapped_column(Integer, primary_key=True)
    offset: Mapped[int] = mapped_column(BigInteger)
    length: Mapped[int] = mapped_column(BigInteger)
    fragments: Mapped[int] = mapped_column(Integer, default=1)


class IngestConflict(Base):
    """Something an administrator should look at: a study that arrived under another patient,
    patient attributes that differ for one Patient ID, a superseded or overwritten object."""

    __tablename__ = "ingest_conflict"
    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    sop_instance_uid: Mapped[str] = mapped_column(UID, default="")
    study_instance_uid: Mapped[str] = mapped_column(UID, default="")
    patient_id: Mapped[str] = mapped_column(LO, default="")
    source: Mapped[str] = mapped_column(String(128), default="")
    detail: Mapped[str] = mapped_column(Text, default="")
    resolved: Mapped[bool] = mapped_column(Boolean, default=False)


class AuditEvent(Base):
    """Append-only audit trail: who did what to which object, when, from where and why."""

    __tablename__ = "audit_event"
    pk: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(128), default="")
    action: Mapped[str] = mapped_column(String(64), index=True)
    object_uid: Mapped[str] = mapped_column(UID, default="")
    origin: Mapped[str] = mapped_column(String(128), default="")
    reason: Mapped[str] = mapped_column(Text, default="")
    detail: Mapped[str] = mapped_column(Text, default="")


class RemoteAE(Base):
    """A DICOM peer the archive may send to (C-MOVE destinations, forwarding)."""

    __tablename__ = "remote_ae"
    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    ae_title: Mapped[str] = mapped_column(String(16), unique=True)
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class SchemaInfo(Base):
    """Facts about this index (its id, when it was created)."""

    __tablename__ = "schema_info"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


__all__ = [
    "AuditEvent",
    "Base",
    "Frame",
    "IngestConflict",
    "Instance",
    "Patient",
    "RemoteAE",
    "SchemaInfo",
    "Series",
    "Study",
    "UniqueConstraint",
]

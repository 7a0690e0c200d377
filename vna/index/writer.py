"""Index writes of the ingest path: find-or-create the hierarchy, add an instance version,
keep the computed attributes (counts, modalities, SOP classes in study) current.

Everything here runs inside one write session (one transaction) opened by the caller, so an
instance row, its frames, the counters and any conflict record commit together or not at all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset
from sqlalchemy import Select, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from vna import dicomjson
from vna.dicomfile import ParsedObject
from vna.index.attributes import level_values
from vna.index.tables import (
    AuditEvent,
    Frame,
    IngestConflict,
    Instance,
    Patient,
    Series,
    Study,
    utcnow,
)


@dataclass(frozen=True)
class Existing:
    """The current version of a SOP Instance UID, as ingest needs to judge a duplicate."""

    pk: int
    sha256: str
    storage_key: str
    series_pk: int
    version: int


@dataclass
class AddOutcome:
    """What the index did with a new version."""

    instance_pk: int
    version: int
    warnings: list[str] = field(default_factory=list)
    replaced_key: str | None = None  # object to delete after commit (overwrite policy)


def patient_key(ds: Dataset) -> str:
    """The identity of a patient in this archive: ID + issuer, or name + birth date."""
    pid = str(ds.get("PatientID", "") or "").strip()
    issuer = str(ds.get("IssuerOfPatientID", "") or "").strip()
    if pid:
        return f"id:{issuer}\x1f{pid}"
    name = str(ds.get("PatientName", "") or "").strip()
    birth = str(ds.get("PatientBirthDate", "") or "").strip()
    return f"name:{name}\x1f{birth}"


def current_version(session: Session, sop_instance_uid: str) -> Existing | None:
    """The current version of an object, or None."""
    row = session.execute(
        select(
            Instance.pk, Instance.sha256, Instance.storage_key, Instance.series_fk, Instance.version
        ).where(Instance.sop_instance_uid == sop_instance_uid, Instance.is_current.is_(True))
    ).first()
    return Existing(*row) if row else None


def study_patient_key(session: Session, study_uid: str) -> str | None:
    """The patient key a study is indexed under, or None for a new study."""
    return session.execute(
        select(Patient.patient_key)
        .join(Study, Study.patient_fk == Patient.pk)
        .where(Study.study_instance_uid == study_uid)
    ).scalar_one_or_none()


def fit(table: Any, values: dict[str, Any]) -> dict[str, Any]:
    """Values cut to their column's length (PostgreSQL refuses longer text; SQLite would not
    care, and both back ends must hold the same rows)."""
    columns = table.__table__.c
    out = {}
    for name, value in values.items():
        length = getattr(columns[name].type, "length", None) if name in columns else None
        out[name] = value[:length] if length and isinstance(value, str) else value
    return out


def _insert_ignore(session: Session, table: Any, values: dict[str, Any]) -> None:
    """INSERT … ON CONFLICT DO NOTHING, for find-or-create under concurrent writers."""
    values = fit(table, values)
    dialect = session.get_bind().dialect.name
    stmt: Any
    if dialect == "postgresql":
        stmt = postgresql.insert(table).values(**values).on_conflict_do_nothing()
    else:
        stmt = sqlite.insert(table).values(**values).on_conflict_do_nothing()
    session.execute(stmt)


def _find_or_create(
    session: Session, table: Any, key_column: Any, key: str, values: dict[str, Any]
) -> tuple[int, bool]:
    """The pk of the row whose unique ``key_column`` is ``key``, creating it when missing."""
    query: Select[Any] = select(table.pk).where(key_column == key)
    pk = session.execute(query).scalar_one_or_none()
    if pk is not None:
        return pk, False
    _insert_ignore(session, table, values)
    pk = session.execute(query).scalar_one()
    return pk, True


def _patient(session: Session, ds: Dataset, warnings: list[str], source: str) -> tuple[int, bool]:
    key = patient_key(ds)
    values = level_values(ds, "PATIENT")
    pk, created = _find_or_create(
        session, Patient, Patient.patient_key, key, {"patient_key": key, **values}
    )
    if not created:
        row = session.execute(
            select(Patient.patient_name, Patient.patient_birth_date, Patient.patient_sex).where(
                Patient.pk == pk
            )
        ).one()
        known = {
            "PatientName": row[0],
            "PatientBirthDate": row[1],
            "PatientSex": row[2],
        }
        new = {
            "PatientName": values["patient_name"],
            "PatientBirthDate": values["patient_birth_date"],
            "PatientSex": values["patient_sex"],
        }
        differing = {k: (known[k], new[k]) for k in known if new[k] and known[k] != new[k]}
        if differing:
            text = ", ".join(f"{k} {a!r} (indexed) vs {b!r}" for k, (a, b) in differing.items())
            warnings.append(f"Patient ID {values['patient_id']!r} collision: {text}")
            session.add(
                IngestConflict(
                    kind="patient-attributes",
                    sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
                    study_instance_uid=str(ds.get("StudyInstanceUID", "")),
                    patient_id=values["patient_id"],
                    source=source,
                    detail=json.dumps(
                        {k: {"indexed": a, "received": b} for k, (a, b) in differing.items()}
                    ),
                )
            )
    return pk, created


def _bump(session: Session, series_pk: int, delta: int) -> None:
    """Add ``delta`` current instances to a series, its study and its patient."""
    session.execute(
        update(Series)
        .where(Series.pk == series_pk)
        .values(number_of_instances=Series.number_of_instances + delta, updated_at=utcnow())
    )
    study_pk = select(Series.study_fk).where(Series.pk == series_pk).scalar_subquery()
    session.execute(
        update(Study)
        .where(Study.pk == study_pk)
        .values(number_of_instances=Study.number_of_instances + delta, updated_at=utcnow())
    )
    patient_pk = (
        select(Study.patient_fk)
        .join(Series, Series.study_fk == Study.pk)
        .where(Series.pk == series_pk)
        .scalar_subquery()
    )
    session.execute(
        update(Patient)
        .where(Patient.pk == patient_pk)
        .values(number_of_instances=Patient.number_of_instances + delta)
    )


def _refresh_modalities(session: Session, study_pk: int) -> None:
    modalities = session.execute(
        select(Series.modality).where(Series.study_fk == study_pk, Series.modality != "").distinct()
    ).scalars()
    text = "\\".join(sorted(set(modalities)))
    session.execute(update(Study).where(Study.pk == study_pk).values(modalities_in_study=text))


def _add_sop_class(session: Session, study_pk: int, sop_class: str) -> None:
    current = session.execute(
        select(Study.sop_classes_in_study).where(Study.pk == study_pk)
    ).scalar_one()
    classes = [c for c in current.split("\\") if c]
    if sop_class not in classes:
        classes.append(sop_class)
        session.execute(
            update(Study)
            .where(Study.pk == study_pk)
            .values(sop_classes_in_study="\\".join(classes))
        )


def add_instance(
    session: Session,
    parsed: ParsedObject,
    *,
    storage_key: str,
    size: int,
    sha256: str,
    source: str,
    previous: Existing | None,
    duplicate_policy: str,
) -> AddOutcome:
    """Index one stored object as the current version of its SOP Instance UID.

    ``previous`` is the current version found before the object was stored (None for a new
    object); under ``overwrite`` it is deleted (its object key is returned for removal after
    commit), otherwise it is kept as a superseded version.
    """
    ds = parsed.dataset
    warnings = list(parsed.warnings)
    patient_pk, patient_created = _patient(session, ds, warnings, source)

    study_values = level_values(ds, "STUDY")
    study_pk, study_created = _find_or_create(
        session,
        Study,
        Study.study_instance_uid,
        parsed.study_instance_uid,
        {"patient_fk": patient_pk, **study_values},
    )
    if study_created:
        session.execute(
            update(Patient)
            .where(Patient.pk == patient_pk)
            .values(number_of_studies=Patient.number_of_studies + 1, updated_at=utcnow())
        )
    else:
        indexed_patient = session.execute(
            select(Study.patient_fk).where(Study.pk == study_pk)
        ).scalar_one()
        if indexed_patient != patient_pk:
            # PS3.4 leaves this to the archive: never merge silently, never drop. The object
            # is kept in the study as indexed, the study is flagged, an admin can list it.
            warnings.append(
                f"Study {parsed.study_instance_uid} is indexed under another patient; "
                "stored and flagged for review"
            )
            session.execute(update(Study).where(Study.pk == study_pk).values(conflict=True))
            session.add(
                IngestConflict(
                    kind="study-patient",
                    sop_instance_uid=parsed.sop_instance_uid,
                    study_instance_uid=parsed.study_instance_uid,
                    patient_id=str(ds.get("PatientID", "") or ""),
                    source=source,
                    detail=json.dumps(
                        {
                            "received_patient": patient_key(ds).replace("\x1f", "|"),
                            "received_name": str(ds.get("PatientName", "") or ""),
                        }
                    ),
                )
            )
            patient_pk = indexed_patient

    series_values = level_values(ds, "SERIES")
    rq = parsed.metadata.get("0040A370")
    series_values["request_attributes_json"] = dicomjson.dumps(rq) if rq else ""
    series_values["source_ae_title"] = (
        source.split(":", 1)[1][:16] if source.startswith("dimse:") else ""
    )
    series_pk, series_created = _find_or_create(
        session,
        Series,
        Series.series_instance_uid,
        parsed.series_instance_uid,
        {"study_fk": study_pk, **series_values},
    )
    if series_created:
        session.execute(
            update(Study)
            .where(Study.pk == study_pk)
            .values(number_of_series=Study.number_of_series + 1)
        )
        session.execute(
            update(Patient)
            .where(Patient.pk == patient_pk)
            .values(number_of_series=Patient.number_of_series + 1)
        )
        _refresh_modalities(session, study_pk)
    else:
        series_study = session.execute(
            select(Series.study_fk).where(Series.pk == series_pk)
        ).scalar_one()
        if series_study != study_pk:
            warnings.append(
                f"Series {parsed.series_instance_uid} is indexed under another study; "
                "stored in the series as indexed and flagged for review"
            )
            session.add(
                IngestConflict(
                    kind="series-study",
                    sop_instance_uid=parsed.sop_instance_uid,
                    study_instance_uid=parsed.study_instance_uid,
                    patient_id=str(ds.get("PatientID", "") or ""),
                    source=source,
                    detail=json.dumps({"series": parsed.series_instance_uid}),
                )
            )
            study_pk = series_study
    _add_sop_class(session, study_pk, parsed.sop_class_uid)

    version = 1
    replaced_key: str | None = None
    if previous is not None:
        version = previous.version + 1
        if duplicate_policy == "overwrite":
            replaced_key = previous.storage_key
            session.execute(delete(Frame).where(Frame.instance_fk == previous.pk))
            session.execute(delete(Instance).where(Instance.pk == previous.pk))
            action = "overwrite"
        else:
            session.execute(
                update(Instance)
                .where(Instance.pk == previous.pk)
                .values(is_current=False, state="superseded", superseded_at=utcnow())
            )
            action = "supersede"
        _bump(session, previous.series_pk, -1)
        session.add(
            AuditEvent(
                actor=source,
                action=action,
                object_uid=parsed.sop_instance_uid,
                origin=source,
                detail=json.dumps(
                    {
                        "previous_sha256": previous.sha256,
                        "previous_key": previous.storage_key,
                        "new_sha256": sha256,
                        "version": version,
                    }
                ),
            )
        )
        warnings.append(
            f"SOP Instance {parsed.sop_instance_uid} already stored with other content: "
            + ("replaced (overwrite policy)" if replaced_key else f"kept as version {version}")
        )

    instance_values = level_values(ds, "IMAGE")
    pixel = parsed.pixel
    row = Instance(
        series_fk=series_pk,
        sop_instance_uid=parsed.sop_instance_uid,
        sop_class_uid=parsed.sop_class_uid,
        transfer_syntax_uid=parsed.transfer_syntax,
        storage_key=storage_key,
        size=size,
        sha256=sha256,
        source=source,
        version=version,
        metadata_json=dicomjson.pack(parsed.metadata),
        bulk_json=json.dumps(parsed.bulk, separators=(",", ":")) if parsed.bulk else "",
        pixel_encapsulated=bool(pixel and pixel.encapsulated),
        pixel_offset=pixel.value_offset if pixel else None,
        pixel_length=pixel.value_length if pixel and pixel.value_length >= 0 else None,
        frame_length=pixel.frame_length if pixel else None,
        frames_indexed=len(pixel.frames) if pixel and pixel.encapsulated else 0,
        is_video=bool(pixel and pixel.is_video),
        warnings="\n".join(warnings),
        **{
            k: v
            for k, v in fit(Instance, instance_values).items()
            if k not in ("sop_instance_uid", "sop_class_uid")
        },
    )
    if pixel is not None and not instance_values.get("number_of_frames"):
        row.number_of_frames = pixel.number_of_frames if pixel.number_of_frames > 1 else None
    session.add(row)
    session.flush()
    if pixel is not None and pixel.encapsulated and pixel.frames:
        session.execute(
            insert(Frame),
            [
                {
                    "instance_fk": row.pk,
                    "number": f.number,
                    "offset": f.offset,
                    "length": f.length,
                    "fragments": f.fragments,
                }
                for f in pixel.frames
            ],
        )
    _bump(session, series_pk, +1)
    del patient_created
    return AddOutcome(row.pk, version, warnings, replaced_key)


def count_rows(session: Session) -> dict[str, int]:
    """Rows per level (current instances only), for statistics."""
    return {
        "patients": session.execute(select(func.count(Patient.pk))).scalar_one(),
        "studies": session.execute(select(func.count(Study.pk))).scalar_one(),
        "series": session.execute(select(func.count(Series.pk))).scalar_one(),
        "instances": session.execute(
            select(func.count(Instance.pk)).where(Instance.is_current.is_(True))
        ).scalar_one(),
        "versions": session.execute(select(func.count(Instance.pk))).scalar_one(),
    }

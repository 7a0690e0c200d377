"""Index writes of the ingest path: find-or-create the hierarchy, add an instance version,
keep the computed attributes (counts, modalities, SOP classes in study) current.

Everything here runs inside one write session (one transaction) opened by the caller, so an
instance row, its frames, the counters and any conflict record commit together or not at all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, String, Text, bindparam, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from vna import dicomjson
from vna.dicomfile import ParsedObject
from vna.index.attributes import level_values, meta_text, patient_key
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


_CURRENT_VERSION = select(
    Instance.pk, Instance.sha256, Instance.storage_key, Instance.series_fk, Instance.version
).where(Instance.sop_instance_uid == bindparam("uid"), Instance.is_current.is_(True))


def _connection(bind: Session | Connection) -> Connection:
    return bind.connection() if isinstance(bind, Session) else bind


def current_version(bind: Session | Connection, sop_instance_uid: str) -> Existing | None:
    """The current version of an object, or None."""
    row = _connection(bind).execute(_CURRENT_VERSION, {"uid": sop_instance_uid}).first()
    return Existing(*row) if row else None


def study_patient_key(bind: Session | Connection, study_uid: str) -> str | None:
    """The patient key a study is indexed under, or None for a new study."""
    return (
        _connection(bind)
        .execute(
            select(Patient.patient_key)
            .join(Study, Study.patient_fk == Patient.pk)
            .where(Study.study_instance_uid == study_uid)
        )
        .scalar_one_or_none()
    )


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


def _patient(
    session: Session, parsed: ParsedObject, warnings: list[str], source: str
) -> tuple[int, bool]:
    key = patient_key(parsed.metadata)
    values = level_values(parsed.metadata, "PATIENT")
    pk, created = _find_or_create(
        session, Patient, Patient.patient_key, key, {"patient_key": key, **values}
    )
    if not created:
        row = session.execute(
            select(Patient.patient_name, Patient.patient_birth_date, Patient.patient_sex).where(
                Patient.pk == pk
            )
        ).one()
        known = {"PatientName": row[0], "PatientBirthDate": row[1], "PatientSex": row[2]}
        _collision(session, parsed, known, values, warnings, source)
    return pk, created


def _refresh_modalities(session: Session, study_pk: int) -> None:
    modalities = session.execute(
        select(Series.modality).where(Series.study_fk == study_pk, Series.modality != "").distinct()
    ).scalars()
    text = "\\".join(sorted(set(modalities)))
    session.execute(update(Study).where(Study.pk == study_pk).values(modalities_in_study=text))


# Statements of the hot path, built once (immutable): building a statement per call costs
# more than running it on SQLite.
_SERIES_CONTEXT = (
    select(
        Series.pk,
        Series.study_fk,
        Study.study_instance_uid,
        Study.patient_fk,
        Study.sop_classes_in_study,
        Patient.patient_key,
        Patient.patient_name,
        Patient.patient_birth_date,
        Patient.patient_sex,
    )
    .join(Study, Series.study_fk == Study.pk)
    .join(Patient, Study.patient_fk == Patient.pk)
    .where(Series.series_instance_uid == bindparam("uid"))
)
_BUMP_SERIES = (
    update(Series)
    .where(Series.pk == bindparam("key"))
    .values(number_of_instances=Series.number_of_instances + bindparam("delta"))
)
_BUMP_STUDY = (
    update(Study)
    .where(Study.pk == bindparam("key"))
    .values(
        number_of_instances=Study.number_of_instances + bindparam("delta"),
        updated_at=bindparam("now"),
    )
)
_BUMP_PATIENT = (
    update(Patient)
    .where(Patient.pk == bindparam("key"))
    .values(number_of_instances=Patient.number_of_instances + bindparam("delta"))
)
_SET_SOP_CLASSES = (
    update(Study)
    .where(Study.pk == bindparam("key"))
    .values(sop_classes_in_study=bindparam("classes"))
)


@dataclass
class _Hierarchy:
    patient_pk: int
    study_pk: int
    series_pk: int
    sop_classes: str


def _bump_pks(session: Session, h: _Hierarchy, delta: int) -> None:
    """Add ``delta`` current instances to the patient, study and series of ``h``.

    Row locks are always taken in the order patient → study → series (here and in
    ``_resolve``), so concurrent writers on PostgreSQL queue instead of deadlocking.
    """
    # Core statements on the session's connection: the ORM layer is not needed for these.
    conn = session.connection()
    conn.execute(_BUMP_PATIENT, {"key": h.patient_pk, "delta": delta})
    conn.execute(_BUMP_STUDY, {"key": h.study_pk, "delta": delta, "now": utcnow()})
    conn.execute(_BUMP_SERIES, {"key": h.series_pk, "delta": delta})


def _known_series(
    session: Session, parsed: ParsedObject, warnings: list[str], source: str
) -> _Hierarchy | None:
    """Fast path: the series is already indexed in this study under this patient (one query).

    Returns None when anything differs, so that the general path handles it.
    """
    conn = session.connection()
    row = conn.execute(_SERIES_CONTEXT, {"uid": parsed.series_instance_uid}).first()
    if row is None or row.study_instance_uid != parsed.study_instance_uid:
        return None
    if row.patient_key != patient_key(parsed.metadata):
        return None
    known = {
        "PatientName": row.patient_name,
        "PatientBirthDate": row.patient_birth_date,
        "PatientSex": row.patient_sex,
    }
    values = level_values(parsed.metadata, "PATIENT")
    _collision(session, parsed, known, values, warnings, source)
    return _Hierarchy(row.patient_fk, row.study_fk, row.pk, row.sop_classes_in_study)


def _collision(
    session: Session,
    parsed: ParsedObject,
    known: dict[str, str],
    values: dict[str, Any],
    warnings: list[str],
    source: str,
) -> None:
    """Record a Patient ID collision: same patient key, other name, birth date or sex."""
    new = {
        "PatientName": values["patient_name"],
        "PatientBirthDate": values["patient_birth_date"],
        "PatientSex": values["patient_sex"],
    }
    differing = {k: (known[k], new[k]) for k in known if new[k] and known[k] != new[k]}
    if not differing:
        return
    text = ", ".join(f"{k} {a!r} (indexed) vs {b!r}" for k, (a, b) in differing.items())
    warnings.append(f"Patient ID {values['patient_id']!r} collision: {text}")
    session.add(
        IngestConflict(
            kind="patient-attributes",
            sop_instance_uid=parsed.sop_instance_uid,
            study_instance_uid=parsed.study_instance_uid,
            patient_id=values["patient_id"],
            source=source,
            detail=json.dumps(
                {k: {"indexed": a, "received": b} for k, (a, b) in differing.items()}
            ),
        )
    )


def _resolve(
    session: Session, parsed: ParsedObject, warnings: list[str], source: str
) -> _Hierarchy:
    """Patient, study and series rows of an object, created when missing, conflicts flagged."""
    fast = _known_series(session, parsed, warnings, source)
    if fast is not None:
        return fast
    meta = parsed.metadata
    patient_pk, _ = _patient(session, parsed, warnings, source)
    study_values = level_values(parsed.metadata, "STUDY")
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
                    patient_id=meta_text(meta, 0x00100020),
                    source=source,
                    detail=json.dumps(
                        {
                            "received_patient": patient_key(parsed.metadata).replace("\x1f", "|"),
                            "received_name": meta_text(meta, 0x00100010),
                        }
                    ),
                )
            )
            patient_pk = indexed_patient

    series_values = level_values(parsed.metadata, "SERIES")
    rq = parsed.metadata.get("00400275")
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
            update(Patient)
            .where(Patient.pk == patient_pk)
            .values(number_of_series=Patient.number_of_series + 1)
        )
        session.execute(
            update(Study)
            .where(Study.pk == study_pk)
            .values(number_of_series=Study.number_of_series + 1)
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
                    patient_id=meta_text(meta, 0x00100020),
                    source=source,
                    detail=json.dumps({"series": parsed.series_instance_uid}),
                )
            )
            study_pk = series_study
            patient_pk = session.execute(
                select(Study.patient_fk).where(Study.pk == study_pk)
            ).scalar_one()
    classes = session.execute(
        select(Study.sop_classes_in_study).where(Study.pk == study_pk)
    ).scalar_one()
    return _Hierarchy(patient_pk, study_pk, series_pk, classes)


def _previous_hierarchy(session: Session, series_pk: int) -> _Hierarchy:
    row = session.execute(
        select(Series.study_fk, Study.patient_fk)
        .join(Study, Series.study_fk == Study.pk)
        .where(Series.pk == series_pk)
    ).one()
    return _Hierarchy(row.patient_fk, row.study_fk, series_pk, "")


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
    warnings = list(parsed.warnings)
    h = _resolve(session, parsed, warnings, source)

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
        _bump_pks(session, _previous_hierarchy(session, previous.series_pk), -1)
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

    instance_values = fit(Instance, level_values(parsed.metadata, "IMAGE"))
    instance_values.pop("sop_instance_uid", None)
    instance_values.pop("sop_class_uid", None)
    pixel = parsed.pixel
    if pixel is not None and not instance_values.get("number_of_frames"):
        instance_values["number_of_frames"] = (
            pixel.number_of_frames if pixel.number_of_frames > 1 else None
        )
    now = utcnow()
    instance_pk = (
        session.connection()
        .execute(
            _INSERT_INSTANCE,
            {
                **_INSTANCE_DEFAULTS,
                **instance_values,
                "series_fk": h.series_pk,
                "sop_instance_uid": parsed.sop_instance_uid,
                "sop_class_uid": parsed.sop_class_uid,
                "transfer_syntax_uid": parsed.transfer_syntax,
                "storage_key": storage_key,
                "size": size,
                "sha256": sha256,
                "received_at": now,
                "source": source,
                "version": version,
                "is_current": True,
                "state": "current",
                "metadata_json": dicomjson.pack(parsed.metadata),
                "bulk_json": json.dumps(parsed.bulk, separators=(",", ":")) if parsed.bulk else "",
                "pixel_encapsulated": bool(pixel and pixel.encapsulated),
                "pixel_offset": pixel.value_offset if pixel else None,
                "pixel_length": pixel.value_length if pixel and pixel.value_length >= 0 else None,
                "frame_length": pixel.frame_length if pixel else None,
                "frames_indexed": len(pixel.frames) if pixel and pixel.encapsulated else 0,
                "is_video": bool(pixel and pixel.is_video),
                "warnings": "\n".join(warnings),
            },
        )
        .scalar_one()
    )
    if pixel is not None and pixel.encapsulated and pixel.frames:
        session.execute(
            insert(Frame),
            [
                {
                    "instance_fk": instance_pk,
                    "number": f.number,
                    "offset": f.offset,
                    "length": f.length,
                    "fragments": f.fragments,
                }
                for f in pixel.frames
            ],
        )
    _bump_pks(session, h, +1)
    classes = [c for c in h.sop_classes.split("\\") if c]
    if parsed.sop_class_uid not in classes:
        classes.append(parsed.sop_class_uid)
        session.connection().execute(
            _SET_SOP_CLASSES, {"key": h.study_pk, "classes": "\\".join(classes)}
        )
    return AddOutcome(instance_pk, version, warnings, replaced_key)


#: Every column of an instance row but its key, with the value used when ingest has none.
_INSTANCE_DEFAULTS: dict[str, Any] = {
    c.name: None if c.nullable else ("" if isinstance(c.type, String | Text) else None)
    for c in Instance.__table__.c
    if c.name != "pk"
}
_INSERT_INSTANCE = insert(Instance).returning(Instance.pk)


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

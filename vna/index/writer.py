"""Index writes of the ingest path: find-or-create the hierarchy, add an instance version,
keep the computed attributes (counts, modalities, SOP classes in study) current.

Everything here runs inside one write transaction opened by the caller (a Core connection
from ``Database.transaction()``, or an ORM session), so an instance row, its frames, the
counters and any conflict record commit together or not at all.

The statements are built once and run as :class:`~vna.index.db.Prepared` statements: a new
instance in a series already indexed costs five of them (the series context, the instance
insert and the three counters), each a few microseconds on SQLite.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import DateTime, String, Text, bindparam, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from vna import dicomjson
from vna.dicomfile import ParsedObject
from vna.index.attributes import level_values, meta_text, norm_date, patient_key
from vna.index.db import Prepared
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


def _connection(bind: Session | Connection) -> Connection:
    return bind.connection() if isinstance(bind, Session) else bind


# -- statements (built once: building one per call costs more than running it) ---------------

_CURRENT_VERSION = Prepared(
    select(
        Instance.pk, Instance.sha256, Instance.storage_key, Instance.series_fk, Instance.version
    ).where(Instance.sop_instance_uid == bindparam("uid"), Instance.is_current.is_(True))
)
_STUDY_PATIENT_KEY = Prepared(
    select(Patient.patient_key)
    .join(Study, Study.patient_fk == Patient.pk)
    .where(Study.study_instance_uid == bindparam("uid"))
)
# Everything the common case (a new instance in a series already indexed) needs, in one query.
_SERIES_CONTEXT = Prepared(
    select(
        Series.pk,
        Series.study_fk,
        Study.study_instance_uid,
        Study.patient_fk,
        Patient.patient_key,
        Patient.patient_name,
        Patient.patient_birth_date,
        Patient.patient_sex,
    )
    .join(Study, Series.study_fk == Study.pk)
    .join(Patient, Study.patient_fk == Patient.pk)
    .where(Series.series_instance_uid == bindparam("uid"))
)
_FIND_PATIENT = Prepared(
    select(Patient.pk, Patient.patient_name, Patient.patient_birth_date, Patient.patient_sex).where(
        Patient.patient_key == bindparam("key")
    )
)
_FIND_STUDY = Prepared(
    select(Study.pk, Study.patient_fk).where(Study.study_instance_uid == bindparam("key"))
)
_FIND_SERIES = Prepared(
    select(Series.pk, Series.study_fk).where(Series.series_instance_uid == bindparam("key"))
)
_STUDY_OWNER = Prepared(select(Study.patient_fk).where(Study.pk == bindparam("key")))
_PREVIOUS_HIERARCHY = Prepared(
    select(Series.study_fk, Study.patient_fk)
    .join(Study, Series.study_fk == Study.pk)
    .where(Series.pk == bindparam("key"))
)
_SERIES_MODALITIES = Prepared(
    select(Series.modality)
    .where(Series.study_fk == bindparam("key"), Series.modality != bindparam("empty"))
    .distinct()
)
_SET_MODALITIES = Prepared(
    update(Study).where(Study.pk == bindparam("key")).values(modalities_in_study=bindparam("text"))
)
_FLAG_STUDY = Prepared(
    update(Study).where(Study.pk == bindparam("key")).values(conflict=bindparam("flag"))
)
_NEW_STUDY_OF_PATIENT = Prepared(
    update(Patient)
    .where(Patient.pk == bindparam("key"))
    .values(number_of_studies=Patient.number_of_studies + 1, updated_at=bindparam("now"))
)
_NEW_SERIES_OF_PATIENT = Prepared(
    update(Patient)
    .where(Patient.pk == bindparam("key"))
    .values(number_of_series=Patient.number_of_series + 1)
)
_NEW_SERIES_OF_STUDY = Prepared(
    update(Study)
    .where(Study.pk == bindparam("key"))
    .values(number_of_series=Study.number_of_series + 1)
)
_BUMP_PATIENT = Prepared(
    update(Patient)
    .where(Patient.pk == bindparam("key"))
    .values(number_of_instances=Patient.number_of_instances + bindparam("delta"))
)
# Returns the study's SOP classes read under the row lock the update takes (PostgreSQL), so
# that two writers adding a class to one study at once cannot lose one of them.
_BUMP_STUDY = Prepared(
    update(Study)
    .where(Study.pk == bindparam("key"))
    .values(
        number_of_instances=Study.number_of_instances + bindparam("delta"),
        updated_at=bindparam("now"),
    )
    .returning(Study.sop_classes_in_study)
)
_BUMP_SERIES = Prepared(
    update(Series)
    .where(Series.pk == bindparam("key"))
    .values(number_of_instances=Series.number_of_instances + bindparam("delta"))
)
_SET_SOP_CLASSES = Prepared(
    update(Study)
    .where(Study.pk == bindparam("key"))
    .values(sop_classes_in_study=bindparam("classes"))
)
_SUPERSEDE = Prepared(
    update(Instance)
    .where(Instance.pk == bindparam("key"))
    .values(
        is_current=bindparam("current"), state=bindparam("state"), superseded_at=bindparam("now")
    )
)
_DELETE_FRAMES = Prepared(delete(Frame).where(Frame.instance_fk == bindparam("key")))
_DELETE_INSTANCE = Prepared(delete(Instance).where(Instance.pk == bindparam("key")))
_FRAME_COLUMNS = ("instance_fk", "number", "offset", "length", "fragments")
_INSERT_FRAMES = Prepared(insert(Frame), column_keys=_FRAME_COLUMNS)


class _Now:
    """Marks a column whose default is the time of the insert."""


def _column_defaults(table: Any) -> dict[str, Any]:
    """Every column of a table but its key, with the value an insert gives it by default (the
    columns' Python-side defaults, which Prepared statements do not apply by themselves)."""
    out: dict[str, Any] = {}
    for column in table.__table__.c:
        if column.primary_key:
            continue
        default = column.default
        if default is None:
            out[column.name] = None  # nullable, or always given by the caller
        elif default.is_scalar:
            out[column.name] = default.arg
        else:  # the only callable default is the creation time (tables.utcnow)
            assert default.is_callable and isinstance(column.type, DateTime), column
            out[column.name] = _Now
    return out


def _insert_ignore_statements(table: Any) -> dict[str, Prepared]:
    """INSERT … ON CONFLICT DO NOTHING RETURNING pk, per dialect (find-or-create under
    concurrent writers: no row comes back when another writer created it first)."""
    columns = list(_column_defaults(table))
    return {
        "sqlite": Prepared(
            sqlite.insert(table).on_conflict_do_nothing().returning(table.pk), columns
        ),
        "postgresql": Prepared(
            postgresql.insert(table).on_conflict_do_nothing().returning(table.pk), columns
        ),
    }


_DEFAULTS = {table: _column_defaults(table) for table in (Patient, Study, Series)}
_INSERT_IGNORE = {table: _insert_ignore_statements(table) for table in (Patient, Study, Series)}


# -- helpers ---------------------------------------------------------------------------------


def current_version(bind: Session | Connection, sop_instance_uid: str) -> Existing | None:
    """The current version of an object, or None."""
    row = _CURRENT_VERSION.first(_connection(bind), {"uid": sop_instance_uid})
    return Existing(*row) if row else None


def study_patient_key(bind: Session | Connection, study_uid: str) -> str | None:
    """The patient key a study is indexed under, or None for a new study."""
    key: str | None = _STUDY_PATIENT_KEY.scalar(_connection(bind), {"uid": study_uid})
    return key


_LENGTHS: dict[Any, dict[str, int]] = {}


def _lengths(table: Any) -> dict[str, int]:
    lengths = _LENGTHS.get(table)
    if lengths is None:
        lengths = {
            c.name: c.type.length for c in table.__table__.c if getattr(c.type, "length", None)
        }
        _LENGTHS[table] = lengths
    return lengths


def fit(table: Any, values: dict[str, Any]) -> dict[str, Any]:
    """Values cut to their column's length (PostgreSQL refuses longer text; SQLite would not
    care, and both back ends must hold the same rows)."""
    lengths = _lengths(table)
    return {
        name: value[: lengths[name]] if name in lengths and isinstance(value, str) else value
        for name, value in values.items()
    }


def _create(conn: Connection, table: Any, values: dict[str, Any]) -> int | None:
    """Insert a row unless its unique key exists; its pk, or None when it already existed."""
    now = utcnow()
    row = {name: now if default is _Now else default for name, default in _DEFAULTS[table].items()}
    row.update(fit(table, values))
    pk: int | None = _INSERT_IGNORE[table][conn.dialect.name].scalar(conn, row)
    return pk


def _find_or_create(
    conn: Connection, find: Prepared, table: Any, key: str, values: dict[str, Any]
) -> tuple[tuple[Any, ...] | None, int]:
    """The row ``find`` returns for ``key`` (None when this call created it) and its pk."""
    row = find.first(conn, {"key": key})
    if row is None:
        pk = _create(conn, table, values)
        if pk is not None:
            return None, pk
        row = find.first(conn, {"key": key})  # another writer created it meanwhile
        assert row is not None
    return row, row[0]


def _add_conflict(conn: Connection, **values: Any) -> None:
    conn.execute(insert(IngestConflict).values(**values))


def _patient_identity(meta: dict[str, Any]) -> dict[str, str]:
    """The patient attributes compared for a Patient ID collision, as level_values gives them."""
    return {
        "patient_id": meta_text(meta, 0x00100020),
        "patient_name": meta_text(meta, 0x00100010),
        "patient_birth_date": norm_date(meta_text(meta, 0x00100030)),
        "patient_sex": meta_text(meta, 0x00100040),
    }


def _collision(
    conn: Connection,
    parsed: ParsedObject,
    known: tuple[str, str, str],
    values: dict[str, Any],
    warnings: list[str],
    source: str,
) -> None:
    """Record a Patient ID collision: same patient key, other name, birth date or sex.

    ``known`` is the indexed (name, birth date, sex).
    """
    new = (values["patient_name"], values["patient_birth_date"], values["patient_sex"])
    if known == new:
        return
    names = ("PatientName", "PatientBirthDate", "PatientSex")
    differing = {k: (a, b) for k, a, b in zip(names, known, new, strict=True) if b and a != b}
    if not differing:
        return
    text = ", ".join(f"{k} {a!r} (indexed) vs {b!r}" for k, (a, b) in differing.items())
    warnings.append(f"Patient ID {values['patient_id']!r} collision: {text}")
    _add_conflict(
        conn,
        kind="patient-attributes",
        sop_instance_uid=parsed.sop_instance_uid,
        study_instance_uid=parsed.study_instance_uid,
        patient_id=values["patient_id"],
        source=source,
        detail=json.dumps({k: {"indexed": a, "received": b} for k, (a, b) in differing.items()}),
    )


@dataclass
class _Hierarchy:
    patient_pk: int
    study_pk: int
    series_pk: int


def _bump_pks(conn: Connection, h: _Hierarchy, delta: int) -> str:
    """Add ``delta`` current instances to the patient, study and series of ``h``; return
    the study's SOP Classes in Study.

    Row locks are always taken in the order patient → study → series (here and in
    ``_resolve``), so concurrent writers on PostgreSQL queue instead of deadlocking.
    """
    _BUMP_PATIENT.execute(conn, {"key": h.patient_pk, "delta": delta})
    classes = _BUMP_STUDY.scalar(conn, {"key": h.study_pk, "delta": delta, "now": utcnow()})
    _BUMP_SERIES.execute(conn, {"key": h.series_pk, "delta": delta})
    return classes or ""


def _known_series(
    conn: Connection, parsed: ParsedObject, warnings: list[str], source: str
) -> _Hierarchy | None:
    """Fast path: the series is already indexed in this study under this patient (one query).

    Returns None when anything differs, so that the general path handles it.
    """
    row = _SERIES_CONTEXT.first(conn, {"uid": parsed.series_instance_uid})
    if row is None:
        return None
    series_pk, study_pk, study_uid, patient_pk, indexed_key, name, birth_date, sex = row
    if study_uid != parsed.study_instance_uid or indexed_key != patient_key(parsed.metadata):
        return None
    identity = _patient_identity(parsed.metadata)
    _collision(conn, parsed, (name, birth_date, sex), identity, warnings, source)
    return _Hierarchy(patient_pk, study_pk, series_pk)


def _patient(conn: Connection, parsed: ParsedObject, warnings: list[str], source: str) -> int:
    key = patient_key(parsed.metadata)
    values = level_values(parsed.metadata, "PATIENT")
    row, pk = _find_or_create(conn, _FIND_PATIENT, Patient, key, {"patient_key": key, **values})
    if row is not None:
        _collision(conn, parsed, row[1:4], values, warnings, source)
    return pk


def _refresh_modalities(conn: Connection, study_pk: int) -> None:
    modalities = _SERIES_MODALITIES.all(conn, {"key": study_pk, "empty": ""})
    text = "\\".join(sorted({m for (m,) in modalities}))
    _SET_MODALITIES.execute(conn, {"key": study_pk, "text": text})


def _resolve(
    conn: Connection, parsed: ParsedObject, warnings: list[str], source: str
) -> _Hierarchy:
    """Patient, study and series rows of an object, created when missing, conflicts flagged."""
    fast = _known_series(conn, parsed, warnings, source)
    if fast is not None:
        return fast
    meta = parsed.metadata
    patient_pk = _patient(conn, parsed, warnings, source)
    study_values = level_values(meta, "STUDY")
    study_row, study_pk = _find_or_create(
        conn,
        _FIND_STUDY,
        Study,
        parsed.study_instance_uid,
        {"patient_fk": patient_pk, **study_values},
    )
    if study_row is None:
        _NEW_STUDY_OF_PATIENT.execute(conn, {"key": patient_pk, "now": utcnow()})
    elif study_row[1] != patient_pk:
        # PS3.4 leaves this to the archive: never merge silently, never drop. The object
        # is kept in the study as indexed, the study is flagged, an admin can list it.
        warnings.append(
            f"Study {parsed.study_instance_uid} is indexed under another patient; "
            "stored and flagged for review"
        )
        _FLAG_STUDY.execute(conn, {"key": study_pk, "flag": True})
        _add_conflict(
            conn,
            kind="study-patient",
            sop_instance_uid=parsed.sop_instance_uid,
            study_instance_uid=parsed.study_instance_uid,
            patient_id=meta_text(meta, 0x00100020),
            source=source,
            detail=json.dumps(
                {
                    "received_patient": patient_key(meta).replace("\x1f", "|"),
                    "received_name": meta_text(meta, 0x00100010),
                }
            ),
        )
        patient_pk = study_row[1]

    series_values = level_values(meta, "SERIES")
    rq = meta.get("00400275")
    series_values["request_attributes_json"] = dicomjson.dumps(rq) if rq else ""
    series_values["source_ae_title"] = (
        source.split(":", 1)[1][:16] if source.startswith("dimse:") else ""
    )
    series_row, series_pk = _find_or_create(
        conn,
        _FIND_SERIES,
        Series,
        parsed.series_instance_uid,
        {"study_fk": study_pk, **series_values},
    )
    if series_row is None:
        _NEW_SERIES_OF_PATIENT.execute(conn, {"key": patient_pk})
        _NEW_SERIES_OF_STUDY.execute(conn, {"key": study_pk})
        _refresh_modalities(conn, study_pk)
    elif series_row[1] != study_pk:
        warnings.append(
            f"Series {parsed.series_instance_uid} is indexed under another study; "
            "stored in the series as indexed and flagged for review"
        )
        _add_conflict(
            conn,
            kind="series-study",
            sop_instance_uid=parsed.sop_instance_uid,
            study_instance_uid=parsed.study_instance_uid,
            patient_id=meta_text(meta, 0x00100020),
            source=source,
            detail=json.dumps({"series": parsed.series_instance_uid}),
        )
        study_pk = series_row[1]
        patient_pk = _STUDY_OWNER.scalar(conn, {"key": study_pk})
    return _Hierarchy(patient_pk, study_pk, series_pk)


def _previous_hierarchy(conn: Connection, series_pk: int) -> _Hierarchy:
    row = _PREVIOUS_HIERARCHY.first(conn, {"key": series_pk})
    assert row is not None
    study_pk, patient_pk = row
    return _Hierarchy(patient_pk, study_pk, series_pk)


def add_instance(
    bind: Session | Connection,
    parsed: ParsedObject,
    *,
    storage_key: str,
    size: int,
    sha256: str,
    source: str,
    previous: Existing | None,
    duplicate_policy: str,
    values: dict[str, Any] | None = None,
) -> AddOutcome:
    """Index one stored object as the current version of its SOP Instance UID.

    ``previous`` is the current version found before the object was stored (None for a new
    object); under ``overwrite`` it is deleted (its object key is returned for removal after
    commit), otherwise it is kept as a superseded version. ``values`` is what
    :func:`instance_values` gives for the object, when the caller computed it already.
    """
    conn = _connection(bind)
    warnings = list(parsed.warnings)
    h = _resolve(conn, parsed, warnings, source)

    version = 1
    replaced_key: str | None = None
    if previous is not None:
        version = previous.version + 1
        if duplicate_policy == "overwrite":
            replaced_key = previous.storage_key
            _DELETE_FRAMES.execute(conn, {"key": previous.pk})
            _DELETE_INSTANCE.execute(conn, {"key": previous.pk})
            action = "overwrite"
        else:
            _SUPERSEDE.execute(
                conn,
                {"key": previous.pk, "current": False, "state": "superseded", "now": utcnow()},
            )
            action = "supersede"
        _bump_pks(conn, _previous_hierarchy(conn, previous.series_pk), -1)
        conn.execute(
            insert(AuditEvent).values(
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

    row = dict(values) if values is not None else instance_values(parsed)
    row.update(
        {
            "series_fk": h.series_pk,
            "storage_key": storage_key,
            "size": size,
            "sha256": sha256,
            "received_at": utcnow(),
            "source": source,
            "version": version,
            "is_current": True,
            "state": "current",
            "warnings": "\n".join(warnings),
        }
    )
    instance_pk: int = _INSERT_INSTANCE.scalar(conn, row)
    pixel = parsed.pixel
    if pixel is not None and pixel.encapsulated and pixel.frames:
        _INSERT_FRAMES.execute_many(
            conn,
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
    indexed_classes = _bump_pks(conn, h, +1)
    classes = [c for c in indexed_classes.split("\\") if c]
    if parsed.sop_class_uid not in classes:
        classes.append(parsed.sop_class_uid)
        _SET_SOP_CLASSES.execute(conn, {"key": h.study_pk, "classes": "\\".join(classes)})
    return AddOutcome(instance_pk, version, warnings, replaced_key)


def instance_values(parsed: ParsedObject) -> dict[str, Any]:
    """The columns of an object's instance row that follow from the object alone.

    Most of the work of indexing an object is here (the metadata packed, the attributes
    extracted): callers compute it before the write transaction, so that the write lock is
    held for the statements only.
    """
    values = _INSTANCE_DEFAULTS.copy()
    values.update(fit(Instance, level_values(parsed.metadata, "IMAGE")))
    pixel = parsed.pixel
    if pixel is not None and not values.get("number_of_frames"):
        values["number_of_frames"] = pixel.number_of_frames if pixel.number_of_frames > 1 else None
    values.update(
        {
            "sop_instance_uid": parsed.sop_instance_uid,
            "sop_class_uid": parsed.sop_class_uid,
            "transfer_syntax_uid": parsed.transfer_syntax,
            "metadata_json": dicomjson.pack(parsed.metadata),
            "bulk_json": dicomjson.dumps(parsed.bulk) if parsed.bulk else "",
            "pixel_encapsulated": bool(pixel and pixel.encapsulated),
            "pixel_offset": pixel.value_offset if pixel else None,
            "pixel_length": pixel.value_length if pixel and pixel.value_length >= 0 else None,
            "frame_length": pixel.frame_length if pixel else None,
            "frames_indexed": len(pixel.frames) if pixel and pixel.encapsulated else 0,
            "is_video": bool(pixel and pixel.is_video),
        }
    )
    return values


#: Every column of an instance row but its key, with the value used when ingest has none.
_INSTANCE_DEFAULTS: dict[str, Any] = {
    c.name: None if c.nullable else ("" if isinstance(c.type, String | Text) else None)
    for c in Instance.__table__.c
    if c.name != "pk"
}
_INSERT_INSTANCE = Prepared(insert(Instance).returning(Instance.pk), list(_INSTANCE_DEFAULTS))


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

"""The query engine: one QueryRequest for C-FIND identifiers and QIDO-RS parameters alike.

A request names a level, the keys to match (tag -> Unicode value, empty = return only) and
the attributes to return. Matching runs in SQL on the indexed columns (vna.index.matching);
attributes the index does not hold are returned from the precomputed metadata of the
object (any current instance of the study or series at those levels) and are reported as
not supported for matching when given a value. Results are produced lazily, in pages, so
the first answer goes out before the whole answer is built.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from sqlalchemy import Select, exists, select
from sqlalchemy.orm import Session, defer

from vna import dicomjson
from vna.archive import Archive
from vna.errors import BadRequest
from vna.index import matching
from vna.index.attributes import (
    BY_TAG,
    LEVEL_RANK,
    LEVELS,
    TIMEZONE_TAG,
    Attr,
    keyword_of,
)
from vna.index.tables import Instance, Patient, Series, Study

TABLES: dict[str, Any] = {"PATIENT": Patient, "STUDY": Study, "SERIES": Series, "IMAGE": Instance}
PAGE = 200

#: Sequence keys the index can match on: (sequence tag, item tag) -> (level, column).
SEQUENCE_KEYS: dict[tuple[int, int], tuple[str, str]] = {
    (0x00400275, 0x00400009): ("SERIES", "scheduled_procedure_step_id"),
    (0x00400275, 0x00401001): ("SERIES", "requested_procedure_id"),
    (0x0040A043, 0x00080100): ("IMAGE", "concept_name_code_value"),
    (0x0040A043, 0x00080102): ("IMAGE", "concept_name_coding_scheme"),
}

#: Unique keys of each level (PS3.4 C.6).
UNIQUE_KEYS = {
    "PATIENT": 0x00100020,
    "STUDY": 0x0020000D,
    "SERIES": 0x0020000E,
    "IMAGE": 0x00080018,
}


@dataclass
class QueryRequest:
    """What to find. ``keys`` map tags to query values (empty string = return only)."""

    level: str
    keys: dict[int, str] = field(default_factory=dict)
    sequence_keys: dict[tuple[int, int], str] = field(default_factory=dict)
    return_tags: list[int] = field(default_factory=list)
    include_all: bool = False
    fuzzy: bool = False
    limit: int | None = None
    offset: int = 0

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise BadRequest(f"query level must be one of {', '.join(LEVELS)}, not {self.level!r}")
        if self.limit is not None and self.limit < 0:
            raise BadRequest("limit must not be negative")
        if self.offset < 0:
            raise BadRequest("offset must not be negative")


@dataclass
class QueryMatch:
    """One matching entity: its attributes as a Dataset, and its UIDs for the doors."""

    dataset: Dataset
    study_uid: str = ""
    series_uid: str = ""
    sop_instance_uid: str = ""


@dataclass
class QueryPlan:
    """The SQL of a request and what it could not match on."""

    statement: Select[Any]
    unsupported: list[str]
    needs_metadata: list[int]


def _attr_column(attr: Attr) -> Any:
    return getattr(TABLES[attr.level], attr.column)


def _condition(attr: Attr, value: str, fuzzy: bool) -> Any:
    table = TABLES[attr.level]
    column = getattr(table, attr.column)
    fold_column = getattr(table, attr.fold) if attr.fold else None
    if attr.kind == "uid":
        return matching.match_uid(column, value, attr.keyword)
    if attr.kind == "text":
        return matching.match_text(column, value, fold_column, fuzzy)
    if attr.kind == "pn":
        groups = None
        if attr.keyword == "PatientName":
            groups = (
                Patient.patient_name_alpha,
                Patient.patient_name_ideo,
                Patient.patient_name_phon,
            )
        return matching.match_pn(groups, column, fold_column, value, fuzzy)
    if attr.kind == "date":
        return matching.match_date(column, value, attr.keyword)
    if attr.kind == "time":
        return matching.match_time(getattr(table, attr.norm or attr.column), value, attr.keyword)
    if attr.kind == "datetime":
        return matching.match_datetime(column, value, attr.keyword)
    if attr.kind == "int":
        return matching.match_int(column, value, attr.keyword)
    if attr.kind == "modalities":
        if matching.is_universal(value):
            return None
        values = matching.split_values(value.replace(",", "\\"))
        return exists().where(Series.study_fk == Study.pk, Series.modality.in_(values))
    return None  # computed: return only


def _joined(level: str) -> Select[Any]:
    """SELECT the level's row joined with the upper levels it needs."""
    base = TABLES[level]
    rank = LEVEL_RANK[level]
    stmt = select(base, *(TABLES[lvl] for lvl in LEVELS[:rank]))
    if level == "IMAGE":
        # the metadata blob is loaded only for the rows that need it
        stmt = stmt.options(defer(Instance.metadata_json), defer(Instance.bulk_json))
    return join_levels(stmt, level)


def join_levels(stmt: Select[Any], level: str) -> Select[Any]:
    """Join a statement on ``level``'s table with the upper levels, and keep only live
    entities (current instances; series, studies and patients that still hold some)."""
    if level == "IMAGE":
        stmt = stmt.join(Series, Instance.series_fk == Series.pk)
        stmt = stmt.join(Study, Series.study_fk == Study.pk)
        stmt = stmt.join(Patient, Study.patient_fk == Patient.pk)
        stmt = stmt.where(Instance.is_current.is_(True))
    elif level == "SERIES":
        stmt = stmt.join(Study, Series.study_fk == Study.pk)
        stmt = stmt.join(Patient, Study.patient_fk == Patient.pk)
        stmt = stmt.where(Series.number_of_instances > 0)
    elif level == "STUDY":
        stmt = stmt.join(Patient, Study.patient_fk == Patient.pk)
        stmt = stmt.where(Study.number_of_instances > 0)
    else:
        stmt = stmt.where(Patient.number_of_instances > 0)
    return stmt


def _lower_exists(query_level: str, attr_level: str, condition: Any) -> Any:
    """Match a key of a lower level: the entity has at least one child that matches."""
    if query_level == "PATIENT":
        inner = select(Study.pk).where(Study.patient_fk == Patient.pk)
        if attr_level in ("SERIES", "IMAGE"):
            inner = inner.join(Series, Series.study_fk == Study.pk)
        if attr_level == "IMAGE":
            inner = inner.join(Instance, Instance.series_fk == Series.pk).where(
                Instance.is_current.is_(True)
            )
    elif query_level == "STUDY":
        inner = select(Series.pk).where(Series.study_fk == Study.pk)
        if attr_level == "IMAGE":
            inner = inner.join(Instance, Instance.series_fk == Series.pk).where(
                Instance.is_current.is_(True)
            )
    else:  # SERIES
        inner = select(Instance.pk).where(
            Instance.series_fk == Series.pk, Instance.is_current.is_(True)
        )
    return inner.where(condition).exists()


def conditions(request: QueryRequest) -> tuple[list[Any], list[str]]:
    """The WHERE conditions of a request, and the keys the index cannot match on.

    Raises:
        BadRequest: a malformed value (bad date, bad UID, bad number).
    """
    rank = LEVEL_RANK[request.level]
    where: list[Any] = []
    unsupported: list[str] = []
    for tag, value in request.keys.items():
        attr = BY_TAG.get(tag)
        if attr is None:
            if not matching.is_universal(value) and tag not in (TIMEZONE_TAG, 0x00080005):
                unsupported.append(keyword_of(tag))
            continue
        condition = _condition(attr, value, request.fuzzy)
        if condition is None:
            continue
        if LEVEL_RANK[attr.level] > rank:
            condition = _lower_exists(request.level, attr.level, condition)
        where.append(condition)
    for (seq_tag, item_tag), value in request.sequence_keys.items():
        target = SEQUENCE_KEYS.get((seq_tag, item_tag))
        if target is None:
            if not matching.is_universal(value):
                unsupported.append(f"{keyword_of(seq_tag)}.{keyword_of(item_tag)}")
            continue
        attr_level, column_name = target
        column = getattr(TABLES[attr_level], column_name)
        condition = matching.match_text(column, value)
        if condition is None:
            continue
        if LEVEL_RANK[attr_level] > rank:
            condition = _lower_exists(request.level, attr_level, condition)
        where.append(condition)
    return where, unsupported


def plan(request: QueryRequest) -> QueryPlan:
    """Build the SQL for a request.

    Raises:
        BadRequest: a malformed value (bad date, bad UID, bad number).
    """
    level = request.level
    rank = LEVEL_RANK[level]
    stmt = _joined(level)
    where, unsupported = conditions(request)
    if where:
        stmt = stmt.where(*where)
    stmt = stmt.order_by(TABLES[level].pk)
    if request.offset:
        stmt = stmt.offset(request.offset)
    if request.limit is not None:
        stmt = stmt.limit(request.limit)
    wanted = set(request.keys) | set(request.return_tags)
    needs_metadata = sorted(
        t
        for t in wanted
        if (t not in BY_TAG or LEVEL_RANK[BY_TAG[t].level] > rank)
        and t not in (TIMEZONE_TAG, 0x00080005)
        and not _is_lower_level_tag(t, rank)
    )
    return QueryPlan(stmt, unsupported, needs_metadata)


def _is_lower_level_tag(tag: int, rank: int) -> bool:
    attr = BY_TAG.get(tag)
    return attr is not None and LEVEL_RANK[attr.level] > rank


def _value(attr: Attr, raw: Any) -> Any:
    if raw is None or raw == "":
        return None
    if attr.kind in ("modalities",) or attr.keyword == "SOPClassesInStudy":
        return [v for v in str(raw).split("\\") if v]
    if attr.vr in ("IS",):
        return str(raw)
    return raw


def _element(tag: int, value: Any) -> DataElement:
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        vr = "UN"
    if vr == "US or SS":
        vr = "US"
    return DataElement(tag, vr, value)


def _metadata_for(session: Session, level: str, row: Any) -> dict[str, Any]:
    """The precomputed metadata of a representative current instance of the entity."""
    query = select(Instance.metadata_json).where(Instance.is_current.is_(True))
    if level == "IMAGE":
        return dicomjson.unpack(row.metadata_json)
    if level == "SERIES":
        query = query.where(Instance.series_fk == row.pk)
    elif level == "STUDY":
        query = query.join(Series, Instance.series_fk == Series.pk).where(Series.study_fk == row.pk)
    else:
        query = (
            query.join(Series, Instance.series_fk == Series.pk)
            .join(Study, Series.study_fk == Study.pk)
            .where(Study.patient_fk == row.pk)
        )
    blob = session.execute(query.order_by(Instance.pk.desc()).limit(1)).scalar_one_or_none()
    return dicomjson.unpack(blob) if blob else {}


def _from_metadata(meta: dict[str, Any], tag: int) -> DataElement | None:
    item = meta.get(dicomjson.tag_hex(tag))
    if item is None:
        return None
    try:
        ds = dicomjson.json_to_dataset({dicomjson.tag_hex(tag): item})
        return ds[tag]
    except Exception:
        return None


def build_match(
    session: Session, request: QueryRequest, plan_: QueryPlan, rows: tuple[Any, ...]
) -> QueryMatch:
    """One result Dataset for a joined row (the level's entity and its upper levels)."""
    level = request.level
    rank = LEVEL_RANK[level]
    entities = {LEVELS[rank]: rows[0]}
    for i, lvl in enumerate(LEVELS[:rank]):
        entities[lvl] = rows[1 + i]
    ds = Dataset()
    wanted = list(dict.fromkeys([*request.keys, *request.return_tags]))
    meta: dict[str, Any] | None = None
    if request.include_all or plan_.needs_metadata:
        meta = _metadata_for(session, level, rows[0])
    if request.include_all and meta:
        for key in meta:
            tag = int(key, 16)
            if tag >> 16 in (0x7FE0, 0x0002) or (tag not in wanted and _is_bulk(meta[key])):
                continue
            wanted.append(tag)
    for tag in wanted:
        attr = BY_TAG.get(tag)
        if attr is not None and LEVEL_RANK[attr.level] <= rank:
            raw = getattr(entities[attr.level], attr.column)
            ds.add(_element(tag, _value(attr, raw)))
        elif attr is not None:
            continue  # a lower-level key: matched, not returned (PS3.4 C.2.2.1.2)
        elif tag == TIMEZONE_TAG:
            entity = entities[LEVELS[max(rank, 1)]] if rank else entities["PATIENT"]
            value = getattr(entity, "timezone_offset_from_utc", "") or None
            ds.add(_element(tag, value))
        elif tag == 0x00080056:  # InstanceAvailability
            ds.add(_element(tag, "ONLINE"))
        elif meta is not None:
            elem = _from_metadata(meta, tag)
            ds.add(elem if elem is not None else _element(tag, None))
        else:
            ds.add(_element(tag, None))
    return QueryMatch(
        ds,
        study_uid=entities["STUDY"].study_instance_uid if "STUDY" in entities else "",
        series_uid=entities["SERIES"].series_instance_uid if "SERIES" in entities else "",
        sop_instance_uid=entities["IMAGE"].sop_instance_uid if "IMAGE" in entities else "",
    )


def _is_bulk(item: dict[str, Any]) -> bool:
    return "BulkDataURI" in item or "InlineBinary" in item


def run(archive: Archive, request: QueryRequest) -> Iterator[QueryMatch]:
    """Matches, produced page by page from one read session (close the iterator to stop).

    Raises:
        BadRequest: the request is malformed (raised before the first match).
    """
    plan_ = plan(request)
    return _iterate(archive, request, plan_)


def _iterate(archive: Archive, request: QueryRequest, plan_: QueryPlan) -> Iterator[QueryMatch]:
    with archive.db.read() as session:
        result = session.execute(plan_.statement.execution_options(yield_per=PAGE))
        try:
            for rows in result:
                yield build_match(session, request, plan_, tuple(rows))
        finally:
            result.close()


def unsupported_keys(request: QueryRequest) -> list[str]:
    """Keys given a value that the index cannot match on (they are returned, not matched)."""
    return plan(request).unsupported


def find(archive: Archive, request: QueryRequest) -> list[QueryMatch]:
    """All matches as a list (for bounded requests: QIDO pages, CLI)."""
    return list(run(archive, request))

"""Which DICOM attributes the index holds, at which level, and how each is matched.

One table (ATTRIBUTES) drives both sides: ingest fills the columns from a data set, and the
query engine turns keys into SQL by the attribute's matching kind (PS3.4 C.2.2.2):

- ``uid``: single value or UID list matching; no wildcards.
- ``text``: single value, wildcard (``*``, ``?``) or universal matching; optional folded
  column for case-insensitive matching.
- ``pn``: like ``text`` but per component group (Alphabetic, Ideographic, Phonetic).
- ``date`` / ``time`` / ``datetime``: single value or range (``a-b``, ``a-``, ``-b``).
- ``int``: single value on an integer column.
- ``modalities``: ModalitiesInStudy (matches when any series has the modality).
- ``computed``: returned, never matched (counts, SOP classes in study).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Any

from pydicom.datadict import keyword_for_tag, tag_for_keyword

LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")
LEVEL_RANK = {name: i for i, name in enumerate(LEVELS)}


@dataclass(frozen=True)
class Attr:
    """One indexed attribute."""

    keyword: str
    level: str  # PATIENT / STUDY / SERIES / IMAGE
    column: str  # column of the level's table holding the value as returned
    kind: str
    vr: str
    fold: str | None = None  # column with the folded value (case-insensitive matching)
    norm: str | None = None  # column with the normalised value used for matching

    @property
    def tag(self) -> int:
        tag = tag_for_keyword(self.keyword)
        assert tag is not None, self.keyword
        return int(tag)


ATTRIBUTES: tuple[Attr, ...] = (
    # -- patient (PS3.4 C.6.1.1.2, PS3.18 Table 10.6.3-3) -------------------------------------
    Attr("PatientName", "PATIENT", "patient_name", "pn", "PN", fold="patient_name_fold"),
    Attr("PatientID", "PATIENT", "patient_id", "text", "LO"),
    Attr("IssuerOfPatientID", "PATIENT", "issuer_of_patient_id", "text", "LO"),
    Attr("PatientBirthDate", "PATIENT", "patient_birth_date", "date", "DA"),
    Attr("PatientBirthTime", "PATIENT", "patient_birth_time", "text", "TM"),
    Attr("PatientSex", "PATIENT", "patient_sex", "text", "CS"),
    Attr("NumberOfPatientRelatedStudies", "PATIENT", "number_of_studies", "computed", "IS"),
    Attr("NumberOfPatientRelatedSeries", "PATIENT", "number_of_series", "computed", "IS"),
    Attr("NumberOfPatientRelatedInstances", "PATIENT", "number_of_instances", "computed", "IS"),
    # -- study ----------------------------------------------------------------------------------
    Attr("StudyInstanceUID", "STUDY", "study_instance_uid", "uid", "UI"),
    Attr("StudyDate", "STUDY", "study_date", "date", "DA"),
    Attr("StudyTime", "STUDY", "study_time", "time", "TM", norm="study_time_norm"),
    Attr("AccessionNumber", "STUDY", "accession_number", "text", "SH"),
    Attr("StudyID", "STUDY", "study_id", "text", "SH"),
    Attr(
        "StudyDescription",
        "STUDY",
        "study_description",
        "text",
        "LO",
        fold="study_description_fold",
    ),
    Attr(
        "ReferringPhysicianName",
        "STUDY",
        "referring_physician_name",
        "pn",
        "PN",
        fold="referring_physician_name_fold",
    ),
    Attr("ModalitiesInStudy", "STUDY", "modalities_in_study", "modalities", "CS"),
    Attr("SOPClassesInStudy", "STUDY", "sop_classes_in_study", "computed", "UI"),
    Attr("NumberOfStudyRelatedSeries", "STUDY", "number_of_series", "computed", "IS"),
    Attr("NumberOfStudyRelatedInstances", "STUDY", "number_of_instances", "computed", "IS"),
    # -- series ---------------------------------------------------------------------------------
    Attr("SeriesInstanceUID", "SERIES", "series_instance_uid", "uid", "UI"),
    Attr("Modality", "SERIES", "modality", "text", "CS"),
    Attr("SeriesNumber", "SERIES", "series_number", "int", "IS"),
    Attr(
        "SeriesDescription",
        "SERIES",
        "series_description",
        "text",
        "LO",
        fold="series_description_fold",
    ),
    Attr("SeriesDate", "SERIES", "series_date", "date", "DA"),
    Attr("SeriesTime", "SERIES", "series_time", "time", "TM", norm="series_time_norm"),
    Attr("BodyPartExamined", "SERIES", "body_part_examined", "text", "CS"),
    Attr("Laterality", "SERIES", "laterality", "text", "CS"),
    Attr(
        "PerformedProcedureStepStartDate",
        "SERIES",
        "performed_procedure_step_start_date",
        "date",
        "DA",
    ),
    Attr(
        "PerformedProcedureStepStartTime",
        "SERIES",
        "performed_procedure_step_start_time",
        "time",
        "TM",
        norm="performed_procedure_step_start_time_norm",
    ),
    Attr("InstitutionName", "SERIES", "institution_name", "text", "LO"),
    Attr("InstitutionalDepartmentName", "SERIES", "institutional_department_name", "text", "LO"),
    Attr("StationName", "SERIES", "station_name", "text", "SH"),
    Attr("Manufacturer", "SERIES", "manufacturer", "text", "LO"),
    Attr("NumberOfSeriesRelatedInstances", "SERIES", "number_of_instances", "computed", "IS"),
    # -- instance -------------------------------------------------------------------------------
    Attr("SOPInstanceUID", "IMAGE", "sop_instance_uid", "uid", "UI"),
    Attr("SOPClassUID", "IMAGE", "sop_class_uid", "uid", "UI"),
    Attr("InstanceNumber", "IMAGE", "instance_number", "int", "IS"),
    Attr("Rows", "IMAGE", "rows", "int", "US"),
    Attr("Columns", "IMAGE", "columns", "int", "US"),
    Attr("BitsAllocated", "IMAGE", "bits_allocated", "int", "US"),
    Attr("NumberOfFrames", "IMAGE", "number_of_frames", "int", "IS"),
    Attr("ContentDate", "IMAGE", "content_date", "date", "DA"),
    Attr("ContentTime", "IMAGE", "content_time", "time", "TM", norm="content_time_norm"),
    Attr("AcquisitionDateTime", "IMAGE", "acquisition_date_time", "datetime", "DT"),
    Attr("VerificationFlag", "IMAGE", "verification_flag", "text", "CS"),
    Attr("CompletionFlag", "IMAGE", "completion_flag", "text", "CS"),
    Attr("ContentLabel", "IMAGE", "content_label", "text", "CS"),
    Attr("DocumentTitle", "IMAGE", "document_title", "text", "ST"),
    Attr("AvailableTransferSyntaxUID", "IMAGE", "transfer_syntax_uid", "uid", "UI"),
)

BY_KEYWORD: dict[str, Attr] = {a.keyword: a for a in ATTRIBUTES}
BY_TAG: dict[int, Attr] = {a.tag: a for a in ATTRIBUTES}
#: TimezoneOffsetFromUTC is kept at every level (PS3.18 requires it in study/series/instance).
TIMEZONE_TAG = 0x00080201
#: Attributes the IMAGE level answers from the instance row but stores under another name.
INSTANCE_AVAILABILITY_TAG = 0x00080056


def fold(text: str) -> str:
    """Case- and accent-insensitive form used for fuzzy matching (PS3.4 C.2.2.2.4 option)."""
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return stripped.casefold()


def pn_groups(value: str) -> tuple[str, str, str]:
    """Alphabetic, Ideographic and Phonetic component groups of a PN value."""
    parts = [p.rstrip("^ ").strip() for p in (value.split("=") + ["", "", ""])[:3]]
    return parts[0], parts[1], parts[2]


def pn_fold(value: str) -> str:
    """Folded PN with normalised groups, ``=`` joined (trailing empty groups dropped)."""
    return fold("=".join(pn_groups(value)).rstrip("="))


def norm_date(value: str) -> str:
    """DA as YYYYMMDD (the old ACR-NEMA form YYYY.MM.DD is accepted)."""
    text = value.strip().replace(".", "").replace("-", "")
    return text[:8]


def norm_time(value: str, upper: bool = False) -> str:
    """TM as HHMMSS.FFFFFF so that text comparison is time comparison.

    Missing trailing components are filled with zeros, or with their maximum for the upper end
    of a range (``10`` as an upper bound means up to 10:59:59.999999).
    """
    text = value.strip().replace(":", "")
    main, _, frac = text.partition(".")
    main = main[:6]
    if upper:
        return f"{main + '235959'[len(main) :]}.{frac.ljust(6, '9')[:6]}"
    if not text:
        return ""
    return f"{main.ljust(6, '0')}.{frac.ljust(6, '0')[:6]}"


def norm_datetime(value: str, upper: bool = False) -> str:
    """DT as YYYYMMDDHHMMSS.FFFFFF (any UTC offset suffix ignored) for range comparison."""
    text = value.strip()
    for sign in ("+", "-"):
        if sign in text[4:]:
            text = text[: 4 + text[4:].index(sign)]
    date, time = text[:8], text[8:]
    if not date:
        return ""
    date = date + ("12319999" if upper else "01010000")[len(date) - 4 :][: 8 - len(date)]
    if upper:
        return date + norm_time(time, upper=True)
    return date + (norm_time(time) if time else "000000.000000")


Metadata = dict[str, Any]


def _item(meta: Metadata, tag: int) -> dict[str, Any] | None:
    return meta.get(f"{tag:08X}")


def _values(meta: Metadata, tag: int) -> list[Any]:
    item = _item(meta, tag)
    return list(item.get("Value", [])) if item else []


def _pn_text(value: Any) -> str:
    """A DICOM JSON PN value back to its ``Alphabetic=Ideographic=Phonetic`` form."""
    if not isinstance(value, dict):
        return ""
    groups = [value.get("Alphabetic", ""), value.get("Ideographic", ""), value.get("Phonetic", "")]
    return "=".join(groups).rstrip("=")


def meta_text(meta: Metadata, tag: int, limit: int = 1024) -> str:
    """An attribute's value(s) as DICOM text: multiple values joined by ``\\``."""
    item = _item(meta, tag)
    if not item:
        return ""
    values = item.get("Value", [])
    if item.get("vr") == "PN":
        parts = [_pn_text(v) for v in values]
    else:
        parts = ["" if v is None else str(v) for v in values]
    return "\\".join(parts).strip()[:limit]


def meta_int(meta: Metadata, tag: int) -> int | None:
    """First value of a numeric attribute as an int, or None."""
    values = _values(meta, tag)
    if not values or values[0] is None:
        return None
    try:
        return int(float(values[0]))
    except (TypeError, ValueError, OverflowError):
        return None


def _first_item_text(meta: Metadata, seq_tag: int, tag: int) -> str:
    items = _values(meta, seq_tag)
    if not items or not isinstance(items[0], dict):
        return ""
    return meta_text(items[0], tag)


def level_values(meta: Metadata, level: str) -> dict[str, Any]:
    """Column values of one level's row, taken from an object's DICOM JSON metadata (the
    decoded form, so that no attribute is decoded twice)."""
    out: dict[str, Any] = {}
    for attr in ATTRIBUTES:
        if attr.level != level or attr.kind in ("computed", "modalities"):
            continue
        if attr.keyword == "AvailableTransferSyntaxUID":
            continue
        if attr.kind == "int":
            out[attr.column] = meta_int(meta, attr.tag)
            continue
        value = meta_text(meta, attr.tag)
        if attr.kind == "date":
            value = norm_date(value)
        out[attr.column] = value
        if attr.kind == "pn" and attr.keyword == "PatientName":
            alpha, ideo, phon = pn_groups(value)
            out["patient_name_alpha"] = alpha
            out["patient_name_ideo"] = ideo
            out["patient_name_phon"] = phon
        if attr.fold:
            out[attr.fold] = pn_fold(value) if attr.kind == "pn" else fold(value)
        if attr.norm:
            out[attr.norm] = norm_time(value)
    if level in ("STUDY", "SERIES", "IMAGE"):
        out["timezone_offset_from_utc"] = meta_text(meta, TIMEZONE_TAG)
    if level == "SERIES":
        out["scheduled_procedure_step_id"] = _first_item_text(meta, 0x00400275, 0x00400009)
        out["requested_procedure_id"] = _first_item_text(meta, 0x00400275, 0x00401001)
    if level == "IMAGE":
        out["concept_name_code_value"] = _first_item_text(meta, 0x0040A043, 0x00080100)
        out["concept_name_coding_scheme"] = _first_item_text(meta, 0x0040A043, 0x00080102)
    return out


def dataset_patient_key(ds: Any) -> str:
    """patient_key of a pydicom Dataset (for code that holds one instead of metadata)."""

    def text(keyword: str) -> str:
        return str(ds.get(keyword, "") or "").strip()

    if text("PatientID"):
        return f"id:{text('IssuerOfPatientID')}\x1f{text('PatientID')}"
    return f"name:{text('PatientName')}\x1f{text('PatientBirthDate')}"


def patient_key(meta: Metadata) -> str:
    """The identity of a patient in this archive: ID + issuer, or name + birth date."""
    pid = meta_text(meta, 0x00100020)
    issuer = meta_text(meta, 0x00100021)
    if pid:
        return f"id:{issuer}\x1f{pid}"
    return f"name:{meta_text(meta, 0x00100010)}\x1f{meta_text(meta, 0x00100030)}"


def keyword_of(tag: int) -> str:
    """Keyword of a tag, or its hex form for private/unknown tags."""
    return keyword_for_tag(tag) or f"{tag:08X}"

"""Who and what a converted file belongs to: patient, study and source, given by the user.

The context never comes from the file's own metadata (a camera's owner, a phone's account, a
scanner's user are not the patient). It comes from CLI flags, a JSON/CSV manifest with one row
per file, or the DICOM JSON part of a STOW-RS request. One *case* (a patient's study) maps to
one Study Instance UID derived deterministically from the case, so importing the same case
again lands in the same study.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from vna.errors import ConversionError, MissingContext

#: Body Part Examined defined terms (PS3.16 Annex L) with their SNOMED CT anatomic region
#: codes (CID 4031), for the Anatomic Region Sequence (PS3.3 C.8.12.1 / 10.5).
BODY_PARTS: dict[str, tuple[str, str]] = {
    "ABDOMEN": ("113345001", "Abdomen"),
    "ANKLE": ("70258002", "Ankle joint"),
    "BACK": ("77568009", "Back"),
    "BREAST": ("76752008", "Breast"),
    "CHEST": ("43799004", "Chest"),
    "COLON": ("71854001", "Colon"),
    "ESOPHAGUS": ("32849002", "Esophagus"),
    "EYE": ("81745001", "Eye"),
    "FACE": ("89545001", "Face"),
    "FOOT": ("56459004", "Foot"),
    "HAND": ("85562004", "Hand"),
    "HEAD": ("69536005", "Head"),
    "HEART": ("80891009", "Heart"),
    "HIP": ("29836001", "Hip"),
    "KNEE": ("72696002", "Knee"),
    "LUNG": ("39607008", "Lung"),
    "NECK": ("45048000", "Neck"),
    "SHOULDER": ("16982005", "Shoulder"),
    "SKIN": ("39937001", "Skin"),
    "STOMACH": ("69695003", "Stomach"),
    "THIGH": ("68367000", "Thigh"),
    "WRIST": ("74670003", "Wrist joint"),
}
#: Other SNOMED CT codes of the same regions (PS3.16 has changed some over the years).
OTHER_CODES = {"818981001": "ABDOMEN", "51185008": "CHEST"}
#: Device types the user may name; they choose the modality and, for video, the SOP class.
DEVICE_TYPES = (
    "camera",
    "phone",
    "dermatoscope",
    "endoscope",
    "microscope",
    "recorder",
    "scanner",
    "ultrasound",
)
#: Paired structures: General Series Laterality is required for them (C.7.3.1, Type 2C).
#: Skin has no side of its own but is checked like a paired structure (a lesion has one).
PAIRED = frozenset(
    {"ANKLE", "BREAST", "EYE", "FOOT", "HAND", "HIP", "KNEE", "SHOULDER", "SKIN", "THIGH", "WRIST"}
)
#: Regions with a code but no Body Part Examined defined term: sent as the code only.
CODE_ONLY = frozenset({"SKIN"})
LATERALITIES = {"R": "R", "RIGHT": "R", "L": "L", "LEFT": "L"}
SEXES = {"M": "M", "MALE": "M", "F": "F", "FEMALE": "F", "O": "O", "OTHER": "O"}
#: Manifest/metadata column names accepted besides the field names (DICOM keywords).
ALIASES = {
    "patientid": "patient_id",
    "issuerofpatientid": "issuer",
    "patientname": "patient_name",
    "patientbirthdate": "birth_date",
    "patientsex": "sex",
    "accessionnumber": "accession",
    "studydescription": "study_description",
    "studydate": "study_date",
    "studytime": "study_time",
    "studyinstanceuid": "study_uid",
    "referringphysicianname": "referring_physician",
    "bodypartexamined": "body_part",
    "laterality": "laterality",
    "institutionaldepartmentname": "department",
    "operatorsname": "operator",
    "seriesdescription": "series_description",
    "documenttitle": "document_title",
    "path": "file",
    "filename": "file",
}


@dataclass(frozen=True)
class Context:
    """Patient, study and source of one file (PS3.3 C.7.1.1, C.7.2.1, C.7.5.1).

    Empty strings mean "not given"; :meth:`checked` normalises and validates.
    """

    patient_id: str = ""
    issuer: str = ""
    patient_name: str = ""
    birth_date: str = ""
    sex: str = ""
    accession: str = ""
    study_description: str = ""
    study_date: str = ""
    study_time: str = ""
    study_uid: str = ""
    referring_physician: str = ""
    body_part: str = ""
    laterality: str = ""
    department: str = ""
    operator: str = ""
    device_type: str = ""
    series_description: str = ""
    document_title: str = ""
    case: str = ""

    def merged(self, override: Mapping[str, Any]) -> Context:
        """This context with the non-empty values of ``override`` (a manifest row) on top."""
        known = {f.name for f in fields(Context)}
        changes = {}
        for key, value in override.items():
            name = field_name(key)
            if name in known and value not in (None, ""):
                changes[name] = str(value).strip()
        return replace(self, **changes)

    def checked(self, now: dt.datetime | None = None) -> Context:
        """The context normalised to DICOM forms, ready for conversion.

        A study date and time not given are those of ``now`` (the start of the batch): a
        DICOMDIR needs both (PS3.3 F.5.2), and without an accession number one day's files of
        a patient form one case.

        Raises:
            MissingContext: no patient ID.
            ConversionError: a value that is not what it claims (a date, a sex, a body part).
        """
        if not self.patient_id.strip():
            raise MissingContext(
                "no patient context: give --patient-id (and the rest of the patient's "
                "identity) or a manifest row for this file"
            )
        moment = now or dt.datetime.now()
        study_date = _date(self.study_date, "study date") or moment.strftime("%Y%m%d")
        study_time = _time(self.study_time) or moment.strftime("%H%M%S")
        device = self.device_type.strip().lower()
        if device and device not in DEVICE_TYPES:
            raise ConversionError(
                f"unknown device type {self.device_type!r}; one of {', '.join(DEVICE_TYPES)}"
            )
        if self.body_part:
            body_part_code(self.body_part)  # validates
        laterality = self.laterality.strip().upper()
        if laterality and laterality not in LATERALITIES:
            raise ConversionError(f"laterality must be R or L, not {self.laterality!r}")
        sex = self.sex.strip().upper()
        if sex and sex not in SEXES:
            raise ConversionError(f"sex must be M, F or O, not {self.sex!r}")
        return replace(
            self,
            patient_id=_limit(self.patient_id.strip(), 64, "patient ID"),
            issuer=_limit(self.issuer.strip(), 64, "issuer"),
            patient_name=_limit(self.patient_name.strip(), 324, "patient name"),
            birth_date=_date(self.birth_date, "birth date"),
            sex=SEXES.get(sex, ""),
            accession=_limit(self.accession.strip(), 16, "accession number"),
            study_description=_limit(self.study_description.strip(), 64, "study description"),
            study_date=study_date,
            study_time=study_time,
            study_uid=_uid(self.study_uid),
            laterality=LATERALITIES.get(laterality, ""),
            referring_physician=_limit(self.referring_physician.strip(), 324, "physician"),
            department=_limit(self.department.strip(), 64, "department"),
            operator=_limit(self.operator.strip(), 324, "operator"),
            device_type=device,
            series_description=_limit(self.series_description.strip(), 64, "series"),
            document_title=_limit(self.document_title.strip(), 64, "document title"),
        )

    def case_key(self) -> tuple[str, ...]:
        """What makes two files the same case (so the same study)."""
        if self.study_uid:
            return ("uid", self.study_uid)
        if self.case:
            return ("case", self.issuer, self.patient_id, self.case)
        if self.accession:
            return ("accession", self.issuer, self.patient_id, self.accession)
        return ("date", self.issuer, self.patient_id, self.study_date, self.study_description)


def field_name(key: str) -> str:
    """A manifest column or DICOM keyword as a field name (``PatientID`` → ``patient_id``)."""
    text = key.strip()
    compact = re.sub(r"[^a-z]", "", text.lower())
    if compact in ALIASES:
        return ALIASES[compact]
    return text.lower().replace("-", "_").replace(" ", "_")


def body_part_code(text: str) -> tuple[str, str, str, str]:
    """(defined term, code value, scheme, meaning) of a body part given by the user.

    A defined term from :data:`BODY_PARTS` (``hand``) or an explicit code
    ``SCHEME:CODE:MEANING`` (``SCT:7569003:Finger``).

    Raises:
        ConversionError: neither.
    """
    value = text.strip()
    if value.count(":") >= 2:
        scheme, code, meaning = (part.strip() for part in value.split(":", 2))
        if not (scheme and code and meaning):
            raise ConversionError(f"body part code {text!r} must be SCHEME:CODE:MEANING")
        known = [k for k, (c, _m) in BODY_PARTS.items() if c == code]
        term = (known[0] if known else OTHER_CODES.get(code, "")) if scheme == "SCT" else ""
        return term, code, scheme, meaning
    key = value.upper().replace(" ", "")
    if key not in BODY_PARTS:
        raise ConversionError(
            f"unknown body part {text!r}: use one of {', '.join(sorted(BODY_PARTS))} "
            "or a code SCHEME:CODE:MEANING (e.g. SCT:7569003:Finger)"
        )
    code, meaning = BODY_PARTS[key]
    return key, code, "SCT", meaning


def _limit(value: str, length: int, what: str) -> str:
    if len(value) > length:
        raise ConversionError(f"{what} {value!r} is longer than {length} characters")
    return value


def _date(value: str, what: str) -> str:
    text = value.strip().replace("-", "")
    if not text:
        return ""
    try:
        dt.datetime.strptime(text, "%Y%m%d")
    except ValueError:
        raise ConversionError(f"{what} {value!r} is not a date (YYYYMMDD or YYYY-MM-DD)") from None
    return text


def _time(value: str) -> str:
    text = value.strip().replace(":", "")
    if text and not re.fullmatch(r"\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?", text):
        raise ConversionError(f"study time {value!r} is not a time (HHMMSS or HH:MM:SS)")
    return text


def _uid(value: str) -> str:
    text = value.strip()
    if text and (len(text) > 64 or not re.fullmatch(r"(0|[1-9]\d*)(\.(0|[1-9]\d*))+", text)):
        raise ConversionError(f"study UID {value!r} is not a valid UID")
    return text


@dataclass
class Manifest:
    """Rows of a manifest: the context of each listed file (paths resolved)."""

    rows: dict[Path, dict[str, str]] = field(default_factory=dict)

    @property
    def files(self) -> list[Path]:
        return list(self.rows)

    def row_for(self, path: Path) -> dict[str, str] | None:
        """The row of a file: by resolved path, else by file name when that is unique."""
        found = self.rows.get(path.resolve())
        if found is not None:
            return found
        named = [row for p, row in self.rows.items() if p.name == path.name]
        return named[0] if len(named) == 1 else None


def load_manifest(path: Path) -> Manifest:
    """Read a JSON or CSV manifest; file paths are relative to the manifest's folder.

    JSON: a list of rows, or ``{"defaults": {...}, "files": [rows]}``; CSV: a header line.
    Each row names its file in ``file`` and gives context fields (``patient_id``,
    ``accession``…) or DICOM keywords (``PatientID``…).

    Raises:
        ConversionError: unreadable, malformed, or a row without a file.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConversionError(f"cannot read manifest {path}: {exc}") from exc
    rows: list[dict[str, Any]]
    defaults: dict[str, Any] = {}
    if text.lstrip().startswith(("[", "{")):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConversionError(f"manifest {path} is not valid JSON: {exc}") from exc
        if isinstance(data, dict):
            defaults = dict(data.get("defaults") or {})
            data = data.get("files", [])
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise ConversionError(f"manifest {path}: expected a list of objects")
        rows = data
    else:
        rows = list(csv.DictReader(text.splitlines()))
    manifest = Manifest()
    for number, raw in enumerate(rows, start=1):
        row = {field_name(k): str(v) for k, v in {**defaults, **raw}.items() if v is not None}
        name = row.pop("file", "").strip()
        if not name:
            raise ConversionError(f"manifest {path}, row {number}: no file")
        file = Path(name).expanduser()
        if not file.is_absolute():
            file = path.parent / file
        manifest.rows[file.resolve()] = row
    return manifest


def context_fields() -> Iterable[str]:
    """Names of the context fields (manifest columns)."""
    return [f.name for f in fields(Context)]

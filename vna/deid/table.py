"""PS3.15 Annex E Table E.1-1 as data, and the deid recipes generated from it.

``deid_profiles/table_e1_1.csv`` is the source: one row per attribute of Table E.1-1 with its
Basic Profile action code and the code of each option column (PS3.15 E.3). The recipe files
``basic.recipe`` and ``option-*.recipe`` are generated from it (``python -m vna.deid.table``)
and a test checks that the committed files equal the generated text, so they never drift.

Action codes (PS3.15 E.1.1): D dummy value, Z zero length, X remove, K keep, C clean,
U replace UID consistently. Combinations (X/Z, X/D, Z/D, X/Z/D, X/Z/U*) are resolved by the
attribute's Type in the IOD (PS3.15 E.3.1 note): Type 1 needs a value (D, or U* = keep the
sequence with its UIDs replaced), Type 2 may be empty (Z), Type 3 may go (X). The ``type``
column holds the Type in the usual composite IODs; the engine refines it per object.
"""

from __future__ import annotations

import csv
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from pydicom.datadict import dictionary_VR

PROFILES_DIR = Path(__file__).resolve().parents[2] / "deid_profiles"
TABLE_FILE = "table_e1_1.csv"
SAFE_PRIVATE_FILE = "safe_private.csv"


@dataclass(frozen=True)
class Option:
    """One option of PS3.15 E.3, its table column and its CID 7050 code."""

    name: str
    column: str
    code: str
    meaning: str


#: PS3.15 E.3 options; codes and meanings from PS3.16 CID 7050.
OPTIONS: dict[str, Option] = {
    o.name: o
    for o in (
        Option(
            "retain-safe-private", "retain_safe_private", "113111", "Retain Safe Private Option"
        ),
        Option("retain-uids", "retain_uids", "113110", "Retain UIDs Option"),
        Option(
            "retain-device-identity",
            "retain_device_identity",
            "113109",
            "Retain Device Identity Option",
        ),
        Option(
            "retain-institution-identity",
            "retain_institution_identity",
            "113112",
            "Retain Institution Identity Option",
        ),
        Option(
            "retain-patient-characteristics",
            "retain_patient_characteristics",
            "113108",
            "Retain Patient Characteristics Option",
        ),
        Option(
            "retain-long-full-dates",
            "retain_long_full_dates",
            "113106",
            "Retain Longitudinal Temporal Information Full Dates Option",
        ),
        Option(
            "retain-long-modified-dates",
            "retain_long_modified_dates",
            "113107",
            "Retain Longitudinal Temporal Information Modified Dates Option",
        ),
        Option("clean-descriptors", "clean_descriptors", "113105", "Clean Descriptors Option"),
        Option(
            "clean-structured-content",
            "clean_structured_content",
            "113104",
            "Clean Structured Content Option",
        ),
        Option("clean-graphics", "clean_graphics", "113103", "Clean Graphics Option"),
    )
}
BASIC_CODE = ("113100", "Basic Application Confidentiality Profile")
CLEAN_PIXEL_CODE = ("113101", "Clean Pixel Data Option")


@dataclass(frozen=True)
class Row:
    """One attribute of Table E.1-1."""

    tag: str  # GGGGEEEE, with X for repeating groups (60XX3000)
    keyword: str
    name: str
    basic: str
    type: str
    options: dict[str, str]  # column -> action code
    in_std_iod: bool

    @property
    def tag_int(self) -> int | None:
        """The tag as a number, None for a repeating-group row."""
        return None if "X" in self.tag else int(self.tag, 16)

    @property
    def display_tag(self) -> str:
        return f"({self.tag[:4]},{self.tag[4:]})"

    @property
    def vr(self) -> str:
        tag = self.tag_int
        if tag is None:
            return ""
        try:
            return str(dictionary_VR(tag))
        except KeyError:
            return ""


@cache
def load_table(directory: Path = PROFILES_DIR) -> tuple[Row, ...]:
    """The rows of Table E.1-1 from the CSV source."""
    columns = [o.column for o in OPTIONS.values()]
    rows = []
    with (directory / TABLE_FILE).open(encoding="utf-8", newline="") as fp:
        for raw in csv.DictReader(fp):
            rows.append(
                Row(
                    tag=raw["tag"],
                    keyword=raw["keyword"],
                    name=raw["name"],
                    basic=raw["basic"],
                    type=raw["type"],
                    options={c: raw[c] for c in columns if raw[c]},
                    in_std_iod=raw["in_std_iod"] == "Y",
                )
            )
    return tuple(rows)


def resolve(code: str, iod_type: str) -> str:
    """One action for a combined code, given the attribute's Type (PS3.15 E.3.1).

    Type 1 keeps a value (D, or U* for a reference sequence), Type 2 keeps the attribute
    empty (Z), Type 3 removes it (X). Without a known Type the conservative choice that
    keeps the object valid is taken.
    """
    if "/" not in code:
        return code
    choices = code.split("/")
    wanted = {"1": ("D", "U*", "Z"), "2": ("Z", "D"), "3": ("X",)}.get(iod_type, ("Z", "D"))
    for action in wanted:
        if action in choices:
            return action
    return choices[0]


@dataclass(frozen=True)
class SafePrivate:
    """A private attribute known to carry no identity (PS3.15 E.3.10, Table E.3.10-1)."""

    group: int
    creator: str
    element: int  # the low byte: xxEE
    name: str

    @property
    def recipe_field(self) -> str:
        return f'({self.group:04X},"{self.creator}",{self.element:02X})'


@cache
def load_safe_private(directory: Path = PROFILES_DIR) -> tuple[SafePrivate, ...]:
    """The safe private attributes kept by the Retain Safe Private Option."""
    with (directory / SAFE_PRIVATE_FILE).open(encoding="utf-8", newline="") as fp:
        return tuple(
            SafePrivate(int(r["group"], 16), r["creator"], int(r["element"], 16), r["name"])
            for r in csv.DictReader(fp)
        )


# -- recipe generation ------------------------------------------------------------------------

_REASONS = (
    (("GPS",), "where the picture was taken"),
    (("Address", "Telephone", "Telecom", "Residence", "Location"), "contact or location details"),
    (("UID",), "a UID can be traced back to the originating system and its records"),
    (("Date", "Time", "Timestamp"), "dates and times identify when combined with other facts"),
    (
        (
            "Name",
            "Author",
            "Recorder",
            "Transcriber",
            "Physician",
            "Observer",
            "Performer",
            "Owner",
            "Person",
            "Operator",
            "Reviewer",
            "Interpreter",
            "Approver",
            "Participant",
        ),
        "names a person or an organisation",
    ),
    (
        (
            "Description",
            "Comments",
            "Text",
            "Notes",
            "Label",
            "History",
            "Reason",
            "Impressions",
            "Narrative",
            "Diagnos",
            "Alerts",
            "Allergies",
            "Occupation",
            "Keywords",
            "Subject",
            "Title",
            "Protocol",
            "Agent",
            "Note",
            "Site",
            "State",
            "Needs",
            "Medication",
        ),
        "free text may contain identifying details",
    ),
    (
        (
            "ID",
            "Identifier",
            "Number",
            "Barcode",
            "Locator",
            "Issuer",
            "Serial",
            "MAC",
            "Signature",
        ),
        "an identifier that can be traced back to a patient, order or device",
    ),
    (("Sequence",), "its items carry identities of persons, orders or devices"),
)

_ACTION_TEXT = {
    "X": "removed",
    "Z": "emptied",
    "D": "replaced by a dummy value",
    "U": "replaced by a consistent new UID",
    "U*": "kept, the UIDs inside replaced consistently",
    "K": "kept",
    "C": "cleaned (identifying words, dates and names replaced)",
}


def reason(row: Row) -> str:
    """Why an attribute is in the table, in a few words (for the recipe comments)."""
    for words, text in _REASONS:
        if any(w in row.name for w in words):
            return text
    if row.tag.startswith(("50", "60")):
        return "curves and overlays may carry burned-in text"
    return "may identify the patient, a person or the institution"


def deid_line(row: Row, action: str) -> str:
    """The deid recipe line performing ``action`` on a row (U* has no line of its own)."""
    field = row.keyword or row.display_tag
    return {
        "X": f"REMOVE {field}",
        "Z": f"BLANK {field}",
        "D": f"REPLACE {field} func:vna_dummy",
        "U": f"REPLACE {field} func:vna_uid",
        "K": f"KEEP {field}",
        "C": f"REPLACE {field} func:vna_clean",
        "U*": f"# {field}: no action of its own (nested UIDs have their own rows)",
    }[action]


def _comment(row: Row, code: str, action: str) -> str:
    type_note = f", Type {row.type} in the usual IODs" if row.type else ""
    return (
        f"# {row.display_tag} {row.name}: {code}{type_note} -> {_ACTION_TEXT[action]}; "
        f"{reason(row)}"
    )


def _recipe_body(header: list[str], entries: list[tuple[Row, str]]) -> str:
    lines = ["FORMAT dicom", "", *header, "", "%header", ""]
    for row, code in entries:
        action = resolve(code, row.type)
        lines.append(_comment(row, code, action))
        if row.tag_int is None:
            lines.append(f"# {row.display_tag}: repeating group, handled by the engine ({action})")
        else:
            lines.append(deid_line(row, action))
    return "\n".join(lines) + "\n"


_GENERATED = "# Generated from table_e1_1.csv by `python -m vna.deid.table`; do not edit by hand."


def basic_recipe() -> str:
    """The Basic Application Level Confidentiality Profile (PS3.15 E.2) as a deid recipe."""
    header = [
        "# PS3.15 Annex E Basic Application Level Confidentiality Profile: every attribute of",
        "# Table E.1-1 with its Basic Profile action. Combined codes are resolved by the",
        "# attribute's Type in the usual IODs; the engine switches to D or Z where the object's",
        "# IOD requires a value (e.g. Content Date in enhanced multi-frame and SR objects).",
        "# Private attributes (odd groups) are removed by the engine (PS3.15 E.3.10 keeps a safe",
        "# list only with the Retain Safe Private Option), so are curves (50xx) and overlay",
        "# data/comments (60xx). PatientIdentityRemoved, DeidentificationMethod and",
        "# DeidentificationMethodCodeSequence (CID 7050: 113100) are set on every object.",
        _GENERATED,
    ]
    return _recipe_body(header, [(row, row.basic) for row in load_table()])


def option_recipe(name: str) -> str:
    """One option of PS3.15 E.3 as a deid recipe layered over the basic one."""
    option = OPTIONS[name]
    header = [
        f"# PS3.15 E.3 {option.meaning} (CID 7050 code {option.code}): the rows of",
        "# Table E.1-1 whose action this option changes; layered over basic.recipe, a later",
        "# layer wins for the same attribute.",
        _GENERATED,
    ]
    entries = [
        (row, row.options[option.column]) for row in load_table() if option.column in row.options
    ]
    if name == "retain-safe-private":
        body = _recipe_body(header, entries)
        keeps = [
            f"# {s.name}: known to carry no identity (PS3.15 Table E.3.10-1)\nKEEP {s.recipe_field}"
            for s in load_safe_private()
        ]
        return body + "\n" + "\n".join(keeps) + "\n"
    return _recipe_body(header, entries)


def generated_recipes() -> dict[str, str]:
    """File name -> text of every generated recipe."""
    out = {"basic.recipe": basic_recipe()}
    for name in OPTIONS:
        out[f"option-{name}.recipe"] = option_recipe(name)
    return out


def write_recipes(directory: Path = PROFILES_DIR) -> list[Path]:
    """(Re)write the generated recipes; returns the files written."""
    written = []
    for file_name, text in generated_recipes().items():
        path = directory / file_name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":  # pragma: no cover - a maintenance command
    for written_path in write_recipes():
        print(written_path, file=sys.stderr)

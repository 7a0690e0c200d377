"""The leak checker: does any identifying value of a source survive in its de-identified copy?

Identifying values of a source (PS3.15 E.1: what Table E.1-1 protects, plus what no table can
list): person names (each component), patient and order identifiers, dates (also written as
2024-01-02, 02.01.2024, 01/02/2024), instance UIDs (not the standard's own class UIDs), the
words of free text and addresses that cleaning would remove, and the values of private
attributes not on the safe list. Each is searched in every value of the de-identified object,
nested sequences included, and as bytes (ASCII, UTF-8, Latin-1) in its pixel data, so text
inside JPEG comment segments or other fragments is found too.

Words that the source also carries in attributes the standard keeps (code meanings, for
example) are not counted: they are not evidence of an identity left behind.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from vna.deid import clean
from vna.deid.engine import CLASS_UID_KEYWORDS, is_well_known_uid
from vna.deid.table import load_safe_private, load_table

TEXT_VRS = frozenset({"LO", "SH", "ST", "LT", "UT", "UC", "AE", "UR", "PN"})
PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)
MIN_WORD = 3
MIN_BYTES = 5
_BOUNDARY = r"(?<![0-9A-Za-z.]){}(?![0-9A-Za-z])"


@dataclass(frozen=True)
class Identifier:
    """One identifying value of a source."""

    kind: str  # name, id, date, uid, text, private
    value: str
    where: str  # attribute path in the source
    source: str = ""


@dataclass(frozen=True)
class Leak:
    """An identifying value found in a de-identified object."""

    identifier: Identifier
    found_in: str  # attribute path, or "PixelData bytes"
    output: str = ""

    def describe(self) -> str:
        ident = self.identifier
        return (
            f"{ident.kind} {ident.value!r} from {ident.where} of {ident.source or 'the source'} "
            f"found in {self.found_in} of {self.output or 'the output'}"
        )


def _values(element: DataElement) -> list[str]:
    value = element.value
    if value is None or isinstance(value, bytes | bytearray):
        return []
    items = list(value) if isinstance(value, list | MultiValue) else [value]
    return [str(v).strip() for v in items if str(v).strip()]


def walk(ds: Dataset, path: str = "") -> Iterator[tuple[str, DataElement]]:
    """Every element with its path (sequences unrolled)."""
    for element in ds:
        name = element.keyword or f"({element.tag.group:04X},{element.tag.element:04X})"
        here = f"{path}{name}"
        yield here, element
        if element.VR == "SQ":
            for index, item in enumerate(element.value or []):
                yield from walk(item, f"{here}[{index}].")


def _table_tags() -> dict[int, str]:
    """Tags of Table E.1-1 that carry identity -> basic code. Patient characteristics (age,
    sex, size, weight, ethnic group...) describe, they do not identify: not counted."""
    return {
        r.tag_int: r.basic
        for r in load_table()
        if r.tag_int is not None and r.options.get("retain_patient_characteristics") != "K"
    }


def identifiers(src: Dataset, source: str = "") -> list[Identifier]:
    """The identifying values of a source data set."""
    rows = _table_tags()
    safe = {(s.group, s.creator.upper(), s.element) for s in load_safe_private()}
    found: list[Identifier] = []
    retained: set[str] = set()  # values and words of attributes the standard keeps
    creators: dict[tuple[int, int], str] = {}
    for _path, element in walk(src):
        tag = element.tag
        if tag.is_private_creator:
            creators[(tag.group, tag.element)] = str(element.value).upper()
    for path, element in walk(src):
        tag, vr, keyword = element.tag, element.VR, element.keyword
        values = _values(element) if vr != "SQ" else []
        if tag.is_private:
            creator = creators.get((tag.group, tag.element >> 8), "")
            if tag.is_private_creator or (tag.group, creator, tag.element & 0xFF) in safe:
                continue
            found += [
                Identifier("private", v, path, source)
                for v in values
                if len(v) >= 4 and any(c.isalpha() for c in v)
            ]
            continue
        listed = int(tag) in rows and rows[int(tag)] != "K"
        if vr == "PN":
            for v in values:
                for part in re.split(r"[\^=]", v):
                    part = part.strip()
                    if len(part) >= MIN_WORD and any(c.isalpha() for c in part):
                        found.append(Identifier("name", part, path, source))
        elif vr == "UI":
            if keyword not in CLASS_UID_KEYWORDS:
                found += [
                    Identifier("uid", v, path, source) for v in values if not is_well_known_uid(v)
                ]
        elif vr in ("DA", "DT"):
            found += [Identifier("date", v[:8], path, source) for v in values if len(v) >= 8]
        elif vr in TEXT_VRS and (listed or keyword in clean.IDENTIFYING_KEYWORDS):
            if keyword in clean.IDENTIFYING_KEYWORDS or _is_identifier(keyword):
                found += [Identifier("id", v, path, source) for v in values if len(v) >= 3]
            else:
                for v in values:
                    found += [
                        Identifier("text", w, path, source)
                        for w in clean.unsafe_words(v)
                        if len(w) >= MIN_WORD
                    ]
        elif not listed and vr not in ("SQ", "UI", "DA", "DT"):
            for v in values:
                retained.add(v.lower())
                for word in clean.unsafe_words(v):
                    retained.add(word.lower())
                    retained.update(p.lower() for p in re.split(r"[-.']", word))
    unique = {(i.kind, i.value.lower()): i for i in found}
    return [
        i for i in unique.values() if i.kind in ("uid", "date") or i.value.lower() not in retained
    ]


def _is_identifier(keyword: str) -> bool:
    return keyword.endswith(("ID", "Identifier", "Number", "Numbers", "Value")) or "ID" in keyword


def _date_forms(value: str) -> list[str]:
    try:
        day = dt.datetime.strptime(value, "%Y%m%d").date()
    except ValueError:
        return [value]
    return [
        value,
        day.strftime("%Y-%m-%d"),
        day.strftime("%Y.%m.%d"),
        day.strftime("%d.%m.%Y"),
        day.strftime("%d/%m/%Y"),
        day.strftime("%m/%d/%Y"),
    ]


def check(
    sources: Iterable[tuple[str, Dataset]], outputs: Iterable[tuple[str, Dataset]]
) -> list[Leak]:
    """Every identifying value of any source found in any output."""
    idents: list[Identifier] = []
    for name, src in sources:
        idents += identifiers(src, name)
    patterns = _patterns(idents)
    leaks: list[Leak] = []
    for out_name, out in outputs:
        leaks += _scan(out, out_name, patterns)
    return leaks


def _patterns(idents: list[Identifier]) -> list[tuple[Identifier, re.Pattern[str], list[bytes]]]:
    out = []
    for ident in idents:
        forms = _date_forms(ident.value) if ident.kind == "date" else [ident.value]
        regex = re.compile(
            "|".join(_BOUNDARY.format(re.escape(f)) for f in forms),
            re.IGNORECASE if ident.kind in ("name", "text") else 0,
        )
        raw: list[bytes] = []
        for form in forms:
            if len(form) >= MIN_BYTES:
                for encoding in ("ascii", "utf-8", "latin-1"):
                    try:
                        raw.append(form.encode(encoding))
                    except UnicodeEncodeError:
                        continue
        out.append((ident, regex, list(dict.fromkeys(raw))))
    return out


def _scan(
    out: Dataset, name: str, patterns: list[tuple[Identifier, re.Pattern[str], list[bytes]]]
) -> list[Leak]:
    leaks: list[Leak] = []
    texts: list[tuple[str, str]] = []
    blobs: list[tuple[str, bytes]] = []
    meta = getattr(out, "file_meta", None)
    elements = list(walk(meta, "FileMeta.")) if meta is not None else []
    for path, element in [*elements, *walk(out)]:
        if int(element.tag) in PIXEL_TAGS or isinstance(element.value, bytes | bytearray):
            if isinstance(element.value, bytes | bytearray):
                blobs.append((path, bytes(element.value)))
            continue
        texts += [(path, v) for v in _values(element)]
    for ident, regex, raw in patterns:
        hit = next((p for p, v in texts if regex.search(v)), None)
        if hit is None:
            hit = next((p + " bytes" for p, b in blobs for r in raw if r in b), None)
        if hit is not None:
            leaks.append(Leak(ident, hit, name))
    return leaks


def read(path: Path) -> Dataset:
    """A file as a data set (pixel data included, as stored)."""
    return dcmread(path, force=True)


def files_of(path: Path) -> list[Path]:
    """A file, or every file under a folder (DICOMDIRs excluded)."""
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and p.name.upper() != "DICOMDIR")
    return [path]


def check_paths(source: Path, deidentified: Path) -> list[Leak]:
    """`vna deid-check`: files or folders; every source against every output."""
    sources = [(str(p), read(p)) for p in files_of(source)]
    outputs = [(str(p), read(p)) for p in files_of(deidentified)]
    return check(sources, outputs)

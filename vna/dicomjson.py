"""DICOM JSON Model (PS3.18 Annex F) for data sets read by the archive.

Written here rather than taken from ``Dataset.to_json_dict`` because the archive needs the
tag path of every bulk data element (to give it a resolvable BulkDataURI), must never force a
deferred read of a large value, and must tolerate malformed numbers in what it receives
(strict on what we create, tolerant on what we read: a bad value is dropped and reported).
"""

from __future__ import annotations

import base64
import json
import struct
import zlib
from collections.abc import Callable
from typing import Any

import orjson
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.valuerep import PersonName

#: VRs whose values are binary and become InlineBinary or BulkDataURI (PS3.18 F.2.7).
BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
#: VRs encoded as JSON numbers (PS3.18 F.2.3).
INT_VRS = frozenset({"IS", "SL", "SS", "SV", "UL", "US", "UV"})
FLOAT_VRS = frozenset({"DS", "FL", "FD"})
#: Values longer than this (bytes) are bulk data rather than inline.
BULK_THRESHOLD = 1024
#: Attributes that are bulk data whatever their size (pixel, overlay, waveform, document…).
BULK_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009, 0x00420011, 0x54001010, 0x56000020})
#: Relative URI prefix stored in precomputed metadata; the web layer makes it absolute.
BULK_URI_PREFIX = "bulkdata/"

TagPath = tuple[int, ...]
BulkHandler = Callable[[TagPath, str, int], str | None]


def tag_hex(tag: int) -> str:
    """``0x00100010`` -> ``"00100010"`` (the JSON key form)."""
    return f"{tag:08X}"


def path_text(path: TagPath) -> str:
    """A tag path as text: tags in hex, item indexes in decimal, joined by ``/``.

    ``(0x00540016, 0, 0x00181072)`` -> ``"00540016/0/00181072"``.
    """
    parts = []
    for i, item in enumerate(path):
        parts.append(tag_hex(item) if i % 2 == 0 else str(item))
    return "/".join(parts)


def parse_path_text(text: str) -> TagPath:
    """Inverse of :func:`path_text`.

    Raises:
        ValueError: not a tag path.
    """
    parts = text.split("/")
    if len(parts) % 2 != 1:
        raise ValueError(f"not a tag path: {text!r}")
    out: list[int] = []
    for i, part in enumerate(parts):
        if i % 2 == 0:
            if len(part) != 8:
                raise ValueError(f"not a tag: {part!r}")
            out.append(int(part, 16))
        else:
            out.append(int(part))
    return tuple(out)


def default_bulk_uri(path: TagPath, vr: str, length: int) -> str:
    """The relative bulk data URI stored in precomputed metadata."""
    return BULK_URI_PREFIX + path_text(path)


class JsonEncoder:
    """Turns a pydicom Dataset into DICOM JSON, collecting warnings on malformed values.

    ``bulk`` decides the BulkDataURI of a binary value (None means inline it). Values longer
    than ``threshold`` and the attributes of BULK_TAGS are offered to it.
    """

    def __init__(
        self, bulk: BulkHandler | None = default_bulk_uri, threshold: int = BULK_THRESHOLD
    ):
        self.bulk = bulk
        self.threshold = threshold
        self.warnings: list[str] = []
        # codec of the data set being encoded, innermost last: a sequence item without a
        # Specific Character Set of its own uses its parent's (PS3.5 7.5.3)
        self._encodings: list[str | None] = []

    def dataset(self, ds: Dataset, path: TagPath = ()) -> dict[str, Any]:
        """Encode every element of ``ds`` (tags in ascending order, group lengths left out)."""
        own = ds.get_item(0x00080005) is not None
        inherited = self._encodings[-1] if self._encodings else "latin-1"
        self._encodings.append(_simple_encoding(ds) if own else inherited)
        try:
            out: dict[str, Any] = {}
            for tag in sorted(ds.keys()):
                if tag & 0xFFFF == 0 and tag >> 16 != 0x0002:
                    continue  # group length: retired, meaningless after any change
                encoded = self.element(ds, BaseTag(tag), path + (int(tag),))
                if encoded is not None:
                    out[tag_hex(tag)] = encoded
            return out
        finally:
            self._encodings.pop()

    def element(self, ds: Dataset, tag: BaseTag, path: TagPath) -> dict[str, Any] | None:
        """Encode one element, looking at the raw form first so deferred values stay unread."""
        raw = ds.get_item(tag, keep_deferred=True)
        if isinstance(raw, RawDataElement):
            vr = raw.VR or "UN"
            deferred = raw.value is None and raw.length and raw.length != 0xFFFFFFFF
            if deferred and vr in BINARY_VRS:
                # A deferred (large) value: never read it here.
                return self._bulk_only(path, vr, raw.length)
            encoding = self._encodings[-1] if self._encodings else _simple_encoding(ds)
            if encoding is not None and raw.value is not None:
                fast = _fast_raw(raw, encoding)
                if fast is not None:
                    return fast
        try:
            elem = ds[tag]
        except Exception as exc:  # a value pydicom cannot convert: keep the rest
            self.warnings.append(f"{tag_hex(int(tag))}: unreadable value dropped ({exc})")
            return None
        return self.data_element(elem, path)

    def _bulk_only(self, path: TagPath, vr: str, length: int) -> dict[str, Any]:
        uri = self.bulk(path, vr, length) if self.bulk else None
        if uri is None:
            self.warnings.append(f"{path_text(path)}: large value left out of metadata")
            return {"vr": vr}
        return {"vr": vr, "BulkDataURI": uri}

    def data_element(self, elem: DataElement, path: TagPath) -> dict[str, Any]:
        """Encode a converted element."""
        vr = elem.VR or "UN"
        if vr in ("US or SS", "US or OW", "OB or OW", "US or SS or OW"):
            vr = "OW" if "OW" in vr and not isinstance(elem.value, int | MultiValue) else vr[:2]
        out: dict[str, Any] = {"vr": vr}
        value = elem.value
        if vr == "SQ":
            items = [self.dataset(item, path + (i,)) for i, item in enumerate(value or [])]
            if items:
                out["Value"] = items
            return out
        if vr in BINARY_VRS:
            if value is None or len(value) == 0:
                return out
            length = len(value)
            if self.bulk is not None and (length > self.threshold or int(elem.tag) in BULK_TAGS):
                uri = self.bulk(path, vr, length)
                if uri is not None:
                    out["BulkDataURI"] = uri
                    return out
            out["InlineBinary"] = base64.b64encode(bytes(value)).decode("ascii")
            return out
        if value is None or value == "" or (isinstance(value, list | MultiValue) and not value):
            return out
        values = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
        if vr == "PN":
            out["Value"] = [_person_name(v) for v in values]
        elif vr in INT_VRS or vr in FLOAT_VRS:
            out["Value"] = [self._number(v, vr, path) for v in values]
        elif vr == "AT":
            out["Value"] = [tag_hex(int(v)) if v is not None else None for v in values]
        else:
            out["Value"] = [_text(v) for v in values]
        if all(v is None for v in out["Value"]):
            del out["Value"]
        return out

    def _number(self, value: Any, vr: str, path: TagPath) -> int | float | None:
        if value is None or value == "":
            return None
        try:
            if vr in INT_VRS:
                number = float(value) if vr == "IS" else value
                return int(number)
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            self.warnings.append(f"{path_text(path)}: {vr} value {value!r} is not a number")
            return None
        if number != number or number in (float("inf"), float("-inf")):
            self.warnings.append(f"{path_text(path)}: {vr} value {value!r} is not finite")
            return None
        return number


#: Character sets whose text decodes without ISO 2022 code extensions (PS3.5 6.1.2.3).
_SIMPLE_CHARSETS = {
    "": "latin-1",
    "ISO_IR 6": "latin-1",
    "ISO_IR 100": "latin-1",
    "ISO_IR 192": "utf-8",
}
_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "LO", "SH", "TM", "UC", "UI"})
_ASCII_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "TM", "UI"})
_SINGLE_TEXT_VRS = frozenset({"LT", "ST", "UT", "UR"})
_BINARY_NUMBERS = {"US": "H", "UL": "I", "SS": "h", "SL": "i", "FL": "f", "FD": "d"}
_BINARY_SIZES = {vr: struct.calcsize(fmt) for vr, fmt in _BINARY_NUMBERS.items()}
_INFINITIES = (float("inf"), float("-inf"))


def _simple_encoding(ds: Dataset) -> str | None:
    """Python codec for the data set's text when no code extensions are involved, else None
    (pydicom's full decoder handles those)."""
    charset = ds.get_item(0x00080005)
    if charset is None:
        return "latin-1"
    value = charset.value
    if isinstance(value, bytes):
        text = value.decode("ascii", "replace").strip(" \x00")
    elif value is None:
        text = ""
    else:
        text = str(value) if isinstance(value, str) else "\\".join(value)
    return _SIMPLE_CHARSETS.get(text.strip())


def _fast_raw(raw: RawDataElement, encoding: str) -> dict[str, Any] | None:
    """JSON for a raw element of a common VR, decoded straight from its bytes.

    Reading thousands of objects, pydicom's general conversion is the larger part of the
    cost; for plain text and numbers this gives the same values. None = use pydicom.
    """
    vr = raw.VR
    value = raw.value
    if vr is None or not isinstance(value, bytes):
        return None
    return fast_value(vr, value, encoding, raw.is_little_endian)


def fast_value(
    vr: str, value: bytes, encoding: str, little_endian: bool = True
) -> dict[str, Any] | None:
    """:func:`_fast_raw` of an element given by its VR and value bytes (vna.fastread walks
    the bytes itself and needs no RawDataElement)."""
    if vr in _BINARY_NUMBERS:
        fmt = _BINARY_NUMBERS[vr]
        size = _BINARY_SIZES[vr]
        if len(value) % size:
            return None
        count = len(value) // size
        if count == 0:
            return {"vr": vr}
        order = "<" if little_endian else ">"
        numbers = list(struct.unpack(f"{order}{count}{fmt}", value))
        if vr in ("FL", "FD") and any(n != n or n in _INFINITIES for n in numbers):
            return None
        return {"vr": vr, "Value": numbers}
    if vr not in _TEXT_VRS and vr not in _SINGLE_TEXT_VRS and vr not in ("PN", "IS", "DS"):
        return None
    if vr in _ASCII_VRS and not value.isascii():
        return None  # non-ASCII in an ASCII-only VR: let pydicom judge
    text = value.decode(encoding, "replace")
    if vr in _SINGLE_TEXT_VRS:
        text = text.rstrip(" \x00")
        return {"vr": vr, "Value": [text]} if text else {"vr": vr}
    if vr != "PN" and "\\" not in text:  # one value, the common case (as below)
        part = text.strip(" \x00")
        if not part:
            return {"vr": vr}
        if vr not in ("IS", "DS"):
            return {"vr": vr, "Value": [part]}
        try:
            number = float(part)
        except ValueError:
            return None
        if number != number or number in _INFINITIES:
            return None
        return {"vr": vr, "Value": [int(number) if vr == "IS" else number]}
    parts = [v.strip(" \x00") if vr != "PN" else v.rstrip(" \x00") for v in text.split("\\")]
    if not any(parts):
        return {"vr": vr}
    if vr == "PN":
        return {"vr": vr, "Value": [_person_name(p) if p else None for p in parts]}
    if vr in ("IS", "DS"):
        parsed_numbers: list[int | float | None] = []
        for part in parts:
            if part == "":
                parsed_numbers.append(None)
                continue
            try:
                number = float(part)
            except ValueError:
                return None  # malformed: pydicom's path reports it
            if number != number or number in _INFINITIES:
                return None
            parsed_numbers.append(int(number) if vr == "IS" else number)
        return {"vr": vr, "Value": parsed_numbers}
    return {"vr": vr, "Value": [p if p != "" else None for p in parts]}


def _person_name(value: Any) -> dict[str, str] | None:
    """PS3.18 F.2.2: a PN value as its Alphabetic/Ideographic/Phonetic groups."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        # split as pydicom's PersonName would (it only drops trailing empty groups, which
        # are dropped below anyway), without building and validating one per value
        text = value
    else:
        text = str(value if isinstance(value, PersonName) else PersonName(str(value)))
    groups = text.split("=")
    names = ("Alphabetic", "Ideographic", "Phonetic")
    out = {name: text for name, text in zip(names, groups, strict=False) if text}
    return out or None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value)
    return text if text != "" else None


def dataset_to_json(
    ds: Dataset, bulk: BulkHandler | None = default_bulk_uri, threshold: int = BULK_THRESHOLD
) -> tuple[dict[str, Any], list[str]]:
    """Encode a data set; return the JSON object and the warnings about dropped values."""
    encoder = JsonEncoder(bulk, threshold)
    return encoder.dataset(ds), encoder.warnings


def dumps(obj: Any) -> str:
    """Compact UTF-8 JSON text, as sent over the wire.

    orjson writes the same text as the standard library's compact, non-ASCII-escaping form
    about fifteen times faster (it is on the path of every stored object and every QIDO-RS
    answer); what it refuses (integers beyond 64 bits, keys that are not text) goes through
    the standard library.
    """
    try:
        return orjson.dumps(obj).decode("utf-8")
    except TypeError:  # orjson.JSONEncodeError
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def pack(obj: dict[str, Any]) -> bytes:
    """Compressed JSON for the index (metadata of 200,000 instances stays small)."""
    try:
        text = orjson.dumps(obj)
    except TypeError:  # see dumps
        text = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return zlib.compress(text, 1)


def unpack_text(blob: bytes) -> str:
    """The JSON text of a packed object."""
    return zlib.decompress(blob).decode("utf-8")


def unpack(blob: bytes) -> dict[str, Any]:
    """The JSON object of a packed object."""
    result: dict[str, Any] = json.loads(unpack_text(blob))
    return result


def json_to_dataset(obj: dict[str, Any]) -> Dataset:
    """Decode DICOM JSON into a Dataset (BulkDataURI values are left empty)."""

    def no_bulk(*_args: Any) -> bytes:
        return b""

    return Dataset.from_json(obj, bulk_data_uri_handler=no_bulk)

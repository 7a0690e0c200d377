"""C-FIND / C-MOVE / C-GET identifiers <-> the core's QueryRequest and answers.

Values are decoded with the identifier's own Specific Character Set (pydicom does that when
an element is read), so the core matches Unicode whatever set the SCU used. Answers carry
exactly the keys asked for (PS3.4 C.4.1.1.3.2: an attribute asked for and unknown comes back
zero-length), plus Query/Retrieve Level and Retrieve AE Title, encoded as ISO_IR 192 so that
every name comes back as it was stored.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import UID

from dimse.acceptance import PATIENT_ROOT_MODELS
from vna.errors import BadRequest
from vna.query import QueryMatch, QueryRequest

QUERY_RETRIEVE_LEVEL = 0x00080052
SPECIFIC_CHARACTER_SET = 0x00080005
RETRIEVE_AE_TITLE = 0x00080054
#: Keys of the identifier that are not attributes of the objects.
NOT_MATCHED = frozenset({QUERY_RETRIEVE_LEVEL, SPECIFIC_CHARACTER_SET, RETRIEVE_AE_TITLE})
PATIENT_ROOT_LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")
STUDY_ROOT_LEVELS = ("STUDY", "SERIES", "IMAGE")
#: Unique key of each level (PS3.4 C.6.1.1 / C.6.2.1).
UNIQUE_KEYS = {
    "PATIENT": 0x00100020,
    "STUDY": 0x0020000D,
    "SERIES": 0x0020000E,
    "IMAGE": 0x00080018,
}
ANSWER_CHARSET = "ISO_IR 192"


@dataclass
class Identifier:
    """A parsed identifier: the level, the query, and the identifier itself (its element
    order and VRs shape the answers)."""

    level: str
    request: QueryRequest
    asked: Dataset
    sequences: dict[int, Dataset | None] = field(default_factory=dict)


def decode(raw: BytesIO | None, transfer_syntax: str) -> Dataset:
    """The identifier of a request, decoded in the context's transfer syntax.

    Raises:
        BadRequest: missing or undecodable.
    """
    if raw is None or not raw.getvalue():
        raise BadRequest("the request has no identifier")
    ts = UID(transfer_syntax)
    data = raw.getvalue()
    try:
        if ts.is_deflated:
            data = zlib.decompress(data, -zlib.MAX_WBITS)
        ds = read_dataset(BytesIO(data), ts.is_implicit_VR, ts.is_little_endian)
        for elem in ds:  # convert every raw element now, so bad values fail here
            _ = elem.value
    except BadRequest:
        raise
    except Exception as exc:
        raise BadRequest(f"the identifier cannot be decoded: {exc}") from exc
    return ds


def encode(ds: Dataset, transfer_syntax: str) -> bytes:
    """An answer encoded in the context's transfer syntax (PS3.7 6.3.1)."""
    ts = UID(transfer_syntax)
    fp = DicomBytesIO()
    fp.is_implicit_VR = ts.is_implicit_VR
    fp.is_little_endian = ts.is_little_endian
    write_dataset(fp, ds)
    data = fp.getvalue()
    if ts.is_deflated:
        packer = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -zlib.MAX_WBITS)
        data = packer.compress(data) + packer.flush()
        data += b"\x00" * (len(data) % 2)
    return data


def query_value(elem: DataElement) -> str:
    """A key's value as the text the core matches (Unicode; ``\\`` between values).

    Raises:
        BadRequest: a value that cannot be decoded.
    """
    try:
        value = elem.value
    except Exception as exc:  # a value pydicom cannot convert
        raise BadRequest(f"{elem.keyword or elem.tag}: cannot decode the value: {exc}") from exc
    if value is None or isinstance(value, bytes | bytearray):
        return ""
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join("" if v is None else str(v) for v in value)
    return str(value)


def level_of(ds: Dataset, sop_class: str) -> str:
    """The Query/Retrieve Level, checked against the information model.

    Raises:
        BadRequest: missing, or not a level of this model (PS3.4 C.6.1 / C.6.2).
    """
    if QUERY_RETRIEVE_LEVEL not in ds:
        raise BadRequest("Query/Retrieve Level (0008,0052) is missing")
    level = str(ds[QUERY_RETRIEVE_LEVEL].value or "").strip().upper()
    levels = PATIENT_ROOT_LEVELS if sop_class in PATIENT_ROOT_MODELS else STUDY_ROOT_LEVELS
    if level not in levels:
        raise BadRequest(
            f"Query/Retrieve Level {level!r} is not one of {', '.join(levels)} "
            "in this information model"
        )
    return level


def parse_find(
    ds: Dataset, sop_class: str, *, fuzzy: bool = False, limit: int | None = None
) -> Identifier:
    """A C-FIND identifier as a QueryRequest.

    Every key is returned; a key with a value is also matched. Items of sequence keys
    become ``sequence_keys`` (PS3.4 C.2.2.2.6).

    Raises:
        BadRequest: a missing or wrong level, or a value that cannot be decoded.
    """
    level = level_of(ds, sop_class)
    keys: dict[int, str] = {}
    sequence_keys: dict[tuple[int, int], str] = {}
    sequences: dict[int, Dataset | None] = {}
    return_tags: list[int] = []
    for elem in ds:
        tag = int(elem.tag)
        if tag in NOT_MATCHED or tag >> 16 in (0x0000, 0x0002) or tag & 0xFFFF == 0:
            continue
        if elem.VR == "SQ":
            item = elem.value[0] if elem.value else None
            sequences[tag] = item
            return_tags.append(tag)
            for sub in item or ():
                if sub.VR != "SQ" and (text := query_value(sub)).strip() not in ("", "*"):
                    sequence_keys[(tag, int(sub.tag))] = text
            continue
        keys[tag] = query_value(elem)
    request = QueryRequest(
        level=level,
        keys=keys,
        sequence_keys=sequence_keys,
        return_tags=return_tags,
        fuzzy=fuzzy,
        limit=limit,
    )
    return Identifier(level, request, ds, sequences)


def _vr(tag: int, asked_vr: str) -> str:
    if asked_vr not in ("UN", "", None):
        return asked_vr
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return "UN"
    return vr.split(" or ")[0]


def _empty(tag: int, vr: str) -> DataElement:
    return DataElement(tag, vr, [] if vr == "SQ" else None)


def _shaped_sequence(found: DataElement | None, tag: int, wanted: Dataset | None) -> DataElement:
    """A sequence answer: every item reduced to the keys of the query item (all items with
    all their attributes when the query item was empty, PS3.4 C.2.2.1.3)."""
    if found is None or found.VR != "SQ" or not found.value:
        return _empty(tag, "SQ")
    if wanted is None or len(wanted) == 0:
        return found
    items = []
    for item in found.value:
        shaped = Dataset()
        for sub in wanted:
            sub_tag = int(sub.tag)
            got = item.get(sub_tag)
            if sub.VR == "SQ":
                nested = sub.value[0] if sub.value else None
                shaped.add(_shaped_sequence(got, sub_tag, nested))
            elif got is None or got.value in (None, ""):
                shaped.add(_empty(sub_tag, _vr(sub_tag, sub.VR)))
            else:
                shaped.add(got)
        items.append(shaped)
    return DataElement(tag, "SQ", Sequence(items))


def answer(found: Identifier, match: QueryMatch, retrieve_ae: str) -> Dataset:
    """The response identifier for one match: the keys asked, in the answer character set."""
    ds = Dataset()
    ds.SpecificCharacterSet = ANSWER_CHARSET
    ds.QueryRetrieveLevel = found.level
    ds.RetrieveAETitle = retrieve_ae
    result = match.dataset
    for elem in found.asked:
        tag = int(elem.tag)
        if tag in NOT_MATCHED or tag >> 16 in (0x0000, 0x0002) or tag & 0xFFFF == 0:
            continue
        got: Any = result.get(tag)
        if elem.VR == "SQ":
            ds.add(_shaped_sequence(got, tag, found.sequences.get(tag)))
        elif got is None or got.value in (None, "") or got.value == []:
            ds.add(_empty(tag, _vr(tag, elem.VR)))
        else:
            ds.add(got)
    return ds


def retrieve_keys(ds: Dataset, sop_class: str) -> tuple[str, dict[str, list[str]]]:
    """Level and unique keys of a C-MOVE / C-GET identifier (PS3.4 C.4.2.1.4.1).

    Returns the level and, per level, the list of unique key values given (UID lists are
    split). At least the unique key of the retrieve level must be given.

    Raises:
        BadRequest: a missing or wrong level, a missing unique key, or a wildcard.
    """
    level = level_of(ds, sop_class)
    given: dict[str, list[str]] = {}
    for name, tag in UNIQUE_KEYS.items():
        if tag not in ds:
            continue
        values = [v.strip() for v in query_value(ds[tag]).split("\\") if v.strip()]
        if any("*" in v or "?" in v for v in values):
            raise BadRequest(f"{ds[tag].keyword}: wildcards are not allowed in a retrieve")
        if values:
            given[name] = values
    if level not in given:
        raise BadRequest(f"the unique key of level {level} ({ds_keyword(level)}) is missing")
    return level, given


def ds_keyword(level: str) -> str:
    """Keyword of a level's unique key."""
    return {
        "PATIENT": "PatientID",
        "STUDY": "StudyInstanceUID",
        "SERIES": "SeriesInstanceUID",
        "IMAGE": "SOPInstanceUID",
    }[level]

"""QIDO-RS query parameters (PS3.18 8.3.4, 10.6.1.2) to one core QueryRequest.

- ``{attributeID}={value}``: the attribute by keyword (``PatientID``) or tag (``00100020``),
  or a sequence path of two (``RequestAttributesSequence.ScheduledProcedureStepID``,
  ``00400275.00400009``); longer paths are accepted, not matched, and reported. The value
  follows PS3.4 C.2.2.2: ``*`` and ``?`` wildcards, ``a-b`` date/time ranges, ``\\``
  separated values, and for UIDs a list separated by commas or backslashes. An attribute
  given twice is an error.
- ``includefield``: repeatable, each a comma-separated list of attributes, or ``all``.
- ``fuzzymatching``: ``true`` or ``false``.
- ``limit``, ``offset``: non-negative integers.
- ``charset`` (answers are always UTF-8), ``accept`` (PS3.18 8.3.3.1, wins over the Accept
  header) and names starting with ``_`` (cache busters added by browser libraries) are
  accepted; any other name that is not an attribute is an error naming it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from pydicom.datadict import dictionary_VR, tag_for_keyword

from vna.errors import BadRequest
from vna.index import matching
from vna.query import QueryRequest

_TAG = re.compile(r"^[0-9A-Fa-f]{8}$")
_NUMBER = re.compile(r"^\d{1,9}$")
RESERVED = ("limit", "offset", "fuzzymatching", "includefield", "charset", "accept")
STUDY_UID, SERIES_UID = 0x0020000D, 0x0020000E


@dataclass
class Parsed:
    """What a QIDO-RS request asks, besides its level and path keys."""

    keys: dict[int, str] = field(default_factory=dict)
    sequence_keys: dict[tuple[int, int], str] = field(default_factory=dict)
    include: list[int] = field(default_factory=list)
    include_all: bool = False
    fuzzy: bool = False
    limit: int | None = None
    offset: int = 0
    accept: str | None = None
    #: Attribute paths that are accepted but cannot be matched (deeper than one item).
    unmatched_paths: list[str] = field(default_factory=list)


def tag_of(text: str) -> int:
    """A tag from its keyword or its eight hex digits.

    Raises:
        BadRequest: neither.
    """
    name = text.strip()
    if _TAG.match(name):
        return int(name, 16)
    tag = tag_for_keyword(name)
    if tag is None:
        raise BadRequest(f"unknown attribute {name!r}: not a DICOM keyword or tag (ggggeeee)")
    return int(tag)


def _is_sequence(tag: int) -> bool:
    if tag >> 16 & 1:
        return True  # a private element may be a sequence; its VR is not in the dictionary
    try:
        return dictionary_VR(tag) == "SQ"
    except KeyError:
        return False


def _path(text: str) -> list[int]:
    tags = [tag_of(part) for part in text.split(".")]
    for tag in tags[:-1]:
        if not _is_sequence(tag):
            raise BadRequest(f"{text!r}: {tag:08X} is not a sequence")
    return tags


def _count(name: str, text: str) -> int:
    if not _NUMBER.match(text.strip()):
        raise BadRequest(f"{name} must be a non-negative integer, not {text!r}")
    return int(text.strip())


def parse(items: Iterable[tuple[str, str]]) -> Parsed:
    """Parse the (already percent-decoded) query parameters of a QIDO-RS request.

    Raises:
        BadRequest: an unknown parameter or attribute, a malformed value, a key given twice.
    """
    out = Parsed()
    unknown: list[str] = []
    seen: set[str] = set()
    for raw_name, value in items:
        name = raw_name.strip()
        lower = name.lower()
        if lower in ("limit", "offset", "fuzzymatching", "accept", "charset"):
            if lower in seen:
                raise BadRequest(f"query parameter {lower!r} is given more than once")
            seen.add(lower)
        if lower == "limit":
            out.limit = _count("limit", value)
        elif lower == "offset":
            out.offset = _count("offset", value)
        elif lower == "fuzzymatching":
            flag = value.strip().lower()
            if flag not in ("true", "false"):
                raise BadRequest(f"fuzzymatching must be true or false, not {value!r}")
            out.fuzzy = flag == "true"
        elif lower == "includefield":
            for part in value.split(","):
                if not part.strip():
                    continue
                if part.strip().lower() == "all":
                    out.include_all = True
                    continue
                out.include.append(_path(part)[0])
        elif lower == "charset":
            continue  # answers are UTF-8 whatever is asked (PS3.18 8.3.3.2)
        elif lower == "accept":
            out.accept = value
        elif name.startswith("_"):
            continue
        else:
            try:
                path = _path(name)
            except BadRequest:
                unknown.append(name)
                continue
            _add_key(out, name, path, value)
    if unknown:
        raise BadRequest(
            "unknown query parameter(s): "
            + ", ".join(unknown)
            + f" (not an attribute keyword or tag, nor one of {', '.join(RESERVED)})"
        )
    return out


def _add_key(out: Parsed, name: str, path: list[int], value: str) -> None:
    if len(path) == 1:
        if path[0] in out.keys:
            raise BadRequest(f"attribute {name!r} is given more than once")
        out.keys[path[0]] = value
    elif len(path) == 2:
        pair = (path[0], path[1])
        if pair in out.sequence_keys:
            raise BadRequest(f"attribute {name!r} is given more than once")
        out.sequence_keys[pair] = value
    else:
        if not matching.is_universal(value):
            out.unmatched_paths.append(name)
        out.include.append(path[0])


def request_for(
    level: str, parsed: Parsed, path_keys: dict[int, str], return_tags: list[int]
) -> QueryRequest | None:
    """The core request; None when the path and the query parameters cannot both match
    (a StudyInstanceUID parameter naming another study than the path)."""
    keys = dict(parsed.keys)
    for tag, uid in path_keys.items():
        if not matching.is_uid(uid):
            name = "StudyInstanceUID" if tag == STUDY_UID else "SeriesInstanceUID"
            raise BadRequest(f"{name} in the path: {uid!r} is not a UID")
        given = keys.get(tag)
        if given is not None and not matching.is_universal(given):
            allowed = matching.split_values(given.replace(",", "\\"))
            if uid not in allowed:
                return None
        keys[tag] = uid
    return QueryRequest(
        level=level,
        keys=keys,
        sequence_keys=dict(parsed.sequence_keys),
        return_tags=list(dict.fromkeys([*return_tags, *parsed.include])),
        include_all=parsed.include_all,
        fuzzy=parsed.fuzzy,
        limit=parsed.limit,
        offset=parsed.offset,
    )

"""PS3.4 C.2.2.2 matching, one function per matching type, each returning an SQL condition.

Query values arrive as Unicode text (already decoded from their Specific Character Set by the
front end). Multiple values separated by ``\\`` match when any of them matches (C.2.2.2.8 /
C.2.2.2.2 for UID lists). ``*`` alone, or an empty value, is universal matching (no
condition). Wildcards become SQL LIKE patterns with ``%``, ``_`` and the escape character
escaped, so a literal ``%`` in a patient name never widens a match.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from sqlalchemy import ColumnElement, and_, false, or_

from vna.errors import BadRequest
from vna.index.attributes import fold, norm_date, norm_time

ESCAPE = "\\"
_DATE = re.compile(r"^\d{8}$")
_TIME = re.compile(r"^\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?$")
_DATETIME = re.compile(r"^\d{4}(\d{2}(\d{2}(\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?)?)?)?([+-]\d{4})?$")
_DT_CORE = r"\d{4}(?:\d{2}(?:\d{2}(?:\d{2}(?:\d{2}(?:\d{2}(?:\.\d{1,6})?)?)?)?)?)?"
_DT_RANGE = re.compile(rf"^({_DT_CORE})?-({_DT_CORE})?$")
_INT = re.compile(r"^[+-]?\d+$")
_UID = re.compile(r"^[0-9A-Za-z.\-_]{1,64}$")


def is_date(text: str) -> bool:
    """Whether ``text`` is a DA value (YYYYMMDD) naming a day of the calendar."""
    if not _DATE.match(text):
        return False
    try:
        dt.date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except ValueError:
        return False
    return True


def is_time(text: str) -> bool:
    """Whether ``text`` is a TM value (HH, HHMM, HHMMSS, HHMMSS.F-FFFFFF) of a real time;
    a leap second (60) is allowed."""
    if not _TIME.match(text):
        return False
    digits = text.split(".")[0]
    hours, minutes, seconds = digits[:2], digits[2:4] or "0", digits[4:6] or "0"
    return int(hours) < 24 and int(minutes) < 60 and int(seconds) <= 60


def is_uid(text: str) -> bool:
    """Whether ``text`` can be a UID (tolerant: letters, ``-`` and ``_`` are let through, as
    found in the wild)."""
    return bool(_UID.match(text))


def is_universal(value: str) -> bool:
    """Empty or a lone ``*`` matches everything (C.2.2.2.3)."""
    return value.strip() in ("", "*")


def has_wildcards(value: str) -> bool:
    return "*" in value or "?" in value


def like_pattern(value: str) -> str:
    """DICOM wildcards to a LIKE pattern escaped with ESCAPE."""
    out = []
    for ch in value:
        if ch in ("%", "_", ESCAPE):
            out.append(ESCAPE + ch)
        elif ch == "*":
            out.append("%")
        elif ch == "?":
            out.append("_")
        else:
            out.append(ch)
    return "".join(out)


def split_values(value: str) -> list[str]:
    """Values of a multi-valued key (``\\`` separated), trimmed, empty ones dropped."""
    return [v.strip() for v in value.split("\\") if v.strip()]


def _single_or_wild(column: Any, value: str) -> ColumnElement[bool]:
    if has_wildcards(value):
        return column.like(like_pattern(value), escape=ESCAPE)
    return column == value


def match_uid(column: Any, value: str, keyword: str) -> ColumnElement[bool] | None:
    """Single value or list of UID matching (C.2.2.2.2)."""
    if is_universal(value):
        return None
    uids = split_values(value.replace(",", "\\"))
    for uid in uids:
        if not _UID.match(uid):
            raise BadRequest(f"{keyword}: {uid!r} is not a UID")
    return column.in_(uids) if len(uids) > 1 else column == uids[0]


def match_text(
    column: Any, value: str, fold_column: Any | None = None, fuzzy: bool = False
) -> ColumnElement[bool] | None:
    """Single value, wildcard or multiple value matching on a text column.

    With ``fuzzy`` and a folded column, case and accents are ignored.
    """
    if is_universal(value):
        return None
    values = split_values(value) or [value.strip()]
    conditions = []
    for v in values:
        if fuzzy and fold_column is not None:
            conditions.append(_single_or_wild(fold_column, fold(v)))
        else:
            conditions.append(_single_or_wild(column, v))
    return conditions[0] if len(conditions) == 1 else or_(*conditions)


def normalise_pn(value: str) -> str:
    """A PN group without trailing empty components (``Smith^John^^^`` == ``Smith^John``)."""
    return value.rstrip("^ ").strip()


def match_pn(
    groups: tuple[Any, Any, Any] | None,
    whole: Any,
    fold_column: Any | None,
    value: str,
    fuzzy: bool,
) -> ColumnElement[bool] | None:
    """Person Name matching (C.2.2.2.1 / C.2.2.2.4), component group by component group.

    ``groups`` are the Alphabetic, Ideographic and Phonetic columns (None when the attribute
    is stored whole only). A query with ``=`` matches each of its non-empty groups against the
    stored group; a query without one matches the Alphabetic group, or, when it holds
    non-ASCII characters, any group (ideographic and phonetic names are often sent alone).
    Fuzzy matching ignores case and accents of the Alphabetic group.
    """
    if is_universal(value):
        return None
    query = value.strip()
    if fuzzy and fold_column is not None:
        q = fold(normalise_pn(query.split("=")[0]))
        if not q:
            return None
        pattern = like_pattern(q if has_wildcards(q) else q + "=*")
        exact = (
            fold_column.like(like_pattern(q), escape=ESCAPE)
            if has_wildcards(q)
            else (fold_column == q)
        )
        return or_(exact, fold_column.like(pattern, escape=ESCAPE))
    if groups is None:
        return _single_or_wild(whole, query)
    if "=" in query:
        parts = (query.split("=") + ["", ""])[:3]
        conditions = [
            _single_or_wild(col, normalise_pn(part))
            for col, part in zip(groups, parts, strict=True)
            if normalise_pn(part) and normalise_pn(part) != "*"
        ]
        return and_(*conditions) if conditions else None
    q = normalise_pn(query)
    if q.isascii():
        return _single_or_wild(groups[0], q)
    return or_(*(_single_or_wild(col, q) for col in groups))


def _range(value: str) -> tuple[str, str] | None:
    if "-" not in value:
        return None
    low, _, high = value.partition("-")
    return low.strip(), high.strip()


def match_date(column: Any, value: str, keyword: str) -> ColumnElement[bool] | None:
    """Single value or range matching of DA (C.2.2.2.5), open-ended ranges too."""
    if is_universal(value):
        return None
    conditions = []
    for v in split_values(value) or [value]:
        bounds = _range(v)
        if bounds is None:
            d = norm_date(v)
            if not is_date(d):
                raise BadRequest(f"{keyword}: {v!r} is not a date (YYYYMMDD)")
            conditions.append(column == d)
            continue
        low, high = (norm_date(b) for b in bounds)
        if not low and not high:
            raise BadRequest(f"{keyword}: {v!r} is not a date range")
        for b in (low, high):
            if b and not is_date(b):
                raise BadRequest(f"{keyword}: {b!r} is not a date (YYYYMMDD)")
        parts = [column != ""]
        if low:
            parts.append(column >= low)
        if high:
            parts.append(column <= high)
        conditions.append(and_(*parts))
    return conditions[0] if len(conditions) == 1 else or_(*conditions)


def match_time(norm_column: Any, value: str, keyword: str) -> ColumnElement[bool] | None:
    """Single value or range matching of TM on the normalised column."""
    if is_universal(value):
        return None
    bounds = _range(value)
    values = [bounds[0], bounds[1]] if bounds else [value.strip()]
    for v in values:
        if v and not is_time(v.replace(":", "")):
            raise BadRequest(f"{keyword}: {v!r} is not a time (HHMMSS.FFFFFF)")
    if bounds is None:
        low, high = norm_time(value), norm_time(value, upper=True)
        return and_(norm_column >= low, norm_column <= high)
    low_text, high_text = bounds
    if not low_text and not high_text:
        raise BadRequest(f"{keyword}: {value!r} is not a time range")
    parts = [norm_column != ""]
    if low_text:
        parts.append(norm_column >= norm_time(low_text))
    if high_text:
        parts.append(norm_column <= norm_time(high_text, upper=True))
    return and_(*parts)


def match_datetime(column: Any, value: str, keyword: str) -> ColumnElement[bool] | None:
    """Single value or range matching of DT, compared as text on the value as received
    (a bound given to the day matches every time of that day)."""
    if is_universal(value):
        return None
    text = value.strip()
    bounds = _DT_RANGE.match(text)
    if bounds is None:
        if not _DATETIME.match(text):
            raise BadRequest(f"{keyword}: {value!r} is not a date-time")
        return column.like(like_pattern(text) + "%", escape=ESCAPE)
    low, high = bounds.group(1), bounds.group(2)
    if not low and not high:
        raise BadRequest(f"{keyword}: {value!r} is not a date-time range")
    parts = [column != ""]
    if low:
        parts.append(column >= low)
    if high:
        parts.append(or_(column <= high, column.like(like_pattern(high) + "%", escape=ESCAPE)))
    return and_(*parts)


def match_int(column: Any, value: str, keyword: str) -> ColumnElement[bool] | None:
    """Single value (or multiple value) matching of integer attributes."""
    if is_universal(value):
        return None
    values = split_values(value)
    for v in values:
        if not _INT.match(v):
            raise BadRequest(f"{keyword}: {v!r} is not an integer")
    numbers = [int(v) for v in values]
    if not numbers:
        return false()
    return column.in_(numbers) if len(numbers) > 1 else column == numbers[0]

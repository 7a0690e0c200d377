"""Cleaning free text (PS3.15 E.1.1 action C) and collecting a source's identifying values.

Cleaning keeps only words of a vocabulary known not to identify anybody
(``deid_profiles/clean_vocabulary.txt``) and small numbers; everything else goes. The leak
checker uses the same vocabulary, so what cleaning keeps is exactly what the checker accepts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cache
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from vna.deid.table import PROFILES_DIR

VOCABULARY_FILE = "clean_vocabulary.txt"
_WORD = re.compile(r"[^\W_]+(?:[.'-][^\W_]+)*", re.UNICODE)
_SMALL_NUMBER = re.compile(r"^\d{1,3}(?:[.,]\d{1,2})?(?:mm|cm|ms|s|kv|ma|mas|deg|hz|t|d)?$", re.I)
#: Attributes whose values identify a person or the source (beyond Table E.1-1's free text).
IDENTIFYING_KEYWORDS = (
    "PatientName",
    "PatientID",
    "OtherPatientIDs",
    "OtherPatientNames",
    "PatientBirthName",
    "PatientMotherBirthName",
    "AccessionNumber",
    "InstitutionName",
    "InstitutionAddress",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "OperatorsName",
    "StationName",
    "StudyID",
    "PatientAddress",
    "IssuerOfPatientID",
)


@cache
def vocabulary(directory: Path = PROFILES_DIR) -> frozenset[str]:
    """The safe words, lower case."""
    words = set()
    for line in (directory / VOCABULARY_FILE).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            words.add(line.lower())
    return frozenset(words)


def is_safe_word(word: str, identifiers: Iterable[str] = ()) -> bool:
    """Whether a word may stay in cleaned text."""
    lowered = word.lower()
    if lowered in identifiers:
        return False
    return lowered in vocabulary() or bool(_SMALL_NUMBER.match(word))


def clean_text(text: str, identifiers: frozenset[str] = frozenset()) -> str:
    """The safe words of ``text`` in their order, single-spaced."""
    return " ".join(w for w in _WORD.findall(text) if is_safe_word(w, identifiers))


def unsafe_words(text: str) -> list[str]:
    """Words of ``text`` that cleaning would remove (what the leak checker looks for)."""
    return [w for w in _WORD.findall(text) if not is_safe_word(w)]


def identifiers_of(ds: Dataset) -> frozenset[str]:
    """Lower-case words of the patient's and the source's identifying values: even a
    vocabulary word (a patient called "Head") is removed when it is one of them."""
    words: set[str] = set()
    for keyword in IDENTIFYING_KEYWORDS:
        value = ds.get(keyword)
        if value is None:
            continue
        values = list(value) if isinstance(value, list | MultiValue) else [value]
        for v in values:
            words.update(w.lower() for w in _WORD.findall(str(v)))
    return frozenset(words)

"""The JSON text the archive writes (wire answers and the index's packed metadata)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from vna import dicomjson


def _standard(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


@pytest.mark.parametrize(
    "obj",
    [
        {"00100010": {"vr": "PN", "Value": [{"Alphabetic": "Γιάννης^Παπαδόπουλος"}]}},
        {"00100010": {"vr": "PN", "Value": [{"Ideographic": "山田^太郎"}]}},
        {"00280030": {"vr": "DS", "Value": [0.5, 1e-07, 123456789.125, -2.0]}},
        {"00081199": {"vr": "SQ", "Value": [{"00081150": {"vr": "UI", "Value": ["1.2.3"]}}]}},
        [{"a": None, "b": True, "c": 'tab\tquote"backslash\\'}],
    ],
)
def test_text_reads_back_as_the_standard_library_writes_it(obj: Any) -> None:
    text = dicomjson.dumps(obj)
    assert json.loads(text) == obj
    assert "\\u" not in text  # non-ASCII text is written as UTF-8, not escaped
    assert dicomjson.unpack(dicomjson.pack(obj)) == obj


@pytest.mark.parametrize(
    "obj",
    [
        {"00720078": {"vr": "UV", "Value": [2**70]}},  # beyond 64 bits
        {1: "a key that is not text"},
    ],
)
def test_what_the_fast_encoder_refuses_is_still_written(obj: Any) -> None:
    assert dicomjson.dumps(obj) == _standard(obj)
    assert dicomjson.unpack_text(dicomjson.pack(obj)) == _standard(obj)

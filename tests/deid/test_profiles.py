"""The profile sources: Table E.1-1 as data, generated recipes in sync, composition."""

from __future__ import annotations

import pytest

from vna.deid.profiles import compose, profile_names
from vna.deid.table import OPTIONS, PROFILES_DIR, generated_recipes, load_table, resolve
from vna.errors import ConfigError


def test_generated_recipes_match_the_committed_files() -> None:
    for name, text in generated_recipes().items():
        assert (PROFILES_DIR / name).read_text(encoding="utf-8") == text, (
            f"{name} drifted from table_e1_1.csv: run `python -m vna.deid.table`"
        )


def test_table_covers_table_e1_1() -> None:
    rows = load_table()
    assert len(rows) > 450
    by_keyword = {r.keyword: r for r in rows}
    assert by_keyword["PatientName"].basic == "Z"
    assert by_keyword["SOPInstanceUID"].basic == "U"
    assert by_keyword["InstitutionName"].basic == "X/Z/D"
    assert by_keyword["StudyDate"].options["retain_long_modified_dates"] == "C"
    assert by_keyword["PatientAge"].options["retain_patient_characteristics"] == "K"
    assert {r.basic for r in rows} <= {"X", "Z", "D", "U", "X/Z", "X/D", "Z/D", "X/Z/D", "X/Z/U*"}


@pytest.mark.parametrize(
    ("code", "iod_type", "expected"),
    [
        ("X/Z", "3", "X"),
        ("X/Z", "2", "Z"),
        ("X/D", "1", "D"),
        ("X/D", "3", "X"),
        ("Z/D", "1", "D"),
        ("Z/D", "2", "Z"),
        ("X/Z/D", "1", "D"),
        ("X/Z/D", "2", "Z"),
        ("X/Z/D", "3", "X"),
        ("X/Z/U*", "1", "U*"),
        ("X/Z/U*", "3", "X"),
        ("X/Z/D", "", "Z"),
        ("K", "3", "K"),
    ],
)
def test_combined_codes_resolve_by_type(code: str, iod_type: str, expected: str) -> None:
    assert resolve(code, iod_type) == expected


def test_every_recipe_line_has_a_comment_saying_why() -> None:
    for name in generated_recipes():
        lines = (PROFILES_DIR / name).read_text().splitlines()
        for index, line in enumerate(lines):
            if line.split(" ", 1)[0] in ("REMOVE", "BLANK", "REPLACE", "KEEP", "ADD"):
                assert lines[index - 1].startswith("#"), f"{name}:{index + 1}"


def test_profiles_and_options_compose() -> None:
    assert set(profile_names()) == {"basic", "teaching", "research"}
    research = compose("research")
    assert research.has("retain-long-modified-dates") and not research.anonymous
    assert compose("teaching").private == "remove-all"
    with_uids = compose("basic", ["retain-uids"])
    assert with_uids.action_for(0x00080018).action == "KEEP"  # type: ignore[union-attr]
    assert not with_uids.anonymous
    codes = [c for c, _ in compose("basic", list(OPTIONS)[:2]).method_codes]
    assert codes[0] == "113100" and "113111" in codes


def test_bad_profiles_and_options_are_refused() -> None:
    with pytest.raises(ConfigError):
        compose("nope")
    with pytest.raises(ConfigError):
        compose("basic", ["retain-everything"])
    with pytest.raises(ConfigError):
        compose("basic", ["retain-long-full-dates", "retain-long-modified-dates"])

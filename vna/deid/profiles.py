"""Profiles: deid recipes from ``deid_profiles/`` composed with PS3.15 E.3 options.

A profile (``profiles.toml``) names recipe layers; options add their generated
``option-NAME.recipe`` layers after the first (basic) layer and before the profile's own
overlay. Layers are merged per attribute, a later layer winning, so the deid parser sees one
action per attribute (deid itself would apply several actions in recipe order).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from deid.config.utils import load_deid
from pydicom.datadict import tag_for_keyword

from vna.deid.table import BASIC_CODE, OPTIONS, PROFILES_DIR, SafePrivate, load_safe_private
from vna.deid.table import load_table as _load_table
from vna.errors import ConfigError

PROFILES_FILE = "profiles.toml"
PRIVATE_POLICIES = ("remove", "remove-all")
EXCLUSIVE_OPTIONS = ("retain-long-full-dates", "retain-long-modified-dates")


@dataclass(frozen=True)
class Action:
    """One deid header action on one attribute, and the Table E.1-1 code it came from."""

    action: str  # deid: REMOVE, BLANK, REPLACE, KEEP, ADD
    field: str
    value: str | None = None
    code: str = ""  # the Table E.1-1 code of the row when the layer was generated from it

    def as_deid(self) -> dict[str, str]:
        out = {"action": self.action, "field": self.field}
        if self.value is not None:
            out["value"] = self.value
        return out


@dataclass(frozen=True)
class Profile:
    """A composed profile: its options, policies and the merged header actions."""

    name: str
    description: str
    options: tuple[str, ...]
    private: str
    anonymous: bool
    actions: tuple[Action, ...]
    safe_private: tuple[SafePrivate, ...] = field(default=())

    def has(self, option: str) -> bool:
        return option in self.options

    @property
    def method_codes(self) -> list[tuple[str, str]]:
        """CID 7050 codes of what was applied (PS3.15 E.1.1: DeidentificationMethodCodeSequence)."""
        return [BASIC_CODE] + [(OPTIONS[o].code, OPTIONS[o].meaning) for o in self.options]

    def action_for(self, tag: int) -> Action | None:
        return _by_tag(self).get(tag)


@cache
def _by_tag(profile: Profile) -> dict[int, Action]:
    out = {}
    for action in profile.actions:
        tag = field_tag(action.field)
        if tag is not None:
            out[tag] = action
    return out


def field_tag(name: str) -> int | None:
    """The tag a recipe field names (keyword, ``(gggg,eeee)`` or ``ggggeeee``), or None."""
    text = name.strip()
    if text.startswith("(") and '"' not in text:
        text = text.strip("()").replace(",", "")
    if len(text) == 8 and all(c in "0123456789abcdefABCDEF" for c in text):
        return int(text, 16)
    tag = tag_for_keyword(text)
    return int(tag) if tag is not None else None


@cache
def profile_table(directory: Path = PROFILES_DIR) -> dict[str, dict[str, Any]]:
    """The ``profiles.toml`` definitions."""
    try:
        data = tomllib.loads((directory / PROFILES_FILE).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {directory / PROFILES_FILE}: {exc}") from exc
    return dict(data)


def profile_names() -> list[str]:
    return list(profile_table())


@cache
def _layer(path: Path) -> tuple[Action, ...]:
    """The header actions of one recipe file, with the table code of each generated line."""
    parsed = load_deid(str(path))
    codes = _codes_from_comments(path)
    return tuple(
        Action(a["action"], a["field"], a.get("value"), codes.get(a["field"], ""))
        for a in parsed.get("header", [])
    )


def _codes_from_comments(path: Path) -> dict[str, str]:
    """Field -> Table E.1-1 code, read back from the generated comment above each line."""
    codes: dict[str, str] = {}
    rows = {row.display_tag: row for row in _load_table()}
    pending = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# (") and ": " in line:
            tag_text = line[2:13]
            code = line.split(": ", 1)[1].split(" ", 1)[0].rstrip(",")
            pending = code if tag_text in rows else ""
        elif pending and line and not line.startswith("#"):
            codes[line.split()[1]] = pending
            pending = ""
    return codes


def compose(
    name: str, extra_options: list[str] | tuple[str, ...] = (), directory: Path = PROFILES_DIR
) -> Profile:
    """The profile ``name`` with its own options plus ``extra_options``.

    Raises:
        ConfigError: unknown profile or option, or options that exclude each other.
    """
    table = profile_table(directory)
    if name not in table:
        raise ConfigError(f"unknown profile {name!r}; known: {', '.join(table)}")
    spec = table[name]
    options = list(dict.fromkeys([*spec.get("options", []), *extra_options]))
    for option in options:
        if option not in OPTIONS:
            raise ConfigError(f"unknown option {option!r}; known: {', '.join(OPTIONS)}")
    if all(o in options for o in EXCLUSIVE_OPTIONS):
        raise ConfigError(
            "retain-long-full-dates and retain-long-modified-dates exclude each other"
        )
    private = str(spec.get("private", "remove"))
    if private not in PRIVATE_POLICIES:
        raise ConfigError(f"profile {name}: private must be one of {PRIVATE_POLICIES}")
    recipes = [str(r) for r in spec.get("recipes", [])]
    if not recipes:
        raise ConfigError(f"profile {name} names no recipe")
    ordered = [OPTIONS[o].name for o in OPTIONS if o in options]  # PS3.15 E.3 order
    layers = [recipes[0], *[f"option-{o}.recipe" for o in ordered], *recipes[1:]]
    merged: dict[str, Action] = {}
    for layer in layers:
        for action in _layer(directory / layer):
            key = _field_key(action.field)
            merged.pop(key, None)  # a later layer wins and takes the later position
            merged[key] = action
    safe = load_safe_private(directory) if "retain-safe-private" in options else ()
    if private == "remove-all":
        safe = ()
    return Profile(
        name=name,
        description=str(spec.get("description", "")),
        options=tuple(ordered),
        private=private,
        anonymous=bool(spec.get("anonymous", False)) and not options_link(ordered),
        actions=tuple(merged.values()),
        safe_private=tuple(safe),
    )


def options_link(options: list[str] | tuple[str, ...]) -> bool:
    """Whether options keep something that links an object back to the person or its source
    (original UIDs or real dates), which an anonymous-only project refuses."""
    return "retain-uids" in options or "retain-long-full-dates" in options


def _field_key(name: str) -> str:
    tag = field_tag(name)
    return f"{tag:08X}" if tag is not None else name.upper()

"""The README documents every setting and every command (it is what operators read)."""

from __future__ import annotations

import re
from pathlib import Path

from vna.config import setting_docs

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_every_setting_is_in_the_readme_with_its_default() -> None:
    missing = []
    for name, (default, _doc) in setting_docs().items():
        row = next((line for line in README.splitlines() if line.startswith(f"| `{name}` ")), None)
        if row is None:
            missing.append(name)
        elif default and default not in row:
            missing.append(f"{name} (default {default})")
    assert missing == []


def test_every_command_is_in_the_readme() -> None:
    from typer.main import get_command

    from vna.cli import app

    group = get_command(app)
    names = sorted(group.commands)  # type: ignore[attr-defined]
    assert {"serve", "import", "find", "export", "verify", "stats"} <= set(names)
    missing = [n for n in names if not re.search(rf"`vna {re.escape(n)}[ `]", README)]
    assert missing == []


def test_quick_start_has_the_two_commands() -> None:
    quick = README.split("## Quick start", 1)[1].split("##", 1)[0]
    assert "make serve" in quick and "make test" in quick
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci

"""The dependency rule of ARCHITECTURE.md, checked by walking the imports with ast."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("vna", "dicomweb", "dimse", "storage")
# who may import whom; the `vna serve` command is the one place that imports front ends
ALLOWED = {
    "storage": set(),
    "vna": {"storage"},
    "dicomweb": {"vna", "storage"},
    "dimse": {"vna", "storage"},
}
SERVE_COMMAND = ROOT / "vna" / "cli" / "serve.py"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module":
            arg = node.args[0] if node.args else None
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found.add(arg.value.split(".")[0])
    return found


def test_packages_import_only_what_the_rule_allows() -> None:
    violations = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == SERVE_COMMAND:
                continue
            for imported in _imports(path) & set(PACKAGES):
                if imported != package and imported not in ALLOWED[package]:
                    violations.append(f"{path.relative_to(ROOT)} imports {imported}")
    assert violations == []


def test_the_rule_checker_sees_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from dicomweb.app import create_app\nimport dimse.server\n")
    assert _imports(bad) >= {"dicomweb", "dimse"}

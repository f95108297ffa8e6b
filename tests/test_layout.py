"""The architecture, checked: packages that must stand on their own import nothing of the tool around them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "eqc_enrich"

# package -> the modules of the tool it may import besides its own (the small shared error and duration types)
STANDALONE = {
    "eqc": {"eqc_enrich._errors"},
    "simulator": {"eqc_enrich._errors", "eqc_enrich._durations", "eqc_enrich.output"},
    # `index import/export` (_admin) reads and writes files and normalizes the keys it imports; what is kept
    # of a name for showing is bounded by the one rule of `_text`
    "store": {"eqc_enrich._errors", "eqc_enrich.keys", "eqc_enrich.read", "eqc_enrich.output", "eqc_enrich._text"},
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


@pytest.mark.parametrize("package", sorted(STANDALONE))
def test_a_standalone_package_imports_only_itself_and_the_shared_types(package: str) -> None:
    own = f"eqc_enrich.{package}"
    outside = {
        (path.name, module)
        for path in sorted((PACKAGE / package).rglob("*.py"))
        for module in imported_modules(path)
        if module.startswith("eqc_enrich") and not module.startswith(own) and module not in STANDALONE[package]
    }
    assert outside == set()


def test_the_layout_check_sees_a_forbidden_import(tmp_path: Path) -> None:
    planted = tmp_path / "m.py"
    planted.write_text("from eqc_enrich.settings import load_settings\nimport eqc_enrich.eqc._client\n")
    assert imported_modules(planted) == {"eqc_enrich.settings", "eqc_enrich.eqc._client"}

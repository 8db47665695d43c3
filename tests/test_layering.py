"""What may import what: the engine never imports a plugin, and reaches index kinds only through
their contract; index kinds use only the engine's leaf modules (errors, option parsing)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def imported_modules(package: str) -> dict[str, set[str]]:
    """Every module each file of ``package`` imports, at top level or inside functions."""
    found: dict[str, set[str]] = {}
    for path in sorted((REPO / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module)
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
        found[str(path.relative_to(REPO))] = names
    return found


def outside(package: str, prefix: str, allowed: set[str]) -> dict[str, list[str]]:
    """Per file of ``package``: imported names under ``prefix`` not within an allowed module."""

    def ok(name: str) -> bool:
        return any(name == a or name.startswith(a + ".") for a in allowed)

    found = {
        path: sorted(n for n in names if (n == prefix or n.startswith(prefix + ".")) and not ok(n))
        for path, names in imported_modules(package).items()
    }
    return {path: names for path, names in found.items() if names}


def test_no_engine_module_imports_a_plugin():
    assert outside("engine", "plugins", set()) == {}


def test_the_engine_reaches_index_kinds_only_through_the_contract():
    assert outside("engine", "indexes", {"indexes.base"}) == {}


def test_index_kinds_use_only_the_engine_leaf_modules():
    assert outside("indexes", "engine", {"engine.errors", "engine.options"}) == {}

"""The shape of the code (docs/architecture.md), held by tests so it cannot drift.

- The layers: entry points over services over storage over the core, never
  upward (import-linter's contract in pyproject.toml).
- No cycle: no two packages, at any depth, import each other (``identity`` and
  ``auth`` once did).
- Functions short enough to see whole: at most 70 lines, migrations aside.
- One package per area: at the top of ``tally`` only the settings, the error
  tree and the service wiring stand alone.
"""

from __future__ import annotations

import ast
import itertools
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "tally"
FUNCTION_LINES_MAX = 70
TOP_LEVEL_MODULES = {"__init__.py", "config.py", "errors.py", "services.py"}


def test_the_layers_hold() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def _packages(graph: grimp.ImportGraph) -> list[str]:
    return sorted(m for m in graph.modules if graph.find_children(m))


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("tally")


def _cycles(graph: grimp.ImportGraph) -> list[str]:
    """Pairs of siblings (packages or modules in one package) that import each
    other, directly or through other modules."""
    cycles = []
    for package in _packages(graph):
        children = sorted(graph.find_children(package))
        for a, b in itertools.combinations(children, 2):
            there = graph.chain_exists(a, b, as_packages=True)
            if there and graph.chain_exists(b, a, as_packages=True):
                cycles.append(f"{a} <-> {b}")
    return cycles


def test_no_two_sibling_packages_or_modules_import_each_other(graph: grimp.ImportGraph) -> None:
    cycles = _cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_an_upward_import_is_found_as_a_cycle() -> None:
    # The check above is only worth something if it can fail.
    graph = grimp.build_graph("tally")
    graph.add_import(importer="tally.core.model", imported="tally.api.app")
    assert "tally.api <-> tally.core" in _cycles(graph)


def _long_functions(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            assert node.end_lineno is not None
            lines = node.end_lineno - node.lineno + 1
            if lines > FUNCTION_LINES_MAX:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_no_function_is_longer_than_70_lines() -> None:
    sources = [p for p in SRC.rglob("*.py") if "migrations" not in p.parts]
    assert sources
    too_long = [f for p in sources for f in _long_functions(p)]
    assert not too_long, "\n".join(too_long)


def test_each_area_is_a_package() -> None:
    loose = {p.name for p in SRC.glob("*.py")} - TOP_LEVEL_MODULES
    assert not loose, f"modules outside any area: {sorted(loose)}"

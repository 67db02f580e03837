"""scripts/check_advisories.py's summary: it says plainly what each source audited,
names what neither did, and counts what was found (make security-scan prints it)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "check_advisories.py"


@pytest.fixture(scope="module")
def advisories() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_advisories", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Its dataclasses look their module up while the module runs.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_a_source_that_audited_nothing_says_so_and_why(
    advisories: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    packages = {"alpha": "1.0", "beta": "2.0"}
    skipped = advisories.Source("pip-audit", problem="it said: not found (2x)")
    pypi = advisories.Source("PyPI", audited={"alpha"})

    found, neither = advisories.report(packages, [skipped, pypi])

    out = capsys.readouterr().out
    assert "pip-audit: audited 0, could not audit 2; it said: not found (2x)" in out
    assert "PyPI: audited 1, could not audit 1" in out
    assert "NOT AUDITED by either source: beta 2.0" in out
    assert "known vulnerabilities found: 0" in out
    assert (found, neither) == (0, ["beta 2.0"])


def test_a_vulnerability_from_either_source_is_named_and_counted_once(
    advisories: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    packages = {"alpha": "1.0"}
    line = "alpha 1.0: GHSA-x"
    first = advisories.Source("pip-audit", audited={"alpha"}, vulnerable=[line])
    second = advisories.Source("PyPI", audited={"alpha"}, vulnerable=[line])

    found, neither = advisories.report(packages, [first, second])

    out = capsys.readouterr().out
    assert out.count(f"VULNERABLE {line}") == 1
    assert "known vulnerabilities found: 1" in out
    assert (found, neither) == (1, [])


def test_names_are_compared_in_their_canonical_form(advisories: ModuleType) -> None:
    assert advisories.canonical("Typing_Extensions") == advisories.canonical("typing-extensions")

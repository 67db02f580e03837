"""What the ``tally`` command imports before it knows which command runs: not
the lab's experiments, whose ledger one pulls in the whole HTTP app. Every
``tally`` run (``tenants create``, ``serve``, ``migrate``) would pay for them
at start: about 0.4 s of the 2.5 that ``tally tenants create`` took here.

In a fresh interpreter: this one has imported everything by now."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PROGRAM = """
import sys
from tally.cli import build
build()
heavy = ("tally.lab.ledger", "tally.lab.connections", "tally.api.app")
print(",".join(name for name in heavy if name in sys.modules))
"""


def test_building_the_command_imports_no_experiment_of_the_lab(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM],
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""

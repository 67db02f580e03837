"""What the serving process (``python -m tally.cli.serving``) keeps out of its
memory: the command line's libraries always, and gRPC's unless a gRPC port is
set. Each costs megabytes in every server process, which ten thousand event
streams have better use for (docs/events.md). tests/e2e/test_grpc.py serves
gRPC with a port set.

In a fresh interpreter: this one has imported everything by now."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PROGRAM = """
import sys
from tally.cli import serving
app = serving.app_factory()
heavy = ("grpc", "grpc_health", "grpc_reflection", "google.protobuf", "typer", "rich",
         "alembic", "sqlalchemy")
print(",".join(name for name in heavy if name in sys.modules))
"""


def test_the_serving_process_imports_neither_the_command_line_nor_grpc_without_a_port(
    tmp_path: Path,
) -> None:
    env = {"TALLY_DATABASE_URL": f"sqlite:///{tmp_path / 'tally.db'}", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM],
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""

"""``pip install tally`` (the client and the command line) works without the
server's dependencies: importing them must not reach for any of those.

The check runs in a fresh interpreter where the server's packages cannot be
imported, as on a machine that installed only ``tally[client]``.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

# Import names of pyproject's `server` extra.
SERVER_MODULES = [
    "starlette", "uvicorn", "httptools", "granian", "asyncpg", "alembic", "sqlalchemy", "psycopg",
    "pydantic_settings", "prometheus_client", "argon2", "jwt", "cryptography", "redis", "zxcvbn",
    "strawberry",
    "jinja2",
    # grpcio, protobuf (google.protobuf), reflection, health, status.
    "grpc", "google", "grpc_reflection", "grpc_health", "grpc_status",
    "hypercorn", "aioquic", "trustme",
]  # fmt: skip

PROGRAM = """
import importlib.abc, sys
BLOCKED = set(sys.argv[1].split(","))
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
        return None
sys.meta_path.insert(0, Block())
import tally.client, tally.client.errors
from tally.client import verify_webhook
from tally.cli import app
from typer.main import get_command
names = sorted(get_command(app).commands)
print(",".join(names))
"""


def test_the_server_extra_is_what_the_blocked_list_blocks() -> None:
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert len(extra["server"]) == len(SERVER_MODULES)


def test_the_client_and_its_commands_import_without_the_server() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, ",".join(SERVER_MODULES)],
        capture_output=True, text=True, timeout=60, check=False, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    commands = set(done.stdout.strip().split(","))
    assert {"accounts", "transfers", "events", "login", "import", "export"} <= commands
    # The server's commands say what to install instead of failing on an import.
    assert {"serve", "migrate"} <= commands

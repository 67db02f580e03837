"""The container image's entrypoint (deploy/container/entrypoint.sh), run outside a
container: the same script, the installed ``tally`` on its PATH, a real database.

No container engine is needed for these, so they run everywhere ``make test`` does
(this sandbox can build images only with a local base image: docs/deploy.md).
They prove what the image relies on: ``serve`` never migrates (the one-shot
``migrate`` does), the script execs so the server gets SIGTERM itself and stops
cleanly, and ``healthcheck`` tells a live server from a dead one. The
Containerfile is read too, for the promises it makes in text: non-root, a
healthcheck, two stages.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import TALLY, free_port, tally_env

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "deploy" / "container" / "entrypoint.sh"
CONTAINERFILE = ROOT / "deploy" / "container" / "Containerfile"
COMMAND_TIMEOUT_SECONDS = 60
READY_TIMEOUT_SECONDS = 30
STOP_TIMEOUT_SECONDS = 15


def entrypoint_env(database_url: str, **settings: str) -> dict[str, str]:
    env = tally_env(database_url, **settings)
    # As in the image: the environment's bin first on PATH.
    env["PATH"] = f"{TALLY.parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def run_entrypoint(
    database_url: str, *args: str, **settings: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(ENTRYPOINT), *args],
        env=entrypoint_env(database_url, **settings),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_SECONDS,
        check=False,
    )


@pytest.fixture
def sqlite_db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/entrypoint.db"


@pytest.fixture
def served(sqlite_db: str, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """``entrypoint.sh`` with no arguments (the image's CMD) on a migrated database."""
    assert run_entrypoint(sqlite_db, "migrate").returncode == 0
    port = free_port()
    env = entrypoint_env(sqlite_db, host="127.0.0.1", port=str(port))
    with (tmp_path / "serve.log").open("wb") as log:
        process = subprocess.Popen(
            ["sh", str(ENTRYPOINT)], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        wait_ready(process, port)
        yield process, port
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_SECONDS)


def wait_ready(process: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        assert process.poll() is None, "the server exited before it was ready"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"not ready on port {port} after {READY_TIMEOUT_SECONDS} s")


def test_serve_never_migrates_and_names_the_one_shot(sqlite_db: str) -> None:
    done = run_entrypoint(sqlite_db, "serve", port=str(free_port()))
    assert done.returncode == 1
    assert "tally migrate" in done.stderr


def test_the_default_command_serves_as_the_process_itself_and_stops_on_sigterm(
    served: tuple[subprocess.Popen[bytes], int], sqlite_db: str, tmp_path: Path
) -> None:
    process, port = served
    # A one-shot that is safe to run again, beside a running server.
    assert run_entrypoint(sqlite_db, "migrate").returncode == 0
    assert run_entrypoint(sqlite_db, "healthcheck", port=str(port)).returncode == 0
    # exec: the shell is gone and the server holds its pid, so a container's
    # SIGTERM reaches it (no shell swallowing it until the stop timeout's SIGKILL).
    # `tally serve` itself execs the lean server process (tally.cli.serving), which
    # keeps that pid too.
    cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes().split(b"\0")
    assert b"tally.cli.serving" in cmdline, cmdline
    process.send_signal(signal.SIGTERM)
    # uvicorn shuts down gracefully, then re-raises the signal it caught (so a
    # supervisor sees "ended by SIGTERM"); either way the lifespan finished.
    assert process.wait(timeout=STOP_TIMEOUT_SECONDS) in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in (tmp_path / "serve.log").read_text()
    dead = run_entrypoint(sqlite_db, "healthcheck", port=str(port))
    assert dead.returncode == 1
    assert "healthcheck:" in dead.stderr


def test_any_other_command_runs_as_given(sqlite_db: str) -> None:
    done = run_entrypoint(sqlite_db, "sh", "-c", "echo as given")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "as given\n"


def test_the_containerfile_builds_in_two_stages_and_runs_as_a_numbered_non_root_user() -> None:
    text = CONTAINERFILE.read_text()
    assert len(re.findall(r"^FROM ", text, re.MULTILINE)) == 2
    users = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert users == ["${TALLY_UID}:${TALLY_UID}"]
    uid = re.search(r"^ARG TALLY_UID=(\d+)$", text, re.MULTILINE)
    assert uid is not None
    assert int(uid.group(1)) >= 1000  # numeric: runAsNonRoot can verify it
    assert re.search(r"^HEALTHCHECK .*\n.*tally-entrypoint\", \"healthcheck\"", text, re.MULTILINE)
    assert 'ENTRYPOINT ["/usr/local/bin/tally-entrypoint"]' in text
    assert 'CMD ["serve"]' in text
    assert "compileall" in text  # nothing to write under a read-only root

"""Tally itself, run the way an operator runs it: the venv's ``tally`` command
(``migrate``, ``tenants create``, ``serve``), configured only by ``TALLY_*``
environment variables."""

from __future__ import annotations

import json
import os
import re
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx

from harness import procs

TALLY = Path(sys.executable).parent / "tally"
CLI_TIMEOUT_SECONDS = 120.0
READY_TIMEOUT_SECONDS = 60.0
READY_POLL_SECONDS = 0.1


def tally_env(database_url: str, pythonpath: str | None = None, **settings: str) -> dict[str, str]:
    """Our environment, less any stray TALLY_* setting, plus the given ones; with
    ``pythonpath``, Tally's code is imported from there (another commit's ``src``,
    bench/side_by_side.py)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLY_")}
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    env["TALLY_DATABASE_URL"] = database_url
    env["TALLY_LOG_LEVEL"] = "warning"
    # The benchmark drives the ledger through one API key: the per-key rate limit is
    # raised out of its way (the limiter still runs on every request, so its cost is
    # measured).
    env["TALLY_RATE_LIMIT_PER_SECOND"] = "1000000"
    env["TALLY_RATE_LIMIT_BURST"] = "1000000"
    for name, value in settings.items():
        env[f"TALLY_{name.upper()}"] = value
    return env


_SETTING = re.compile(r"[a-z][a-z0-9_]*")
# serve()'s own keyword arguments, which a setting must not shadow.
_NOT_SETTINGS = {"tls_ca", "pythonpath", "http_server"}


def parse_settings(items: list[str]) -> dict[str, str] | None:
    """``NAME=VALUE`` items (``--set``) as settings for serve(), by lower-case
    name; None if one is malformed or names one of serve()'s own arguments."""
    settings: dict[str, str] = {}
    for item in items:
        name, equals, value = item.partition("=")
        name = name.strip().lower()
        if not equals or not _SETTING.fullmatch(name) or name in _NOT_SETTINGS:
            return None
        settings[name] = value
    return settings


def _cli(database_url: str, *args: str, pythonpath: str | None = None) -> str:
    done = subprocess.run(
        [str(TALLY), *args],
        env=tally_env(database_url, pythonpath),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_SECONDS,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"tally {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def migrate(database_url: str, pythonpath: str | None = None) -> None:
    _cli(database_url, "migrate", pythonpath=pythonpath)


def create_tenant(database_url: str, name: str, pythonpath: str | None = None) -> tuple[str, str]:
    """``tally tenants create NAME --json``: (tenant_id, api_key)."""
    created = json.loads(
        _cli(database_url, "tenants", "create", name, "--json", pythonpath=pythonpath)
    )
    return created["tenant_id"], created["api_key"]


@dataclass(slots=True)
class Server:
    """A running ``tally serve`` (its own process group)."""

    proc: subprocess.Popen[Any]
    base_url: str
    log_path: Path
    log: IO[bytes]

    @property
    def pid(self) -> int:
        return self.proc.pid


def serve(
    children: procs.Children,
    database_url: str,
    workers: int,
    log_path: Path,
    http_server: str = "uvicorn",
    *,
    tls_ca: Path | None = None,
    pythonpath: str | None = None,
    **settings: str,
) -> Server:
    """Start ``tally serve --no-migrate --server HTTP_SERVER`` on a free port and wait
    for /readyz. ``settings`` become TALLY_* variables (``grpc_port="50051"``); with
    ``tls_ca`` (and the tls_cert and tls_key settings) it is https, checked against
    that CA."""
    port = procs.free_port()
    log = log_path.open("ab")
    proc = children.start(
        [
            str(TALLY), "serve", "--host", "127.0.0.1", "--port", str(port),
            "--workers", str(workers), "--no-migrate", "--server", http_server,
        ],
        env=tally_env(database_url, pythonpath, **settings),
        log=log,
    )  # fmt: skip
    scheme = "https" if tls_ca is not None else "http"
    server = Server(proc, f"{scheme}://127.0.0.1:{port}", log_path, log)
    verify: ssl.SSLContext | bool = True
    if tls_ca is not None:
        verify = ssl.create_default_context(cafile=str(tls_ca))
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            ready = httpx.get(f"{server.base_url}/readyz", timeout=1.0, verify=verify)
            if ready.status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(READY_POLL_SECONDS)
    children.stop(proc)
    log.close()
    raise RuntimeError(f"tally serve did not become ready:\n{procs.tail(log_path)}")


def stop(children: procs.Children, server: Server) -> None:
    children.stop(server.proc)
    server.log.close()


def log_problems(log_path: Path) -> dict[str, Any]:
    """What the server logged that it should not have: tracebacks and errors."""
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return {"tracebacks": 0, "error_lines": 0, "samples": []}
    lines = text.splitlines()
    errors = [line for line in lines if line.startswith("ERROR") or " ERROR " in line]
    return {
        "tracebacks": text.count("Traceback (most recent call last)"),
        "error_lines": len(errors),
        "samples": (errors + _exceptions(lines))[:5],
    }


def _exceptions(lines: list[str]) -> list[str]:
    """The line that names the exception at the end of each logged traceback.

    A traceback's frames are indented; the first unindented line after the header
    is ``SomeError: message``, which is what a reader needs to start looking.
    """
    found = []
    inside = False
    for line in lines:
        if line.startswith("Traceback (most recent call last)"):
            inside = True
        elif inside and line and not line.startswith(" "):
            found.append(line)
            inside = False
    return found

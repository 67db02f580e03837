"""End-to-end harness: the real ``tally`` command, a real server process, real HTTP.

Nothing here runs the application in the test's process (it reads one constant
of it, the server's keep-alive timeout). Tests run the installed CLI the way an
operator would (``tally serve``, ``tally migrate``, ``tally tenants create``) and
talk to the server over a socket, so what they prove is what a deployment gets.

Every server runs in its own session (process group): ``tally serve --workers N``
forks uvicorn worker processes, and ending only the parent could leave them
serving on the port. Teardown signals the whole group, SIGTERM then SIGKILL,
each step bounded in time.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest

from tally.cli.transport import KEEP_ALIVE_SECONDS
from tests.conftest import fresh_postgres_database

TALLY = Path(sys.executable).parent / "tally"

READY_TIMEOUT_SECONDS = 30.0
READY_POLL_SECONDS = 0.1
# uvicorn waits up to 10 s (timeout_graceful_shutdown) for requests in flight.
STOP_TIMEOUT_SECONDS = 15.0
KILL_TIMEOUT_SECONDS = 5.0
CLI_TIMEOUT_SECONDS = 60.0
LOG_TAIL_BYTES = 8_000
PAGE_LIMIT = 1000  # the contract's largest page
PAGES_MAX = 1_000  # a bound on every walk: a million items
LOAD_RATE_PER_SECOND = 1_000_000
# A pooled connection idle this long is given up, well before the server's own
# keep-alive timeout: otherwise, on a starved machine, a request can leave on a
# connection the server is closing that moment (a ReadError for a request it
# never read). httpx's default, 5 s, is the server's.
CLIENT_KEEP_ALIVE_SECONDS = KEEP_ALIVE_SECONDS / 5


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The end-to-end servers' own database, apart from the rest of the run's.

    They run on the wall clock. In-process apps elsewhere in the run move a
    FakeClock days ahead, and their idempotency purge, which deletes the keys
    expired by *its* clock, emptied this database's keys under the crash test
    (found in CI: retries after a final answer executed again). One clock per
    database, as in production.
    """
    yield from fresh_postgres_database()


def tally_env(database_url: str, **settings: str) -> dict[str, str]:
    """The environment of a child ``tally``: ours, minus any stray TALLY_* settings,
    plus the database and the given settings (``log_level="warning"`` becomes
    ``TALLY_LOG_LEVEL=warning``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLY_")}
    env["TALLY_DATABASE_URL"] = database_url
    # These tests load the ledger with one API key on purpose: the per-key limit is
    # raised out of their way (it still runs); tests/security tests the limits.
    env["TALLY_RATE_LIMIT_PER_SECOND"] = str(LOAD_RATE_PER_SECOND)
    env["TALLY_RATE_LIMIT_BURST"] = str(LOAD_RATE_PER_SECOND)
    # TALLY_TEST_HTTP_SERVER=granian runs these servers under granian instead of
    # the default (tally serve --server): the suite is how a server earns the default.
    if os.environ.get("TALLY_TEST_HTTP_SERVER"):
        env["TALLY_HTTP_SERVER"] = os.environ["TALLY_TEST_HTTP_SERVER"]
    for name, value in settings.items():
        env[f"TALLY_{name.upper()}"] = value
    return env


def run_tally(
    database_url: str, *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run one ``tally`` command to completion (bounded in time)."""
    return subprocess.run(
        [str(TALLY), *args],
        env=tally_env(database_url),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_SECONDS,
        check=False,
    )


def cli_create_tenant(database_url: str, name: str) -> tuple[str, str]:
    """``tally tenants create NAME --json``: returns (tenant_id, api_key)."""
    done = run_tally(database_url, "tenants", "create", name, "--json")
    assert done.returncode == 0, done.stderr
    created = json.loads(done.stdout)
    return created["tenant_id"], created["api_key"]


async def walk(client: httpx.AsyncClient, path: str, **query: str) -> list[dict[str, Any]]:
    """Every item of a list endpoint, following ``next_cursor``, in bounded pages."""
    items: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": PAGE_LIMIT, **query}
    for _ in range(PAGES_MAX):
        response = await client.get(path, params=params)
        assert response.status_code == 200, (path, params, response.text)
        page = response.json()
        items += page["data"]
        if not page["has_more"]:
            return items
        assert page["next_cursor"], page
        params = {"limit": PAGE_LIMIT, **query, "cursor": page["next_cursor"]}
    raise AssertionError(f"{path}: more than {PAGES_MAX} pages")


def pooled(connections: int) -> httpx.Limits:
    """A client's pool of at most ``connections``, each kept open between requests
    for CLIENT_KEEP_ALIVE_SECONDS."""
    return httpx.Limits(
        max_connections=connections,
        max_keepalive_connections=connections,
        keepalive_expiry=CLIENT_KEEP_ALIVE_SECONDS,
    )


def free_port() -> int:
    """A port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Server:
    base_url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, size_bytes: int = LOG_TAIL_BYTES) -> str:
        """The end of the server's combined stdout and stderr."""
        try:
            data = self.log_path.read_bytes()
        except OSError as exc:
            return f"<no log: {exc}>"
        return data[-size_bytes:].decode("utf-8", "replace")

    def log_text(self) -> str:
        return self.log_path.read_bytes().decode("utf-8", "replace")


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    # The group id is the child's pid (start_new_session=True). The group can
    # outlive its leader (orphaned workers), so signal it even after the leader exits.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_server(server: Server) -> None:
    """SIGTERM the whole group, wait (bounded), then SIGKILL what is left."""
    process = server.process
    _signal_group(process, signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        _signal_group(process, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=KILL_TIMEOUT_SECONDS)
    # The leader is gone; its workers got the same SIGTERM. Give them a moment,
    # then make sure none of the group keeps running.
    deadline = time.monotonic() + KILL_TIMEOUT_SECONDS
    while _group_alive(process.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    _signal_group(process, signal.SIGKILL)


def _wait_ready(server: Server, tls_ca: Path | None = None) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    last_error = "no answer yet"
    verify: ssl.SSLContext | bool = True
    if tls_ca is not None:
        verify = ssl.create_default_context(cafile=str(tls_ca))
    with httpx.Client(base_url=server.base_url, timeout=2.0, verify=verify) as client:
        while time.monotonic() < deadline:
            code = server.process.poll()
            if code is not None:
                raise AssertionError(
                    f"tally serve exited with {code} before it was ready:\n{server.log_tail()}"
                )
            try:
                response = client.get("/readyz")
                if response.status_code == 200:
                    return
                last_error = f"{response.status_code} {response.text[:200]}"
            except httpx.HTTPError as exc:
                last_error = repr(exc)
            time.sleep(READY_POLL_SECONDS)
    raise AssertionError(
        f"tally serve not ready after {READY_TIMEOUT_SECONDS} s ({last_error}):\n"
        f"{server.log_tail()}"
    )


@contextlib.contextmanager
def tally_server(
    database_url: str,
    log_path: Path,
    *,
    workers: int = 1,
    migrate: bool = True,
    port: int | None = None,
    tls_ca: Path | None = None,
    options: tuple[str, ...] = (),
    **settings: str,
) -> Iterator[Server]:
    """``tally serve`` on a free 127.0.0.1 port (or ``port``: a restart where the
    last one served), ready (``/readyz`` is 200) when yielded and always stopped
    afterwards, workers included. ``options``: more of serve's options. With
    ``tls_ca`` (and the ``tls_cert`` and ``tls_key`` settings) it serves https,
    checked against that CA."""
    port = port or free_port()
    args = [str(TALLY), "serve", "--host", "127.0.0.1", "--port", str(port)]
    args += ["--workers", str(workers), *options]
    if not migrate:
        args.append("--no-migrate")
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            args,
            env=tally_env(database_url, **settings),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    scheme = "https" if tls_ca is not None else "http"
    server = Server(f"{scheme}://127.0.0.1:{port}", process, log_path)
    try:
        _wait_ready(server, tls_ca)
        yield server
    finally:
        stop_server(server)


class StartServer(Protocol):
    def __call__(
        self,
        database_url: str,
        *,
        workers: int = 1,
        migrate: bool = True,
        port: int | None = None,
        tls_ca: Path | None = None,
        **settings: str,
    ) -> Server: ...


_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report: pytest.TestReport = yield
    if report.failed:
        item.stash[_FAILED] = True
    return report


@pytest.fixture
def start_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StartServer]:
    """Start ``tally serve`` processes; every one is stopped when the test ends.

    When the test failed, or a server logged a traceback, the end of each
    server's log is printed: that is where a server-side error shows.
    """
    servers: list[Server] = []
    with contextlib.ExitStack() as stack:

        def start(
            database_url: str,
            *,
            workers: int = 1,
            migrate: bool = True,
            port: int | None = None,
            tls_ca: Path | None = None,
            **settings: str,
        ) -> Server:
            log_path = tmp_path / f"tally-serve-{len(servers)}.log"
            server = stack.enter_context(
                tally_server(
                    database_url,
                    log_path,
                    workers=workers,
                    migrate=migrate,
                    port=port,
                    tls_ca=tls_ca,
                    **settings,
                )
            )
            servers.append(server)
            return server

        yield start
    failed = request.node.stash.get(_FAILED, False)
    for server in servers:
        if failed or "Traceback" in server.log_text():
            print(f"\n--- log of tally serve at {server.base_url} ---\n{server.log_tail()}")

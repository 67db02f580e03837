"""Faults for end-to-end tests: servers killed with SIGKILL, a PostgreSQL crashed.

``ChaosServer`` is ``tally serve`` in its own session on a fixed port, killed with
SIGKILL (the whole process group, or one uvicorn worker, which the supervisor
replaces) and started again on the same port.

``PrivatePostgres`` is a PostgreSQL cluster of the test's own, made with
``initdb`` in a temporary directory on a free port, so that a test may stop it in
immediate mode (a crash: no checkpoint, crash recovery on start) without touching
the machine's shared server that other test runs use at the same time. The
PostgreSQL programs refuse to run as root; a test running as root runs them as
the ``postgres`` OS user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import random
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import psycopg

from tests.e2e.conftest import TALLY, Server, free_port, stop_server, tally_env

READY_TIMEOUT_SECONDS = 30.0
READY_POLL_SECONDS = 0.05
KILL_WAIT_SECONDS = 5.0
START_ATTEMPTS = 3
LOG_TAIL_BYTES = 8_000


# -- tally serve, killed and restarted on one port ------------------------------------


def _group_processes(pgid: int) -> dict[int, tuple[str, int]]:
    """Each process of the group: its state letter (Z: a zombie) and its parent."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
            if int(fields[2]) == pgid:
                found[int(entry.name)] = (fields[0], int(fields[1]))
    return found


def _is_worker(pid: int, master: int) -> bool:
    """A uvicorn worker is a multiprocessing child (``spawn_main``); a granian worker
    (``tally serve --server granian``) is forked, so its command line is the
    master's own. The group also holds multiprocessing's resource tracker, which
    serves nothing."""
    try:
        cmdline = (Path("/proc") / str(pid) / "cmdline").read_bytes()
        return (
            b"spawn_main" in cmdline
            or cmdline == (Path("/proc") / str(master) / "cmdline").read_bytes()
        )
    except OSError:
        return False


class ChaosServer:
    """``tally serve`` in its own session on a fixed port, SIGKILLed and restarted."""

    def __init__(
        self, database_url: str, log_path: Path, *, workers: int = 2, **settings: str
    ) -> None:
        self.database_url = database_url
        self.log_path = log_path
        self.workers = workers
        self.settings = settings
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.processes: list[subprocess.Popen[bytes]] = []
        self.restart_seconds: list[float] = []

    @property
    def current(self) -> subprocess.Popen[bytes]:
        return self.processes[-1]

    def log_text(self) -> str:
        try:
            return self.log_path.read_bytes().decode("utf-8", "replace")
        except OSError as exc:
            return f"<no log: {exc}>"

    def log_tail(self, size_bytes: int = LOG_TAIL_BYTES) -> str:
        return self.log_text()[-size_bytes:]

    def _spawn(self) -> subprocess.Popen[bytes]:
        args = [str(TALLY), "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        args += ["--workers", str(self.workers)]
        with self.log_path.open("ab") as log:
            log.write(f"\n=== tally serve started at {time.time():.3f} ===\n".encode())
            log.flush()
            process = subprocess.Popen(
                args,
                env=tally_env(self.database_url, **self.settings),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append(process)
        return process

    def _ready(self, process: subprocess.Popen[bytes]) -> bool:
        """Wait for /readyz; False if the process exited first (e.g. port still taken)."""
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        with httpx.Client(base_url=self.base_url, timeout=2.0) as client:
            while time.monotonic() < deadline:
                if process.poll() is not None:
                    return False
                with contextlib.suppress(httpx.HTTPError):
                    if client.get("/readyz").status_code == 200:
                        return True
                time.sleep(READY_POLL_SECONDS)
        raise AssertionError(
            f"tally serve not ready after {READY_TIMEOUT_SECONDS} s:\n{self.log_tail()}"
        )

    def start(self) -> None:
        started = time.monotonic()
        for _ in range(START_ATTEMPTS):
            process = self._spawn()
            if self._ready(process):
                self.restart_seconds.append(time.monotonic() - started)
                return
            time.sleep(0.5)
        raise AssertionError(
            f"tally serve exited {START_ATTEMPTS} times before it was ready:\n{self.log_tail()}"
        )

    def kill(self) -> None:
        """SIGKILL the whole group (master and workers), and wait until none of it
        runs any more, so nothing is left holding the port or a transaction."""
        process = self.current
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=KILL_WAIT_SECONDS)
        deadline = time.monotonic() + KILL_WAIT_SECONDS
        while time.monotonic() < deadline:
            if all(state == "Z" for state, _ in _group_processes(process.pid).values()):
                return
            time.sleep(0.05)
        raise AssertionError(
            f"the process group {process.pid} survived SIGKILL: {_group_processes(process.pid)}"
        )

    def workers_alive(self) -> list[int]:
        master = self.current.pid
        return sorted(
            pid
            for pid, (state, parent) in _group_processes(master).items()
            if parent == master and state != "Z" and _is_worker(pid, master)
        )

    def kill_worker(self, rng: random.Random) -> int:
        """SIGKILL one worker; the server's supervisor starts another in its place.
        Returns the pid killed."""
        workers = self.workers_alive()
        assert workers, f"no worker to kill in group {self.current.pid}"
        victim = rng.choice(workers)
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)
        return victim

    def wait_workers(self, timeout_seconds: float = READY_TIMEOUT_SECONDS) -> None:
        """Until the supervisor has replaced every worker (bounded)."""
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            if len(self.workers_alive()) >= self.workers:
                return
            time.sleep(0.1)
        raise AssertionError(
            f"the server did not replace a killed worker in {timeout_seconds} s:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """The current server: SIGTERM, then SIGKILL (conftest's way); the killed
        ones: SIGKILL again, in case anything of theirs is left."""
        for process in self.processes[:-1]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
        if self.processes:
            stop_server(Server(self.base_url, self.current, self.log_path))


# -- a PostgreSQL cluster of the test's own -------------------------------------------

PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"
PG_OS_USER = "postgres"
PG_CTL_TIMEOUT_SECONDS = 60
PG_COMMAND_TIMEOUT_SECONDS = 90.0
# Settings of the private cluster. fsync and synchronous_commit stay on (the
# defaults, written down because the test relies on them): an acknowledged commit
# must survive the crash.
PG_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "max_connections": "60",
    "shared_buffers": "32MB",
    "logging_collector": "off",
    "log_min_messages": "warning",
}


def _version_key(path: str) -> tuple[int, ...]:
    parts = Path(path).parent.name.split(".")
    return tuple(int(p) for p in parts if p.isdigit())


def postgres_bindir() -> Path | None:
    """The newest installed PostgreSQL's programs (Debian keeps them off PATH)."""
    found = sorted(glob.glob(PG_BIN_GLOB), key=_version_key)
    if found:
        return Path(found[-1])
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).parent if pg_ctl else None


def private_postgres_unavailable() -> str | None:
    """Why a private cluster cannot be made here, or None if it can."""
    bindir = postgres_bindir()
    if bindir is None or not (bindir / "initdb").exists():
        return "no PostgreSQL server programs (initdb, pg_ctl) installed"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(PG_OS_USER)
        except KeyError:
            return f"running as root and there is no {PG_OS_USER!r} OS user to run PostgreSQL"
    return None


class PrivatePostgres:
    """A throwaway PostgreSQL cluster on 127.0.0.1 and a free port, trust auth."""

    def __init__(self) -> None:
        bindir = postgres_bindir()
        assert bindir is not None
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="tally-private-pg-"))
        self.data_dir = self.root / "data"
        self.log_path = self.root / "postgres.log"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/tally"
        if os.geteuid() == 0:
            user = pwd.getpwnam(PG_OS_USER)
            os.chown(self.root, user.pw_uid, user.pw_gid)

    def _run(self, program: str, *args: str) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / program), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", PG_OS_USER, "--", *command]
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=PG_COMMAND_TIMEOUT_SECONDS,
            check=False,
            cwd=self.root,
        )
        assert done.returncode == 0, (
            f"{program} {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n"
            f"{done.stderr}\n{self.log_tail()}"
        )
        return done

    def log_tail(self, size_bytes: int = LOG_TAIL_BYTES) -> str:
        try:
            return self.log_path.read_bytes()[-size_bytes:].decode("utf-8", "replace")
        except OSError as exc:
            return f"<no PostgreSQL log: {exc}>"

    def _pg_ctl(self, *args: str) -> None:
        common = ["-D", str(self.data_dir), "-w", "-t", str(PG_CTL_TIMEOUT_SECONDS)]
        self._run("pg_ctl", *common, *args)

    def create(self) -> None:
        """initdb, configure, start, and make the ``tally`` database."""
        # --no-sync: only initdb's own final flush is skipped (the machine does not
        # crash in this test, only PostgreSQL does); the server itself runs with fsync.
        self._run(
            "initdb", "-D", str(self.data_dir), "-U", "postgres", "--auth=trust",
            "-E", "UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip
        settings = {
            **PG_SETTINGS,
            "port": str(self.port),
            "unix_socket_directories": f"'{self.root}'",
        }
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n# tests/e2e/chaos.py\n")
            conf.writelines(f"{name} = {value}\n" for name, value in settings.items())
        self.start()
        admin = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
            conn.execute("CREATE DATABASE tally")

    def start(self) -> None:
        self._pg_ctl("-l", str(self.log_path), "start")

    def stop_immediately(self) -> None:
        """A crash as PostgreSQL sees it: every backend ends at once, no checkpoint;
        the next start runs crash recovery from the write-ahead log."""
        self._pg_ctl("-m", "immediate", "stop")

    def restart_immediately(self) -> None:
        self._pg_ctl("-m", "immediate", "-l", str(self.log_path), "restart")

    def destroy(self) -> None:
        """Stop it if it runs (bounded) and remove every file of it."""
        if (self.data_dir / "postmaster.pid").exists():
            with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
                self._pg_ctl("-m", "immediate", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

"""Child processes that are always cleaned up, and psutil sampling of CPU and memory.

Every child runs in its own session (process group): ``tally serve --workers N``
forks worker processes, and ending only the parent could leave them serving.
``stop`` signals the whole group, SIGTERM then SIGKILL, each step bounded in time,
and ``Children.stop_all`` runs on every exit path (``finally``, SIGTERM, SIGINT).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil

STOP_TIMEOUT_SECONDS = 15.0  # uvicorn waits up to 10 s for requests in flight
KILL_TIMEOUT_SECONDS = 5.0
SAMPLE_INTERVAL_SECONDS = 0.2


class Children:
    """The processes this run started; ``stop_all`` ends each one's group."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[Any]] = []
        self._lock = threading.Lock()

    def start(
        self, argv: list[str], *, env: dict[str, str] | None = None, log: IO[Any] | None = None
    ) -> subprocess.Popen[Any]:
        proc = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log if log is not None else subprocess.DEVNULL,
            stderr=subprocess.STDOUT if log is not None else subprocess.DEVNULL,
            start_new_session=True,
        )
        with self._lock:
            self._procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[Any]) -> None:
        """SIGTERM the process group, wait; SIGKILL it if it is still there."""
        for sig, timeout in ((signal.SIGTERM, STOP_TIMEOUT_SECONDS), (signal.SIGKILL, None)):
            if proc.poll() is not None and not _group_alive(proc.pid):
                break
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=timeout or KILL_TIMEOUT_SECONDS)
                if timeout is not None:
                    _wait_group_gone(proc.pid, KILL_TIMEOUT_SECONDS)
        with self._lock:
            if proc in self._procs:
                self._procs.remove(proc)

    def stop_all(self) -> None:
        with self._lock:
            procs = list(reversed(self._procs))
        for proc in procs:
            self.stop(proc)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _wait_group_gone(pgid: int, timeout_seconds: float) -> None:
    deadline = time.monotonic() + timeout_seconds
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)


def wait_exited(proc: subprocess.Popen[Any], timeout_seconds: float) -> bool:
    """Wait until ``proc`` has exited but leave it unreaped (a zombie), so that
    psutil can still read its final CPU times. False if it is still running."""
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is not None:
            return True
        time.sleep(0.05)
    return False


def free_port() -> int:
    """A port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# -- sampling ----------------------------------------------------------------------


@dataclass(slots=True)
class GroupUsage:
    """One group's CPU over a window and its peak memory (sum over its processes)."""

    cpu_seconds: float = 0.0
    memory_bytes_peak: int = 0
    processes_max: int = 0

    def as_dict(self, wall_seconds: float) -> dict[str, Any]:
        return {
            "cpu_seconds": round(self.cpu_seconds, 3),
            # 100 = one core busy for the whole window; this machine has os.cpu_count().
            "cpu_percent": round(100.0 * self.cpu_seconds / wall_seconds, 1)
            if wall_seconds > 0
            else 0.0,
            "memory_mib_peak": round(self.memory_bytes_peak / 2**20, 1),
            "processes_max": self.processes_max,
        }


Finder = Callable[[], list[psutil.Process]]


@dataclass(slots=True)
class _Group:
    find: Finder
    # Private memory (RSS less shared pages) for PostgreSQL, whose backends all map
    # the same shared buffers: summing their RSS would count those many times.
    private_memory: bool
    first: dict[int, float] = field(default_factory=dict)
    last: dict[int, float] = field(default_factory=dict)
    rss_peak: dict[int, int] = field(default_factory=dict)
    names: dict[int, str] = field(default_factory=dict)
    usage: GroupUsage = field(default_factory=GroupUsage)

    def processes(self) -> list[dict[str, Any]]:
        """Each process's own figures (the server's supervisor and each worker)."""
        return [
            {
                "pid": pid,
                "name": self.names.get(pid, "?"),
                "cpu_seconds": round(self.last[pid] - self.first[pid], 3),
                "memory_mib_peak": round(self.rss_peak.get(pid, 0) / 2**20, 1),
            }
            for pid in sorted(self.last)
        ]


class Sampler:
    """Samples named groups of processes every 0.2 s between ``start`` and ``stop``.

    A process's CPU in the window is its last sample less its first; one born
    inside the window counts from zero. Memory is the peak over samples of the
    group's summed RSS (private memory for PostgreSQL)."""

    def __init__(self, groups: dict[str, tuple[Finder, bool]]) -> None:
        self._groups = {name: _Group(find, private) for name, (find, private) in groups.items()}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._started_at = 0.0
        self._machine_start = psutil.cpu_times()
        self.wall_seconds = 0.0

    def start(self, since: float | None = None) -> None:
        """``since``: when the window began (before the measured process started)."""
        self._started_at = since if since is not None else time.time()
        self._machine_start = psutil.cpu_times()
        self._sample()
        self._thread.start()

    def stop(self) -> dict[str, dict[str, Any]]:
        self._stop.set()
        self._thread.join(timeout=10)
        self._sample()
        self.wall_seconds = time.time() - self._started_at
        out = {}
        for name, group in self._groups.items():
            group.usage.cpu_seconds = sum(group.last[pid] - group.first[pid] for pid in group.last)
            out[name] = group.usage.as_dict(self.wall_seconds)
            if not group.private_memory:  # PostgreSQL's backends: the aggregate only
                out[name]["processes"] = group.processes()
        out["machine"] = {"cpu_percent": self._machine_cpu_percent()}
        return out

    def _machine_cpu_percent(self) -> float:
        """Every process on the machine (other people's tests too), in the same unit:
        100 = one core busy."""
        busy = _busy_seconds(psutil.cpu_times()) - _busy_seconds(self._machine_start)
        return round(100.0 * busy / self.wall_seconds, 1) if self.wall_seconds > 0 else 0.0

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL_SECONDS):
            self._sample()

    def _sample(self) -> None:
        for group in self._groups.values():
            memory = 0
            procs = 0
            for proc in _safe(group.find):
                try:
                    with proc.oneshot():
                        times = proc.cpu_times()
                        info = proc.memory_info()
                        born = proc.create_time()
                        group.names.setdefault(proc.pid, proc.name())
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    continue
                cpu = times.user + times.system
                if proc.pid not in group.first:
                    group.first[proc.pid] = 0.0 if born >= self._started_at - 0.01 else cpu
                group.last[proc.pid] = cpu
                procs += 1
                rss = info.rss
                group.rss_peak[proc.pid] = max(group.rss_peak.get(proc.pid, 0), rss)
                memory += max(rss - info.shared, 0) if group.private_memory else rss
            group.usage.memory_bytes_peak = max(group.usage.memory_bytes_peak, memory)
            group.usage.processes_max = max(group.usage.processes_max, procs)


def _busy_seconds(times: Any) -> float:
    """CPU seconds the whole machine spent not idle (nor waiting for I/O)."""
    names = ("user", "nice", "system", "irq", "softirq", "steal")
    return float(sum(getattr(times, name, 0.0) for name in names))


def _safe(find: Finder) -> Iterator[psutil.Process]:
    try:
        yield from find()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return


def tree(pid: int) -> Finder:
    """A process and all its descendants (the tally server and its workers)."""

    def find() -> list[psutil.Process]:
        try:
            root = psutil.Process(pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    return find


def single(pid: int) -> Finder:
    """One process (wrk, pgbench), zombie included: its final CPU times stay readable."""

    def find() -> list[psutil.Process]:
        try:
            return [psutil.Process(pid)]
        except psutil.NoSuchProcess:
            return []

    return find


_PG_AUXILIARY = (
    "checkpointer",
    "background writer",
    "walwriter",
    "autovacuum launcher",
    "logical replication launcher",
)


def postgres(postmaster_pid: int, database: str) -> Finder:
    """The PostgreSQL processes working for ``database``: its backends (and
    autovacuum workers), the postmaster and the shared auxiliary processes (WAL
    writer, checkpointer...). Other databases' backends (other people's tests on
    this machine) are left out."""
    marker = f" {database} "

    def find() -> list[psutil.Process]:
        try:
            postmaster = psutil.Process(postmaster_pid)
            children = postmaster.children()
        except psutil.NoSuchProcess:
            return []
        found = [postmaster]
        for child in children:
            try:
                title = " ".join(child.cmdline()) + " "
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            if marker in title or any(title.rstrip().endswith(a) for a in _PG_AUXILIARY):
                found.append(child)
        return found

    return find


def tail(path: Path, size_bytes: int = 4000) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(f.tell() - size_bytes, 0))
            return f.read().decode(errors="replace")
    except OSError:
        return ""

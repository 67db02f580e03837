"""The local PostgreSQL: throwaway databases, and pgbench TPC-B as the yardstick.

pgbench's TPC-B-like script (three UPDATEs, a SELECT and an INSERT per
transaction) on the same server, with fsync and synchronous_commit on, is what
"one small durable transaction per request" costs here. Tally's figures are read
as ratios to it.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

from harness import procs
from tally.config import Settings
from tally.storage.schema import migrate

CONNECT_TIMEOUT_SECONDS = 10
PGBENCH_INIT_TIMEOUT_SECONDS = 300.0
PGBENCH_RUN_GRACE_SECONDS = 60.0  # beyond -T: connecting, the vacuum before the run

_TPS = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)", re.MULTILINE)
_PROCESSED = re.compile(r"number of transactions actually processed: (\d+)")
_FAILED = re.compile(r"number of failed transactions: (\d+)")


@dataclass(frozen=True, slots=True)
class Server:
    """A PostgreSQL server, reached through an administrative URL."""

    admin_url: str

    @property
    def _parts(self) -> Any:
        return urlsplit(self.admin_url)

    @property
    def host(self) -> str:
        return str(self._parts.hostname or "127.0.0.1")

    @property
    def port(self) -> int:
        return int(self._parts.port or 5432)

    @property
    def user(self) -> str:
        return str(self._parts.username or "postgres")

    def url_for(self, database: str) -> str:
        p = self._parts
        return urlunsplit((p.scheme, p.netloc, f"/{database}", "", ""))

    def _admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(
            self.admin_url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS
        )

    def create_database(self, prefix: str) -> str:
        name = f"{prefix}_{secrets.token_hex(4)}"
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    @contextlib.contextmanager
    def migrated_database(self, prefix: str) -> Iterator[str]:
        """A throwaway database at this version's schema: its URL, dropped after."""
        name = self.create_database(prefix)
        try:
            url = self.url_for(name)
            migrate(Settings(database_url=url))
            yield url
        finally:
            self.drop_database(name)

    def postmaster_pid(self) -> int:
        """The postmaster is the parent of every backend, ours included."""
        with self._admin() as conn:
            row = conn.execute("SELECT pg_backend_pid()").fetchone()
            assert row is not None
            # While the connection is open: a backend gone already has no parent to ask.
            return int(procs.psutil.Process(int(row[0])).ppid())

    def settings(self) -> dict[str, str]:
        names = (
            "server_version",
            "fsync",
            "synchronous_commit",
            "shared_buffers",
            "max_connections",
        )
        out = {}
        with self._admin() as conn:
            for name in names:
                row = conn.execute(f"SHOW {name}").fetchone()
                out[name] = str(row[0]) if row else ""
        return out

    def pgbench_argv(self, *args: str) -> list[str]:
        return ["pgbench", "-h", self.host, "-p", str(self.port), "-U", self.user, *args]


def pgbench_init(server: Server, database: str, scale: int, log: Path) -> float:
    """``pgbench -i -s SCALE``: seconds it took."""
    started = time.monotonic()
    with log.open("ab") as out:
        subprocess.run(
            server.pgbench_argv("-i", "-q", "-s", str(scale), database),
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=PGBENCH_INIT_TIMEOUT_SECONDS,
            check=True,
        )
    return round(time.monotonic() - started, 2)


def pgbench_run(
    server: Server,
    children: procs.Children,
    *,
    database: str,
    clients: int,
    duration_seconds: int,
    postmaster_pid: int,
    work_dir: Path,
) -> dict[str, Any]:
    """One pgbench TPC-B run: tps, latency percentiles (from its per-transaction
    log), and CPU and memory of pgbench and of PostgreSQL's processes."""
    threads = min(clients, 2)
    prefix = work_dir / f"pgbench-txlog-c{clients}"
    log = work_dir / f"pgbench-c{clients}.out"
    argv = server.pgbench_argv(
        "-c", str(clients), "-j", str(threads), "-T", str(duration_seconds),
        "-l", "--log-prefix", str(prefix), database,
    )  # fmt: skip
    sampler: procs.Sampler | None = None
    with log.open("wb") as out:
        started = time.time()
        proc = children.start(argv, log=out)
        sampler = procs.Sampler(
            {
                "postgres": (procs.postgres(postmaster_pid, database), True),
                "pgbench": (procs.single(proc.pid), False),
            }
        )
        sampler.start(since=started)
        exited = procs.wait_exited(proc, duration_seconds + PGBENCH_RUN_GRACE_SECONDS)
        usage = sampler.stop()
        children.stop(proc)
    text = log.read_text(errors="replace")
    if not exited or proc.returncode != 0:
        raise RuntimeError(f"pgbench -c {clients} failed:\n{text[-3000:]}")
    tps = _TPS.search(text)
    if tps is None:
        raise RuntimeError(f"no tps in pgbench's output:\n{text[-3000:]}")
    latencies = _latencies_us(work_dir, prefix.name)
    failed = _FAILED.search(text)
    processed = _PROCESSED.search(text)
    transactions = int(processed.group(1)) if processed else None
    pg_cpu_seconds = usage["postgres"]["cpu_seconds"]
    return {
        "clients": clients,
        "threads": threads,
        "duration_s": duration_seconds,
        "tps": float(tps.group(1)),
        "transactions": transactions,
        "failed_transactions": int(failed.group(1)) if failed else 0,
        "latency_ms": _percentiles_ms(latencies),
        "resources": usage,
        # The yardstick for Tally's PostgreSQL CPU per transfer.
        "postgres_cpu_us_per_transaction": round(pg_cpu_seconds / transactions * 1e6, 1)
        if transactions
        else None,
    }


def _latencies_us(work_dir: Path, prefix: str) -> list[int]:
    """Field 3 of pgbench's per-transaction log is the latency in microseconds."""
    values: list[int] = []
    for path in sorted(work_dir.glob(f"{prefix}.*")):
        with path.open() as f:
            values.extend(int(line.split()[2]) for line in f if line.strip())
        path.unlink()
    return values


def _percentiles_ms(values_us: list[int]) -> dict[str, float | None]:
    if not values_us:
        return {"p50": None, "p95": None, "p99": None, "max": None, "mean": None}
    values_us.sort()

    def at(fraction: float) -> float:
        index = min(len(values_us) - 1, max(0, round(fraction * len(values_us)) - 1))
        return round(values_us[index] / 1000, 3)

    return {
        "p50": at(0.50),
        "p95": at(0.95),
        "p99": at(0.99),
        "max": round(values_us[-1] / 1000, 3),
        "mean": round(sum(values_us) / len(values_us) / 1000, 3),
    }

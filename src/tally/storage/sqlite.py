"""SQLite through the standard library: one writer thread, WAL, synchronous=FULL.

The embedded default: no service to run. Writes happen on one dedicated thread
holding one connection, inside ``BEGIN IMMEDIATE`` (SQLite's single writer lock,
so even several server processes on one file take turns). Reads run on a small
pool of threads, each with its own connection; WAL lets them read a consistent
snapshot while the writer works. ``synchronous=FULL`` keeps a commit durable
across a power cut: the batching, not a weaker fsync, is what makes it fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import sqlite3
import threading
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tally.config import Settings
from tally.core import Changes, Outcome
from tally.errors import Unavailable
from tally.idempotency import StoredKey
from tally.storage.base import Store, Tx, UniqueViolation
from tally.storage.batch import (
    Decision,
    Job,
    JobResult,
    KeyRow,
    StaleRead,
    account_keys,
    claim_keys,
    decide,
    finish,
    plan_keys,
    tenant_ids,
    transfer_keys,
)
from tally.storage.rows import (
    ACCOUNT_COLUMNS,
    AUDIT_COLUMNS,
    BALANCE_COLUMNS,
    EVENT_COLUMNS,
    KEY_COLUMNS,
    TRANSFER_COLUMNS,
    account_from_row,
    account_row,
    balance_row,
    columns,
    event_row,
    key_row,
    stored_key_from_row,
    transfer_from_row,
    transfer_row,
)

log = logging.getLogger(__name__)

READER_THREADS = 4
ATTEMPTS_MAX = 3
_DOLLAR_PARAM = re.compile(r"\$(\d+)")


def _insert_sql(table: str, names: Sequence[str]) -> str:
    marks = ", ".join("?" for _ in range(len(names) + 1))
    return f"INSERT INTO {table} (tenant_id, {columns(names)}) VALUES ({marks})"


_INSERT_ACCOUNTS = _insert_sql("accounts", ACCOUNT_COLUMNS)
_INSERT_TRANSFERS = _insert_sql("transfers", TRANSFER_COLUMNS)
_INSERT_BALANCES = _insert_sql("account_balances", BALANCE_COLUMNS)
_INSERT_EVENTS = _insert_sql("events", EVENT_COLUMNS)
_INSERT_KEYS = _insert_sql("idempotency_keys", KEY_COLUMNS)
_INSERT_AUDIT = _insert_sql("audit_events", AUDIT_COLUMNS)
_UPDATE_ACCOUNTS = (
    "UPDATE accounts SET "
    + ", ".join(f"{n} = ?" for n in ACCOUNT_COLUMNS[1:])
    + " WHERE tenant_id = ? AND id = ?"
)
_IN_JSON = "IN (SELECT value FROM json_each(?))"


class SqliteStore(Store):
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._path = settings.sqlite_path
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tally-sqlite-writer")
        self._readers = ThreadPoolExecutor(
            max_workers=READER_THREADS, thread_name_prefix="tally-sqlite-reader"
        )
        # Everything that runs on the writer thread takes this lock first, so that an
        # identity transaction open across awaits never interleaves with a batch.
        self._write_lock = asyncio.Lock()
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self._path,
                timeout=self._settings.db_lock_timeout_ms / 1000,
                isolation_level=None,  # we issue BEGIN and COMMIT ourselves
                check_same_thread=False,
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute(f"PRAGMA busy_timeout={self._settings.db_lock_timeout_ms}")
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    async def open(self) -> None:
        parent = Path(self._path).parent
        if not parent.exists():
            raise Unavailable(f"The directory of the database file does not exist: {parent}")
        await self._run(self._writer, lambda: self._connection().execute("SELECT 1").fetchall())

    async def close(self) -> None:
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()

    async def _write_run(self, fn: Any) -> Any:
        async with self._write_lock:
            return await self._run(self._writer, fn)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        async with self._write_lock:
            conn: sqlite3.Connection = await self._run(self._writer, self._connection)
            await self._run(self._writer, lambda: conn.execute("BEGIN IMMEDIATE"))
            try:
                yield _SqliteTx(self, conn)
            except BaseException:
                await asyncio.shield(self._run(self._writer, lambda: conn.execute("ROLLBACK")))
                raise
            await self._run(self._writer, lambda: conn.execute("COMMIT"))

    async def _run(self, pool: ThreadPoolExecutor, fn: Any) -> Any:
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, fn)
        except sqlite3.OperationalError as exc:
            # "database is locked" past the busy timeout, disk I/O errors, a full disk.
            log.warning("sqlite unavailable: %s", exc)
            raise Unavailable(
                "The database is busy or unavailable; nothing was changed.",
                retry_after_seconds=self._settings.db_unavailable_retry_after_seconds,
            ) from exc

    async def ping(self) -> None:
        await self.fetch("SELECT 1")

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        sqlite_sql = _DOLLAR_PARAM.sub(r"?\1", sql)
        rows: list[Any] = await self._run(
            self._readers, lambda: self._connection().execute(sqlite_sql, args).fetchall()
        )
        return rows

    def metadata_equals(self, key_param: int, value_param: int) -> str:
        return f"json_extract(metadata, ${key_param}) = ${value_param}"

    def metadata_key_arg(self, key: str) -> str:
        return "$." + json.dumps(key)

    # -- writes -------------------------------------------------------------------------

    async def execute(self, jobs: Sequence[Job], now_us: int) -> list[JobResult]:
        results: list[JobResult] = await self._write_run(lambda: self._execute_sync(jobs, now_us))
        return results

    def _execute_sync(self, jobs: Sequence[Job], now_us: int) -> list[JobResult]:
        conn = self._connection()
        for attempt in range(1, ATTEMPTS_MAX + 1):
            conn.execute("BEGIN IMMEDIATE")
            try:
                plan = plan_keys(jobs, self._stored_keys(conn, claim_keys(jobs), now_us))
                run = [jobs[i] for i in plan.run]
                outcomes: list[list[Outcome]] = []
                if run:
                    decision = self._decide(conn, run, now_us)
                    self._write(conn, decision)
                    outcomes = decision.outcomes
                done = finish(jobs, plan, outcomes, now_us)
                self._write_keys(conn, done.key_rows, now_us)
                conn.executemany(_INSERT_AUDIT, [(t, *row) for t, row in done.audit_rows])
                conn.execute("COMMIT")
                return done.results
            except (sqlite3.IntegrityError, StaleRead):
                conn.execute("ROLLBACK")
                # Only another process writing the same file can cause this.
                if attempt == ATTEMPTS_MAX:
                    raise sqlite3.OperationalError("write kept conflicting") from None
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        raise AssertionError("unreachable")

    def _decide(self, conn: sqlite3.Connection, jobs: Sequence[Job], now_us: int) -> Decision:
        t_keys = transfer_keys(jobs)
        seen = self._transfers(conn, t_keys)
        a_keys = account_keys(jobs, seen)
        accounts: list[tuple[str, Any]] = []
        for tenant_id, ids in _group(a_keys).items():
            rows = conn.execute(
                f"SELECT {columns(ACCOUNT_COLUMNS)} FROM accounts"
                f" WHERE tenant_id = ? AND id {_IN_JSON}",
                (tenant_id, json.dumps(ids)),
            ).fetchall()
            accounts.extend((tenant_id, account_from_row(r)) for r in rows)
        tenants = conn.execute(
            f"SELECT id, event_sequence FROM tenants WHERE id {_IN_JSON}",
            (json.dumps(tenant_ids(jobs)),),
        ).fetchall()
        return decide(
            jobs,
            accounts=accounts,
            transfers=seen,  # BEGIN IMMEDIATE already excludes other writers
            last_sequence=dict(tenants),
            locked=set(a_keys),
            now_us=now_us,
        )

    @staticmethod
    def _stored_keys(
        conn: sqlite3.Connection, keys: list[tuple[str, str]], now_us: int
    ) -> dict[tuple[str, str], StoredKey]:
        stored: dict[tuple[str, str], StoredKey] = {}
        for tenant_id, names in _group(keys).items():
            rows = conn.execute(
                "SELECT key, fingerprint, status_code, headers, body FROM idempotency_keys"
                f" WHERE tenant_id = ? AND expires_at_us > ? AND key {_IN_JSON}",
                (tenant_id, now_us, json.dumps(names)),
            ).fetchall()
            stored.update({(tenant_id, r[0]): stored_key_from_row(r[1:]) for r in rows})
        return stored

    def _write_keys(self, conn: sqlite3.Connection, rows: list[KeyRow], now_us: int) -> None:
        retention_us = self._settings.idempotency_retention_seconds * 1_000_000
        for r in rows:
            # A key past its retention is new again: its old row makes way.
            conn.execute(
                "DELETE FROM idempotency_keys WHERE tenant_id = ? AND key = ?"
                " AND expires_at_us <= ?",
                (r.tenant_id, r.key, now_us),
            )
        conn.executemany(
            _INSERT_KEYS,
            [
                (r.tenant_id, *key_row(r.key, r.fingerprint, r.response, now_us, retention_us))
                for r in rows
            ],
        )

    async def purge_idempotency_keys(self, now_us: int, limit: int) -> int:
        def run() -> int:
            cursor = self._connection().execute(
                "DELETE FROM idempotency_keys WHERE rowid IN (SELECT rowid FROM"
                " idempotency_keys WHERE expires_at_us <= ? ORDER BY expires_at_us LIMIT ?)",
                (now_us, limit),
            )
            return cursor.rowcount

        # On the writer thread: SQLite has one writer, and this is a write.
        purged: int = await self._write_run(run)
        return purged

    @staticmethod
    def _transfers(conn: sqlite3.Connection, keys: list[tuple[str, str]]) -> list[Any]:
        found: list[tuple[str, Any]] = []
        for tenant_id, ids in _group(keys).items():
            rows = conn.execute(
                f"SELECT {columns(TRANSFER_COLUMNS)} FROM transfers"
                f" WHERE tenant_id = ? AND id {_IN_JSON}",
                (tenant_id, json.dumps(ids)),
            ).fetchall()
            found.extend((tenant_id, transfer_from_row(r)) for r in rows)
        return found

    def _write(self, conn: sqlite3.Connection, decision: Decision) -> None:
        for tenant_id, changes in decision.changes.items():
            self._write_tenant(conn, tenant_id, changes)
            if changes.events:
                conn.execute(
                    "UPDATE tenants SET event_sequence = ? WHERE id = ?",
                    (decision.last_sequence[tenant_id], tenant_id),
                )

    @staticmethod
    def _write_tenant(conn: sqlite3.Connection, tenant_id: str, c: Changes) -> None:
        def rows(values: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
            return [(tenant_id, *v) for v in values]

        conn.executemany(_INSERT_ACCOUNTS, rows([account_row(a) for a in c.accounts_created]))
        conn.executemany(
            _UPDATE_ACCOUNTS,
            [(*account_row(a)[1:], tenant_id, a.id) for a in c.accounts_updated],
        )
        conn.executemany(_INSERT_TRANSFERS, rows([transfer_row(t) for t in c.transfers_created]))
        conn.executemany(
            "UPDATE transfers SET status = ?, resolved_at_us = ? WHERE tenant_id = ? AND id = ?",
            [(t.status.value, t.resolved_at_us, tenant_id, t.id) for t in c.transfers_updated],
        )
        conn.executemany(_INSERT_BALANCES, rows([balance_row(b) for b in c.balance_changes]))
        conn.executemany(_INSERT_EVENTS, rows([event_row(e) for e in c.events]))

    async def create_tenant(
        self, tenant_id: str, name: str, key_id: str, secret_sha256: str, scopes: str, now_us: int
    ) -> None:
        def run() -> None:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(
                    "INSERT INTO tenants (id, name, created_at_us) VALUES (?, ?, ?)",
                    (tenant_id, name, now_us),
                )
                conn.execute(
                    "INSERT INTO api_keys (id, tenant_id, name, secret_sha256, scopes,"
                    " created_at_us) VALUES (?, ?, ?, ?, ?, ?)",
                    (key_id, tenant_id, "default", secret_sha256, scopes, now_us),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        await self._write_run(run)


class _SqliteTx:
    """Statements of one transaction, each run on the writer thread."""

    def __init__(self, store: SqliteStore, conn: sqlite3.Connection) -> None:
        self._store = store
        self._conn = conn

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        sqlite_sql = _DOLLAR_PARAM.sub(r"?\1", sql)
        rows: list[Any] = await self._call(lambda: self._conn.execute(sqlite_sql, args).fetchall())
        return rows

    async def execute(self, sql: str, *args: Any) -> int:
        sqlite_sql = _DOLLAR_PARAM.sub(r"?\1", sql)
        count: int = await self._call(lambda: self._conn.execute(sqlite_sql, args).rowcount)
        return count

    async def _call(self, fn: Any) -> Any:
        try:
            return await self._store._run(self._store._writer, fn)
        except sqlite3.IntegrityError as exc:
            if "UNIQUE" in str(exc):
                raise UniqueViolation(str(exc)) from exc
            raise


def _group(keys: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for tenant_id, object_id in keys:
        grouped.setdefault(tenant_id, []).append(object_id)
    return grouped

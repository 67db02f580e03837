"""SQLite through the standard library: WAL, synchronous=FULL, one writer at a time.

The embedded default: no service to run. The batching writer's transactions run
on the event loop's own thread, on a connection kept for them, inside ``BEGIN
IMMEDIATE`` (SQLite's single write lock, so even several processes on one file
take turns). A thread would not run them any sooner: most of a transaction is
Python (the core's decisions, the rows, binding each statement's parameters),
which holds the interpreter lock wherever it runs, and each of its statements
lets go of that lock and must win it back from the loop, which, under load, cost
more than the whole transaction (docs/performance.md, "SQLite on the loop's
thread"). When another process holds the write lock (``tally admin``, a backup),
the transaction waits for it on a thread instead, so the loop never sleeps in
SQLite's busy handler waiting to write. The small transactions held open across
awaits (``transaction()``: identity, webhooks, the audit log) and bulk deletes
run on that writer thread too. Reads run on the loop (a primary-key
read) or on a small pool of threads, each with its own connection; WAL lets them
read a consistent snapshot while a write is under way. ``synchronous=FULL`` keeps
a commit durable across a power cut: the batching, not a weaker fsync, is what
makes it fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
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
from tally.errors import Unavailable
from tally.storage.records import StoredKey
from tally.storage.rows import (
    ACCOUNT_COLUMNS,
    AUDIT_COLUMNS,
    BALANCE_COLUMNS,
    EVENT_COLUMNS,
    KEY_COLUMNS,
    TRANSFER_COLUMNS,
    TRANSFER_WRITE_COLUMNS,
    account_from_row,
    account_row,
    columns,
    event_row,
    key_row,
    stored_key_from_row,
    transfer_and_balance_rows,
    transfer_from_row,
)
from tally.storage.store import Store, Tx, UniqueViolation
from tally.storage.unit_of_work import (
    FindKeys,
    Key,
    LockAccounts,
    LockAndRead,
    ReadCounters,
    ReadTransfers,
    Step,
    Steps,
    T,
    TenantWrite,
    TransactionConflict,
    by_tenant,
    drive,
)

log = logging.getLogger(__name__)

READER_THREADS = 4
_DOLLAR_PARAM = re.compile(r"\$(\d+)")


@functools.lru_cache(maxsize=512)
def _sqlite_sql(sql: str) -> str:
    """A statement in the ``$n`` style, in SQLite's ``?n`` (once per statement)."""
    return _DOLLAR_PARAM.sub(r"?\1", sql)


def _insert_sql(table: str, names: Sequence[str]) -> str:
    marks = ", ".join("?" for _ in range(len(names) + 1))
    return f"INSERT INTO {table} (tenant_id, {columns(names)}) VALUES ({marks})"


_INSERT_ACCOUNTS = _insert_sql("accounts", ACCOUNT_COLUMNS)
_INSERT_TRANSFERS = _insert_sql("transfers", TRANSFER_WRITE_COLUMNS)
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
        # Every write takes this lock first, on the loop or on the writer thread, so
        # that an identity transaction open across awaits never interleaves with a
        # batch, and the loop's write connection is never in two transactions.
        self._write_lock = asyncio.Lock()
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        # The batches' connection, used on the event loop's thread: it never waits
        # for SQLite's write lock (busy timeout 0), so the loop never sleeps in it.
        self._loop_writer: sqlite3.Connection | None = None

    def _connect(self, busy_timeout_ms: int) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self._path,
            timeout=busy_timeout_ms / 1000,
            isolation_level=None,  # we issue BEGIN and COMMIT ourselves
            check_same_thread=False,
        )
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        except BaseException:
            conn.close()
            raise
        with self._lock:
            self._connections.append(conn)
        return conn

    def _connection(self) -> sqlite3.Connection:
        """This thread's connection, which waits for a lock up to db_lock_timeout_ms."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect(self._settings.db_lock_timeout_ms)
            self._local.conn = conn
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
            raise self._unavailable(exc) from exc

    def _unavailable(self, exc: sqlite3.OperationalError) -> Unavailable:
        # "database is locked" past the busy timeout, disk I/O errors, a full disk.
        log.warning("sqlite unavailable: %s", exc)
        return Unavailable(
            "The database is busy or unavailable; nothing was changed. Retry after "
            "Retry-After seconds.",
            retry_after_seconds=self._settings.db_unavailable_retry_after_seconds,
        )

    async def ping(self) -> None:
        await self.fetch("SELECT 1")

    async def fetch_point(self, sql: str, *args: Any) -> list[Any]:
        """On the event loop's own thread: a primary-key read takes a few
        microseconds, a hop to a reader thread and back several times that. In WAL
        mode a reader never waits for the writer, so this does not block the loop."""
        try:
            return self._connection().execute(_sqlite_sql(sql), args).fetchall()
        except sqlite3.OperationalError as exc:
            raise self._unavailable(exc) from exc

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        sqlite_sql = _sqlite_sql(sql)
        rows: list[Any] = await self._run(
            self._readers, lambda: self._connection().execute(sqlite_sql, args).fetchall()
        )
        return rows

    def metadata_equals(self, key_param: int, value_param: int) -> str:
        return f"json_extract(metadata, ${key_param}) = ${value_param}"

    def metadata_key_arg(self, key: str) -> str:
        return "$." + json.dumps(key)

    def json_rows(self, param: int, columns: list[tuple[str, str]]) -> str:
        values = ", ".join(f"value ->> {i} AS {name}" for i, (name, _) in enumerate(columns))
        return f"SELECT {values} FROM json_each(${param})"

    # -- writes -------------------------------------------------------------------------

    async def transact(self, steps: Steps[T]) -> T:
        async with self._write_lock:
            try:
                if self._loop_writer is None:
                    self._loop_writer = self._connect(busy_timeout_ms=0)
                if _begin_unless_busy(self._loop_writer):
                    return self._finish(self._loop_writer, steps)
            except sqlite3.OperationalError as exc:
                raise self._unavailable(exc) from exc
            # Another process holds the write lock: wait for it on the writer thread,
            # as long as db_lock_timeout_ms, while the loop serves everyone else.
            result: T = await self._run(self._writer, lambda: self._transact_sync(steps))
            return result

    def _transact_sync(self, steps: Steps[T]) -> T:
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        return self._finish(conn, steps)

    def _finish(self, conn: sqlite3.Connection, steps: Steps[T]) -> T:
        """The statements and the COMMIT of a transaction begun on ``conn``."""
        try:
            result = drive(steps, lambda step: self._perform(conn, step))
            conn.execute("COMMIT")
        except sqlite3.IntegrityError as exc:
            _roll_back(conn)
            # Only another process writing the same file can cause this.
            raise TransactionConflict(str(exc)) from exc
        except BaseException:
            _roll_back(conn)
            raise
        return result

    def _perform(self, conn: sqlite3.Connection, step: Step) -> Any:
        # BEGIN IMMEDIATE holds SQLite's one write lock, so every read here is
        # current and no row needs a lock of its own.
        if isinstance(step, ReadTransfers):
            return self._select_by_tenant(conn, step.keys, "transfers", transfer_from_row)
        if isinstance(step, LockAccounts):
            return self._select_by_tenant(conn, step.keys, "accounts", account_from_row)
        if isinstance(step, LockAndRead):
            return (
                self._select_by_tenant(conn, step.lock, "accounts", account_from_row),
                self._select_by_tenant(conn, step.read, "transfers", transfer_from_row),
            )
        if isinstance(step, ReadCounters):
            return dict(
                conn.execute(
                    f"SELECT id, event_sequence FROM tenants WHERE id {_IN_JSON}",
                    (json.dumps(step.tenant_ids),),
                ).fetchall()
            )
        if isinstance(step, FindKeys):
            return self._stored_keys(conn, step.keys, step.now_us)
        for tenant in step.tenants:
            self._write_tenant(conn, tenant, step.now_us)
        return None

    @staticmethod
    def _select_by_tenant(
        conn: sqlite3.Connection, keys: list[Key], table: str, from_row: Any
    ) -> list[tuple[str, Any]]:
        names = ACCOUNT_COLUMNS if table == "accounts" else TRANSFER_COLUMNS
        found: list[tuple[str, Any]] = []
        for tenant_id, ids in by_tenant(keys).items():
            rows = conn.execute(
                f"SELECT {columns(names)} FROM {table} WHERE tenant_id = ? AND id {_IN_JSON}",
                (tenant_id, json.dumps(ids)),
            ).fetchall()
            found.extend((tenant_id, from_row(r)) for r in rows)
        return found

    @staticmethod
    def _stored_keys(
        conn: sqlite3.Connection, keys: list[Key], now_us: int
    ) -> dict[Key, StoredKey]:
        stored: dict[Key, StoredKey] = {}
        for tenant_id, names in by_tenant(keys).items():
            rows = conn.execute(
                "SELECT key, fingerprint, status_code, headers, body FROM idempotency_keys"
                f" WHERE tenant_id = ? AND expires_at_us > ? AND key {_IN_JSON}",
                (tenant_id, now_us, json.dumps(names)),
            ).fetchall()
            stored.update({(tenant_id, r[0]): stored_key_from_row(r[1:]) for r in rows})
        return stored

    def _write_tenant(self, conn: sqlite3.Connection, w: TenantWrite, now_us: int) -> None:
        tenant_id, c = w.tenant_id, w.changes

        def rows(values: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
            return [(tenant_id, *v) for v in values]

        conn.executemany(_INSERT_ACCOUNTS, rows([account_row(a) for a in c.accounts_created]))
        conn.executemany(
            _UPDATE_ACCOUNTS,
            [(*account_row(a)[1:], tenant_id, a.id) for a in c.accounts_updated],
        )
        transfers, balances = transfer_and_balance_rows(c.transfers_created, c.balance_changes)
        conn.executemany(_INSERT_TRANSFERS, rows(transfers))
        conn.executemany(
            "UPDATE transfers SET status = ?, resolved_at_us = ? WHERE tenant_id = ? AND id = ?",
            [(t.status, t.resolved_at_us, tenant_id, t.id) for t in c.transfers_updated],
        )
        conn.executemany(_INSERT_BALANCES, rows(balances))
        events = [event_row(e, d) for e, d in zip(c.events, w.event_data, strict=True)]
        conn.executemany(_INSERT_EVENTS, rows(events))
        if w.sequences_used:
            conn.execute(
                "UPDATE tenants SET event_sequence = event_sequence + ? WHERE id = ?",
                (w.sequences_used, tenant_id),
            )
        self._write_keys(conn, tenant_id, w, now_us)
        conn.executemany(_INSERT_AUDIT, rows(w.audit_rows))

    def _write_keys(
        self, conn: sqlite3.Connection, tenant_id: str, w: TenantWrite, now_us: int
    ) -> None:
        retention_us = self._settings.idempotency_retention_seconds * 1_000_000
        # A key past its retention is new again: its old row makes way.
        conn.executemany(
            "DELETE FROM idempotency_keys WHERE tenant_id = ? AND key = ? AND expires_at_us <= ?",
            [(tenant_id, k.key, now_us) for k in w.keys],
        )
        conn.executemany(
            _INSERT_KEYS,
            [
                (tenant_id, *key_row(k.key, k.fingerprint, k.response, now_us, retention_us))
                for k in w.keys
            ],
        )

    async def settle_writer(self) -> None:
        """Nothing to settle: each write transaction begins when its batch does."""

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


def _begin_unless_busy(conn: sqlite3.Connection) -> bool:
    """``BEGIN IMMEDIATE`` on a connection that does not wait: False if another
    connection holds SQLite's write lock."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY:
            return False
        raise
    return True


def _roll_back(conn: sqlite3.Connection) -> None:
    # A failed COMMIT may have ended the transaction already (an I/O error does).
    if conn.in_transaction:
        conn.execute("ROLLBACK")


class _SqliteTx:
    """Statements of one transaction, each run on the writer thread."""

    def __init__(self, store: SqliteStore, conn: sqlite3.Connection) -> None:
        self._store = store
        self._conn = conn

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        sqlite_sql = _sqlite_sql(sql)
        rows: list[Any] = await self._call(lambda: self._conn.execute(sqlite_sql, args).fetchall())
        return rows

    async def execute(self, sql: str, *args: Any) -> int:
        sqlite_sql = _sqlite_sql(sql)
        count: int = await self._call(lambda: self._conn.execute(sqlite_sql, args).rowcount)
        return count

    async def notify(self, channel: str, message: str) -> None:
        """One process: nobody else to tell (storage.notifications)."""

    async def _call(self, fn: Any) -> Any:
        try:
            return await self._store._run(self._store._writer, fn)
        except sqlite3.IntegrityError as exc:
            if "UNIQUE" in str(exc):
                raise UniqueViolation(str(exc)) from exc
            raise

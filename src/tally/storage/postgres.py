"""PostgreSQL through asyncpg: row locks in one global order, set-based writes.

Several server processes may write at once. They stay correct because every
write transaction locks the accounts it touches with ``SELECT … FOR UPDATE`` in
(tenant, id) order, then the tenants' rows, so two transactions can wait on each
other but never in a cycle. Reads and writes are set-based (the batch's ids and
rows as one JSON parameter each, expanded by ``json_array_elements``): one
statement per step per tenant, whatever the batch size.

Every session has a statement timeout and a lock timeout. Errors that mean "try
again" (a lost race on a new id, a deadlock that should not happen but would be
survivable) become ``TransactionConflict``, which storage.unit_of_work retries;
errors that mean the database is away become ``Unavailable`` (503), with nothing
half-done.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import asyncpg
import msgspec

from tally.config import Settings
from tally.core import Account
from tally.errors import Unavailable
from tally.storage.known_accounts import KnownAccounts
from tally.storage.literals import literal
from tally.storage.notifications import (
    EVENTS_CHANNEL,
    Notifications,
    PostgresNotifications,
    stamp,
)
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
    drive_async,
)

log = logging.getLogger(__name__)

_encode_json = msgspec.json.encode


def _json_text(value: object) -> str:
    """``value`` as a JSON text parameter (a batch's ids or rows: see _ids, _rows)."""
    return _encode_json(value).decode()


# Worth another attempt: the transaction lost a race and rolled back whole.
_RETRYABLE = (
    asyncpg.exceptions.UniqueViolationError,
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.LockNotAvailableError,
    # The transaction opened ahead of a batch had failed (it should not: nothing
    # runs in it before the batch). Rolled back, the batch runs again afresh.
    asyncpg.exceptions.InFailedSQLTransactionError,
)
# The database is away, overloaded or too slow: the client should come back later.
_UNAVAILABLE = (
    OSError,
    TimeoutError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.QueryCanceledError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.ConnectionFailureError,
    asyncpg.exceptions.InternalClientError,
    # A pooler that refuses the connection's start-up ("unsupported startup
    # parameter": PgBouncer without TALLY_DB_PGBOUNCER). Logged with its reason.
    asyncpg.exceptions.ProtocolViolationError,
    # A primary being demoted (a Patroni switchover) refuses writes until it
    # restarts as a replica and the connection goes; the client comes back later.
    asyncpg.exceptions.ReadOnlySQLTransactionError,
)

_PG_TYPES = {
    "id": "text",
    "account_id": "text",
    "transfer_id": "text",
    "debit_account_id": "text",
    "credit_account_id": "text",
    "pending_id": "text",
    "currency": "text",
    "normal_balance": "text",
    "status": "text",
    "metadata": "text",
    "type": "text",
    "data": "text",
    "key": "text",
    "fingerprint": "text",
    "headers": "text",
    "body": "bytea",
    "status_code": "integer",
    "actor_type": "text",
    "actor_id": "text",
    "action": "text",
    "object_id": "text",
    "code": "text",
    "request_id": "text",
    "client_address": "text",
    "debits_must_not_exceed_credits": "boolean",
    "credits_must_not_exceed_debits": "boolean",
    "pending": "boolean",
}


NOTHING_CHANGED_DETAIL = (
    "The database is unavailable; nothing was changed. Retry after Retry-After seconds."
)
# Found by the bank test: a PostgreSQL crashed while COMMIT was in flight can
# have written the commit (it replays it on restart) without the answer reaching
# us. Such a write is whole or absent, but which one only a retry can tell.
COMMIT_LOST_DETAIL = (
    "The database connection was lost while committing: the write was applied whole "
    "or not at all, and which is unknown. Retry with the same Idempotency-Key or id, "
    "which returns the stored result if it was applied."
)


def _rows(names: Sequence[str], param: int) -> str:
    """The rows of JSON parameter ``$param`` (an array of arrays, in ``names``'
    order) as a table ``u`` with typed columns.

    One JSON text per part, rather than one typed array per column: asyncpg
    encodes a dozen arrays of a batch's values element by element, which cost
    more of Tally's CPU than everything else in the statement (py-spy, issue 10);
    msgspec writes the JSON in one C call, and PostgreSQL parses it once.
    """
    values = ", ".join(f"{_column(i, n)} AS {n}" for i, n in enumerate(names))
    return f"(SELECT {values} FROM jsonb_array_elements(${param}::text::jsonb) AS e) AS u"


def _column(i: int, name: str) -> str:
    kind = _PG_TYPES.get(name, "bigint")
    if kind == "bytea":  # msgspec writes bytes as base64
        return f"decode(e->>{i}, 'base64')"
    return f"(e->>{i})::{kind}"


def _insert(table: str, names: Sequence[str], param: int) -> str:
    # A "sequence" column arrives as an offset from the tenant's counter, which the
    # statement's first part (``seq``) advances: see _write_sql.
    values = ", ".join(f"seq.base + u.{n}" if n == "sequence" else f"u.{n}" for n in names)
    return (
        f"INSERT INTO {table} (tenant_id, {columns(names)})"
        f" SELECT $1, {values} FROM {_rows(names, param)}, seq"
    )


def _probe(table: str, key: str, what: str = "*") -> str:
    """A primary-key probe of ``table`` for the row whose id is ``key`` (its
    columns ``what``).

    ``OFFSET 0`` keeps the planner from pulling the subquery up into a join of
    ``table``, which it would then plan from its statistics; those lag a table
    that grows by thousands of rows a second, and a join planned on them was
    seen hashing every row of the tenant (all its transfers, every batch, 2,216
    rows and growing) to find 64 new ids, none there. A probe per id costs the
    same whatever the table's size."""
    return f"LATERAL (SELECT {what} FROM {table} WHERE tenant_id = $1 AND id = {key} OFFSET 0)"


def _update_by_probe(
    table: str, alias: str, assignments: str, names: Sequence[str], param: int
) -> str:
    """``UPDATE … FROM`` the JSON rows, each row found by a primary-key probe.

    A plain ``WHERE t.id = u.id`` is a join the planner may hash over the
    tenant's whole table (stale statistics again, see ``_probe``); an UPDATE
    cannot take a LATERAL target, so the probe finds each row's physical address
    (``ctid``) and the update takes the row at that address (a TID scan). The
    address is stable: every row updated here was locked ``FOR UPDATE`` earlier
    in the transaction, so no one else can move it."""
    return (
        f"UPDATE {table} AS {alias} SET {assignments}"
        f" FROM {_rows(names, param)}, {_probe(table, 'u.id', 'ctid AS row')} AS r"
        f" WHERE {alias}.ctid = r.row"
    )


def _update_accounts(param: int) -> str:
    assignments = ", ".join(f"{n} = u.{n}" for n in ACCOUNT_COLUMNS[1:])
    return _update_by_probe("accounts", "a", assignments, ACCOUNT_COLUMNS, param)


_TRANSFER_STATE = ("id", "status", "resolved_at_us")


def _update_transfers(param: int) -> str:
    assignments = "status = u.status, resolved_at_us = u.resolved_at_us"
    return _update_by_probe("transfers", "t", assignments, _TRANSFER_STATE, param)


# What one batch writes for one tenant, in the order of the statement's parts.
_WRITES: dict[str, tuple[Sequence[str], Callable[[int], str]]] = {
    "accounts_created": (ACCOUNT_COLUMNS, lambda i: _insert("accounts", ACCOUNT_COLUMNS, i)),
    "accounts_updated": (ACCOUNT_COLUMNS, _update_accounts),
    "transfers_created": (
        TRANSFER_WRITE_COLUMNS,
        lambda i: _insert("transfers", TRANSFER_WRITE_COLUMNS, i),
    ),
    "transfers_updated": (_TRANSFER_STATE, _update_transfers),
    "balances": (BALANCE_COLUMNS, lambda i: _insert("account_balances", BALANCE_COLUMNS, i)),
    "events": (EVENT_COLUMNS, lambda i: _insert("events", EVENT_COLUMNS, i)),
    "keys": (KEY_COLUMNS, lambda i: _insert("idempotency_keys", KEY_COLUMNS, i)),
    "audit": (AUDIT_COLUMNS, lambda i: _insert("audit_events", AUDIT_COLUMNS, i)),
}

US = 1_000_000
# READ COMMITTED, whatever the server's default: a write reads the tenant row's
# lease as its latest commit (tally.storage.wakeup_leases).
_BEGIN = "BEGIN ISOLATION LEVEL READ COMMITTED"
# The least idle_in_transaction_session_timeout of the writer's session, which
# waits in a transaction between batches (well past the writer's one second).
WRITER_IDLE_TIMEOUT_MS = 10_000
# PostgreSQL's clock in µs since the epoch: the one clock every process's lease
# on a tenant's event wakeups is set and read by (tally.storage.wakeup_leases).
PG_NOW_US = "(extract(epoch FROM statement_timestamp()) * 1000000)::bigint"
_LEASE_EVENT_WAKEUPS = (
    f"UPDATE tenants SET events_listened_until_us = {PG_NOW_US} + $2"
    f" WHERE id = $1 AND events_listened_until_us < {PG_NOW_US} + $3"
    f" RETURNING events_listened_until_us - {PG_NOW_US}"
)
_EVENT_WAKEUPS_LEFT = f"SELECT events_listened_until_us - {PG_NOW_US} FROM tenants WHERE id = $1"


def _known_cte(param: int) -> str:
    """What a batch's decision took from memory (``KnownAccounts``) instead of a
    read, checked as the read would have found it: JSON parameter ``$param``,
    the accounts as ``[id, version]`` pairs in id order, each locked in that
    order (the global lock order) and found at its version; ``$param + 1``, the
    ids of the transfers its creates name, none of which may exist (a create
    repeating a stored id answers the stored transfer, even one refused
    otherwise). Anything else and the statement fails with SQLSTATE 40001
    before anything is written (migration 0010)."""
    accounts, absent = f"${param}::text::json", f"${param + 1}::text::json"
    at_version = (
        f"SELECT count(*) FROM json_array_elements({accounts}) WITH ORDINALITY AS k(e, n),"
        " LATERAL (SELECT version FROM accounts WHERE tenant_id = $1 AND id = k.e->>0"
        " FOR UPDATE) AS a WHERE a.version = (k.e->>1)::bigint"
    )
    # Counted as found, by a probe per id: a NOT EXISTS was planned as an anti
    # join hashing the tenant's every transfer (tests/integration/storage/
    # test_writer_plans.py; see _probe).
    found = f"SELECT count(*) FROM {_ids(param + 1)}, {_probe('transfers', 'k.id', '1')} AS t"
    accounts_, absent_ = f"json_array_length({accounts})", f"json_array_length({absent})"
    matched = f"({at_version}) + {absent_} - ({found})"
    return f"known AS (SELECT tally_as_remembered({matched}, {accounts_} + {absent_}) AS ok)"


@functools.lru_cache(maxsize=256)
def _write_sql(parts: tuple[str, ...], notify: bool = False, known: bool = False) -> str:
    """One statement for all of a tenant's writes in a batch: one round trip.

    It first advances the tenant's event counter by ``$2`` (the sequences the
    batch used), which locks the tenant's row until commit; every new row's
    ``sequence`` is that base plus the offset the core assigned. Taking the
    tenant's lock here, last, rather than before the core decides, keeps it for
    the length of this statement and the commit only: two processes' batches on
    other accounts of the same tenant overlap everything else. Readers still
    never see a sequence before the ones below it commit: the next batch can
    take the counter only after this one commits.

    Then each part is a data-modifying CTE over its rows, one JSON parameter
    each (``$1`` is the tenant, then each part's rows in turn: see ``_rows``).
    Constraint checks run at the end of the statement, after every part.

    With ``known``, the batch's accounts came from memory, and the statement
    first checks them (``_known_cte``, its last two parameters): the tenant's row
    is updated only once they are locked and found unchanged, so the locks
    follow the global order, accounts before the tenant, as after a read.
    """
    lease = ", events_listened_until_us AS listened" if notify else ""
    checked = " AND (SELECT ok FROM known)" if known else ""
    ctes = [_known_cte(3 + len(parts))] if known else []
    ctes.append(
        f"seq AS (UPDATE tenants SET event_sequence = event_sequence + $2 WHERE id = $1{checked}"
        f" RETURNING event_sequence - $2 AS base{lease})"
    )
    for param, name in enumerate(parts, start=3):
        ctes.append(f"{name} AS ({_WRITES[name][1](param)})")
    # With events, the statement also announces them while some process listens
    # for the tenant's (its lease, read from the row this statement updates:
    # tally.storage.wakeup_leases). NOTIFY is delivered when, and only if, the
    # transaction commits, and costs no extra round trip here.
    announce = (
        f", CASE WHEN listened > {PG_NOW_US}"
        f" THEN pg_notify('{EVENTS_CHANNEL}', $1 || ':' || (base + $2)) END"
        if notify
        else ""
    )
    return f"WITH {', '.join(ctes)} SELECT base{announce} FROM seq"


def _ids(param: int) -> str:
    """The ids in JSON parameter ``$param`` (an array of strings), in order, as
    rows ``k(id, n)``.

    One JSON text rather than a ``text[]``: asyncpg encodes an array element by
    element, each through an ``isinstance`` against an abstract base class (0.35
    to 0.6 µs of Tally's CPU an id, docs/performance.md), where msgspec writes the
    whole list in one C call (0.04 to 0.09 µs an id); a batch sends about three
    ids a transfer. PostgreSQL parses the JSON once; the order is kept."""
    return f"json_array_elements_text(${param}::text::json) WITH ORDINALITY AS k(id, n)"


# The check alone, for a batch from memory that writes nothing for its tenant
# (every command refused, nothing audited): a refusal is a decision too.
_KNOWN_ONLY = f"WITH {_known_cte(2)} SELECT ok FROM known"


# Idempotency keys as rows k(tenant_id, key): the two JSON arrays of _key_pairs,
# zipped back in order by ROWS FROM.
_KEY_PAIRS = (
    "ROWS FROM (json_array_elements_text($1::text::json),"
    " json_array_elements_text($2::text::json)) AS k(tenant_id, key)"
)


def _key_pairs(keys: Sequence[Key]) -> tuple[str, str]:
    """The parameters of _KEY_PAIRS: the tenant ids and the keys, as JSON texts."""
    return _json_text([k[0] for k in keys]), _json_text([k[1] for k in keys])


# A primary-key probe per key, whatever the statistics (see _probe).
_SELECT_KEYS = (
    "SELECT i.tenant_id, i.key, i.expires_at_us, i.fingerprint, i.status_code, i.headers,"
    f" i.body FROM {_KEY_PAIRS}, LATERAL (SELECT * FROM idempotency_keys"
    " WHERE tenant_id = k.tenant_id AND key = k.key OFFSET 0) AS i"
)
# Each expired key's row found by a probe and deleted at its address, as
# _update_by_probe does: a plain join was planned as a hash join over the whole
# table on stale statistics. A row deleted meanwhile by another process is
# skipped; the insert that follows then collides, and the transaction runs again.
_DELETE_KEYS = (
    f"DELETE FROM idempotency_keys AS i USING {_KEY_PAIRS}, LATERAL (SELECT ctid AS row"
    " FROM idempotency_keys WHERE tenant_id = k.tenant_id AND key = k.key OFFSET 0) AS r"
    " WHERE i.ctid = r.row"
)
# SKIP LOCKED: several processes purge at once without waiting on each other.
_PURGE_KEYS = (
    "DELETE FROM idempotency_keys WHERE (tenant_id, key) IN ("
    " SELECT tenant_id, key FROM idempotency_keys WHERE expires_at_us <= $1"
    " ORDER BY expires_at_us LIMIT $2 FOR UPDATE SKIP LOCKED)"
)


# Per tenant, one primary-key probe per id (see _probe: with "id = ANY($2)" or a
# plain join, the planner, misled by statistics that lag a fast-growing table,
# was seen scanning every transfer of the tenant, 50-110 ms instead of 3 for
# 1,000 ids).
_SELECT_TRANSFERS = (
    f"SELECT {columns(TRANSFER_COLUMNS, 't')} FROM {_ids(2)}, {_probe('transfers', 'k.id')} AS t"
)
# The ids arrive sorted and the loop follows them, so the row locks are taken in
# id order; tenants are taken in id order too, so across a batch the locks follow
# the global order (tenant_id, id).
_LOCK_ACCOUNTS = (
    f"SELECT {columns(ACCOUNT_COLUMNS, 'a')} FROM {_ids(2)},"
    " LATERAL (SELECT * FROM accounts WHERE tenant_id = $1 AND id = k.id FOR UPDATE) AS a"
    " ORDER BY k.n"
)

# _LOCK_ACCOUNTS, then _SELECT_TRANSFERS, as one statement (unit_of_work.LockAndRead):
# each row is (is an account, the account's columns, the transfer's columns), the
# other object's columns NULL. Append runs the branches in order, so the locks are
# taken first, in id order.
_TRANSFER_AT = 1 + len(ACCOUNT_COLUMNS)


def _nulls(names: Sequence[str]) -> str:
    return ", ".join(f"NULL::{_PG_TYPES.get(n, 'bigint')}" for n in names)


_LOCK_AND_READ = (
    f"(SELECT true, {columns(ACCOUNT_COLUMNS, 'a')}, {_nulls(TRANSFER_COLUMNS)}"
    f" FROM {_ids(2)},"
    " LATERAL (SELECT * FROM accounts WHERE tenant_id = $1 AND id = k.id FOR UPDATE) AS a"
    " ORDER BY k.n)"
    f" UNION ALL (SELECT false, {_nulls(ACCOUNT_COLUMNS)}, {columns(TRANSFER_COLUMNS, 't')}"
    f" FROM {_ids(3)}, {_probe('transfers', 'k.id')} AS t)"
)


async def _keep_session(_conn: asyncpg.Connection) -> None:
    """What a pooled connection needs between two uses: nothing. asyncpg's default
    reset (``RESET ALL``, ``UNLISTEN *``, advisory unlocks) is a round trip per
    read, and nothing in Tally changes a pooled session's state: every statement
    is one transaction, every setting comes from ``server_settings``."""


def _notifications(settings: Settings) -> Notifications:
    """LISTEN needs a session that stays the listener's: never through a
    transaction-mode PgBouncer. Without a direct URL there, no process hears the
    others, so the caches that depend on it stay off (``listening`` is False)."""
    url = settings.session_database_url
    if url is None:
        log.warning(
            "TALLY_DB_PGBOUNCER without TALLY_DB_DIRECT_URL: no LISTEN, so the credential "
            "cache is off and every request reads its credential from the database"
        )
        return Notifications()
    return PostgresNotifications(
        url.replace("postgres://", "postgresql://", 1),
        connect_timeout_seconds=settings.db_connect_timeout_seconds,
    )


class PostgresStore(Store):
    skip_locked = " FOR UPDATE SKIP LOCKED"
    # An audit row's txid is its transaction's (pg_current_xact_id()). A row is
    # taken only once every transaction with a smaller id has finished: the
    # oldest still running as of the statement's snapshot, or the next to start
    # if none. A transaction that pg_stat_activity shows in another database, or
    # one prepared (two-phase) in another, is passed over: it writes no row here,
    # so a long one elsewhere in the cluster does not hold sealing back. One that
    # has finished by the time pg_stat_activity is read is not passed over (its
    # rows may be invisible to this snapshot): the next round takes them.
    audit_order = "e.txid, e.id"
    audit_after_mark = "(e.txid, e.id) > ($1, $2)"
    audit_settled = (
        "e.txid < (SELECT LEAST(pg_snapshot_xmax(s)::text::bigint,"
        " (SELECT MIN(x::text::bigint) FROM pg_snapshot_xip(s) AS x"
        " WHERE x::text::bigint % 4294967296 NOT IN ("
        "SELECT backend_xid::text::bigint FROM pg_stat_activity WHERE backend_xid IS NOT NULL"
        " AND datid IS DISTINCT FROM (SELECT oid FROM pg_database"
        " WHERE datname = current_database())"
        " UNION ALL SELECT transaction::text::bigint FROM pg_prepared_xacts"
        " WHERE database <> current_database())))"
        " FROM pg_current_snapshot() AS s)"
    )
    audit_next_txid = "pg_snapshot_xmax(pg_current_snapshot())::text::bigint"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._dsn = settings.database_url.replace("postgres://", "postgresql://", 1)
        self._pool: asyncpg.Pool | None = None
        # The writer's own connection: it runs one transaction at a time, so it
        # needs no pool, and keeping it skips a pool round trip (reset) per batch.
        self._writer_conn: asyncpg.Connection | None = None
        # A write transaction's COMMIT also opens the next one (one round trip
        # fewer per batch: docs/performance.md), except through PgBouncer, where
        # an open transaction holds a server connection. Ended by settle_writer
        # when the writer has nothing to do.
        self._begin_ahead = not settings.db_pgbouncer
        self._commit = f"COMMIT; {_BEGIN}" if self._begin_ahead else "COMMIT"
        # True while the writer's connection waits in the transaction its last
        # COMMIT opened (and in no other).
        self._opened_ahead = False
        # The write statements prepared on the writer's connection by name, for
        # the last write of a small batch, sent with its COMMIT
        # (_write_and_commit): the statement's SQL -> (its name, when prepared).
        # Emptied whenever the writer's connection is made afresh.
        self._statements: dict[str, tuple[str, float]] = {}
        self._statements_made = 0
        # The accounts as the writer's commits left them: a batch of creates whose
        # accounts are all here skips its read (decisions/0011).
        self._known = KnownAccounts()
        # Events are announced by NOTIFY, unless Redis carries the wakeups (from
        # every commit: tally.events.redis).
        self.announces_events = not settings.redis_url
        self.notifications: Notifications = _notifications(settings)

    def _connect_options(self) -> dict[str, Any]:
        s = self._settings
        options: dict[str, Any] = {
            "timeout": s.db_connect_timeout_seconds,
            # Also the bound where no statement_timeout is set (PgBouncer, below):
            # asyncpg cancels the statement and the call fails as Unavailable.
            "command_timeout": s.db_statement_timeout_ms / 1000 + 1,
            "server_settings": {
                "application_name": "tally",
                "statement_timeout": str(s.db_statement_timeout_ms),
                "lock_timeout": str(s.db_lock_timeout_ms),
                "idle_in_transaction_session_timeout": str(s.db_statement_timeout_ms * 2),
            },
        }
        if s.db_pgbouncer:
            # In transaction pooling mode each transaction may run on another server
            # connection, where a statement prepared on the last one does not exist
            # ("prepared statement __asyncpg_stmt_1__ does not exist"): keep none,
            # so asyncpg parses every statement unnamed, within its own round trip.
            # PgBouncer (before 1.20's track_extra_parameters) also refuses startup
            # parameters it does not track, so the timeouts must come from the role
            # (ALTER ROLE tally SET statement_timeout = ...; docs/deploy.md).
            options["statement_cache_size"] = 0
            options["server_settings"] = {"application_name": "tally"}
        return options

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn,
                # No connection at start-up: the server comes up (and /readyz says 503)
                # even while the database is down, and recovers when it returns.
                min_size=0,
                max_size=self._settings.db_pool_size,
                reset=_keep_session,
                **self._connect_options(),
            )
        except _UNAVAILABLE as exc:
            raise Unavailable(NOTHING_CHANGED_DETAIL) from exc

    async def close(self) -> None:
        if self._writer_conn is not None:
            await self._writer_conn.close()
        if self._pool is not None:
            await self._pool.close()

    async def _writer_connection(self) -> asyncpg.Connection:
        conn = self._writer_conn
        if conn is None or conn.is_closed():
            options = self._connect_options()
            if not self._settings.db_pgbouncer:
                # See _WriteTx. (Under PgBouncer every statement is unnamed,
                # so planned for its values each time whatever these say.)
                options["server_settings"]["plan_cache_mode"] = "force_generic_plan"
                options["max_cached_statement_lifetime"] = GENERIC_PLAN_LIFETIME_SECONDS
                # The session waits in the transaction its last COMMIT opened
                # until the next batch, or a second (ledger.writer.IDLE_SECONDS):
                # never cut off sooner, whatever the statement timeout.
                options["server_settings"]["idle_in_transaction_session_timeout"] = str(
                    max(2 * self._settings.db_statement_timeout_ms, WRITER_IDLE_TIMEOUT_MS)
                )
            conn = self._writer_conn = await asyncpg.connect(self._dsn, **options)
            self._statements.clear()
        return conn

    def _drop_writer_connection(self) -> None:
        """After an error the connection's state is unknown: start afresh next time."""
        self._opened_ahead = False
        if self._writer_conn is not None:
            self._writer_conn.terminate()
            self._writer_conn = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise Unavailable(NOTHING_CHANGED_DETAIL)
        return self._pool

    def _unavailable(self, exc: BaseException, *, during_commit: bool = False) -> Unavailable:
        hint = ""
        if "unsupported startup parameter" in str(exc):
            hint = " (a connection pooler in between? set TALLY_DB_PGBOUNCER=true)"
        log.warning("database unavailable: %s: %s%s", type(exc).__name__, exc, hint)
        detail = COMMIT_LOST_DETAIL if during_commit else NOTHING_CHANGED_DETAIL
        return Unavailable(
            detail, retry_after_seconds=self._settings.db_unavailable_retry_after_seconds
        )

    async def ping(self) -> None:
        await self.fetch("SELECT 1")

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        tx: _PostgresTx | None = None
        committed = False
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                tx = _PostgresTx(conn, self.notifications)
                yield tx
            committed = True
        except asyncpg.exceptions.UniqueViolationError as exc:
            raise UniqueViolation(str(exc)) from exc
        except _UNAVAILABLE as exc:
            raise self._unavailable(exc) from exc
        finally:
            if tx is not None and tx.sent:
                await self.notifications.echo(tx.sent, wait=committed)

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        try:
            return list(await self.pool.fetch(sql, *args))
        except _UNAVAILABLE as exc:
            raise self._unavailable(exc) from exc

    def metadata_equals(self, key_param: int, value_param: int) -> str:
        return f"(metadata::jsonb ->> ${key_param}) = ${value_param}"

    def metadata_key_arg(self, key: str) -> str:
        return key

    def json_rows(self, param: int, columns: list[tuple[str, str]]) -> str:
        values = ", ".join(f"(e->>{i})::{kind} AS {name}" for i, (name, kind) in enumerate(columns))
        return f"SELECT {values} FROM jsonb_array_elements(${param}::jsonb) AS e"

    # -- writes -------------------------------------------------------------------------

    async def transact(self, steps: Steps[T]) -> T:
        tx: _WriteTx | None = None
        try:
            conn = await self._begun()
            tx = _WriteTx(conn, generic=not self._settings.db_pgbouncer)
            try:
                result = await drive_async(steps, functools.partial(self._perform, tx))
                if not tx.committed:  # its last write did not carry the COMMIT
                    tx.committing = True
                    await conn.execute(self._commit)
                self._opened_ahead = self._begin_ahead
                if tx.seen is not None:
                    self._known.remember(tx.seen)
                else:  # a large batch: what it changed is not kept, nor anything older
                    self._known.clear()
                if tx.recalled is not None:
                    self._known.committed()
            except BaseException as exc:
                if tx.recalled is not None:
                    # Memory was wrong (the check failed), or may be now.
                    self._known.forget()
                # A lost connection is left to the handlers below, which drop it.
                # An error PostgreSQL reports ends its statement and skips the
                # rest of the message, a COMMIT sent with it included: roll back.
                reported = isinstance(exc, asyncpg.PostgresError)
                if (reported or not tx.committing) and not isinstance(exc, _UNAVAILABLE):
                    await self._roll_back(conn)
                raise
        except _RETRYABLE as exc:
            raise TransactionConflict(type(exc).__name__) from exc
        except _UNAVAILABLE as exc:
            self._drop_writer_connection()
            committing = tx is not None and tx.committing
            raise self._unavailable(exc, during_commit=committing) from exc
        return result

    async def _begun(self) -> asyncpg.Connection:
        """The writer's connection in a transaction of this batch's: the one the
        last COMMIT opened ahead, or a new one. A transaction open for any other
        reason (a batch cut short mid-statement) is never adopted: the
        connection is dropped and made afresh."""
        conn = await self._writer_connection()
        if conn.is_in_transaction() and not self._opened_ahead:
            self._drop_writer_connection()
            conn = await self._writer_connection()
        self._opened_ahead = False
        if not conn.is_in_transaction():
            await conn.execute(_BEGIN)
        return conn

    async def _roll_back(self, conn: asyncpg.Connection) -> None:
        """End the writer connection's transaction, if it has one. A ROLLBACK that
        fails drops the connection (the next batch makes it afresh) and raises
        nothing, so a failed batch's own error is the one its caller sees; a
        cancellation during it is raised."""
        self._opened_ahead = False
        if not conn.is_in_transaction():
            return
        try:
            await conn.execute("ROLLBACK")
        except Exception as exc:
            log.info("writer connection dropped: ROLLBACK failed: %s: %s", type(exc).__name__, exc)
            self._drop_writer_connection()
        except BaseException:
            self._drop_writer_connection()
            raise

    async def settle_writer(self) -> None:
        conn = self._writer_conn
        if conn is not None and not conn.is_closed():
            await self._roll_back(conn)

    async def _perform(self, tx: _WriteTx, step: Step) -> Any:
        conn = tx.conn
        if isinstance(step, ReadTransfers):
            await tx.for_rows(len(step.keys))
            return await self._per_tenant(conn, _SELECT_TRANSFERS, step.keys, transfer_from_row)
        if isinstance(step, LockAccounts):
            await tx.for_rows(len(step.keys))
            tx.locks(len(step.keys))
            locked = await self._per_tenant(conn, _LOCK_ACCOUNTS, step.keys, account_from_row)
            tx.saw(self._known, locked)
            return locked
        if isinstance(step, LockAndRead):
            await tx.for_rows(len(step.lock) + len(step.read))
            tx.locks(len(step.lock))
            recalled = self._known.recall(step.lock) if tx.seen is not None else None
            if recalled is not None and all(k[0] == recalled[0][0] for k in step.read):
                # Every account from memory, and no transfer taken to exist: the
                # write checks both (_known_cte), and if either is wrong the batch
                # runs again with the read.
                pairs = [(account.id, account.version) for _, account in recalled]
                absent = [transfer_id for _, transfer_id in step.read]
                tx.recalled = (recalled[0][0], _json_text(pairs), _json_text(absent))
                return recalled, []
            accounts, transfers = await self._lock_and_read(conn, step)
            tx.saw(self._known, accounts)
            return accounts, transfers
        if isinstance(step, ReadCounters):
            # The write statement adds the tenant's counter, under the tenant's
            # lock (see _write_sql): the rows are numbered from 0 until then.
            return dict.fromkeys(step.tenant_ids, 0)
        if isinstance(step, FindKeys):
            await tx.for_rows(len(step.keys))
            return await self._stored_keys(conn, step.keys, step.now_us)
        checked = tx.recalled
        writes = []
        for t in step.tenants:
            known = checked[1:] if checked is not None and checked[0] == t.tenant_id else None
            write = self._tenant_write(t, step.now_us, known)
            if write is not None:
                writes.append(write)
            if tx.seen is not None:
                for a in (*t.changes.accounts_created, *t.changes.accounts_updated):
                    tx.seen[(t.tenant_id, a.id)] = a
        for i, (sql, args) in enumerate(writes):
            if i == len(writes) - 1 and self._may_send_with_commit(args):
                await self._write_and_commit(tx, sql, args)
            else:
                await conn.execute(sql, *args)
        return None

    @staticmethod
    async def _per_tenant(
        conn: asyncpg.Connection, sql: str, keys: list[Key], from_row: Callable[[Any], Any]
    ) -> list[tuple[str, Any]]:
        """One statement per tenant over its sorted ids (see _LOCK_ACCOUNTS)."""
        found = []
        for tenant_id, ids in by_tenant(keys).items():
            rows = await conn.fetch(sql, tenant_id, _json_text(ids))
            found += [(tenant_id, from_row(r)) for r in rows]
        return found

    @staticmethod
    async def _lock_and_read(
        conn: asyncpg.Connection, step: LockAndRead
    ) -> tuple[list[tuple[str, Any]], list[tuple[str, Any]]]:
        """One statement per tenant, tenants in id order (the global lock order)."""
        lock, read = by_tenant(step.lock), by_tenant(step.read)
        accounts: list[tuple[str, Any]] = []
        transfers: list[tuple[str, Any]] = []
        for tenant_id in sorted(lock.keys() | read.keys()):
            rows = await conn.fetch(
                _LOCK_AND_READ,
                tenant_id,
                _json_text(lock.get(tenant_id, [])),
                _json_text(read.get(tenant_id, [])),
            )
            for r in rows:
                if r[0]:
                    accounts.append((tenant_id, account_from_row(r[1:_TRANSFER_AT])))
                else:
                    transfers.append((tenant_id, transfer_from_row(r[_TRANSFER_AT:])))
        return accounts, transfers

    @staticmethod
    async def _stored_keys(
        conn: asyncpg.Connection, keys: list[Key], now_us: int
    ) -> dict[Key, StoredKey]:
        if not keys:
            return {}
        rows = await conn.fetch(_SELECT_KEYS, *_key_pairs(keys))
        # A key past its retention is new again: its old row makes way for the new one.
        expired = [(r[0], r[1]) for r in rows if r[2] <= now_us]
        if expired:
            await conn.execute(_DELETE_KEYS, *_key_pairs(expired))
        return {(r[0], r[1]): stored_key_from_row(r[3:]) for r in rows if r[2] > now_us}

    def _tenant_write(
        self, w: TenantWrite, now_us: int, known: tuple[str, str] | None = None
    ) -> tuple[str, tuple[str | int, ...]] | None:
        """The statement that writes one tenant's part of a batch, and its values;
        None if every command of the tenant was refused. ``known``: what the
        decision took from memory (the accounts' ``[id, version]`` pairs and the
        ids of the transfers taken not to exist, as JSON), which the statement
        checks (``_known_cte``), even with nothing to write."""
        retention_us = self._settings.idempotency_retention_seconds * 1_000_000
        c = w.changes
        transfers, balances = transfer_and_balance_rows(c.transfers_created, c.balance_changes)
        rows: dict[str, list[tuple[Any, ...]]] = {
            "accounts_created": [account_row(a) for a in c.accounts_created],
            "accounts_updated": [account_row(a) for a in c.accounts_updated],
            "transfers_created": transfers,
            "transfers_updated": [(t.id, t.status, t.resolved_at_us) for t in c.transfers_updated],
            "balances": balances,
            "events": [event_row(e, d) for e, d in zip(c.events, w.event_data, strict=True)],
            "keys": [
                key_row(k.key, k.fingerprint, k.response, now_us, retention_us) for k in w.keys
            ],
            "audit": w.audit_rows,
        }
        parts = tuple(name for name in _WRITES if rows[name])
        if not parts:
            return None if known is None else (_KNOWN_ONLY, (w.tenant_id, *known))
        documents = [_json_text(rows[name]) for name in parts]
        if known is not None:
            documents += known
        notify = w.sequences_used > 0 and self.announces_events
        sql = _write_sql(parts, notify, known is not None)
        return sql, (w.tenant_id, w.sequences_used, *documents)

    def _may_send_with_commit(self, args: tuple[str | int, ...]) -> bool:
        """Whether a batch's last write goes in one message with its COMMIT: not
        through PgBouncer (whose server connections keep no prepared statement
        between transactions), and only while its values are small (see
        COMMIT_WITH_WRITE_CHARS_MAX)."""
        if not self._begin_ahead:
            return False
        size = sum(len(value) for value in args if isinstance(value, str))
        return size <= COMMIT_WITH_WRITE_CHARS_MAX

    async def _write_and_commit(self, tx: _WriteTx, sql: str, args: tuple[str | int, ...]) -> None:
        """A batch's last write statement and its COMMIT (with the next BEGIN) in
        one simple-query message: one round trip where there were two
        (decisions/0010). The simple query protocol has no parameters, so the
        statement, prepared with its parameters (``_prepared``), is executed with
        its values written as constants by ``tally.storage.literals``."""
        name = await self._prepared(tx.conn, sql)
        values = ", ".join([literal(value) for value in args])
        tx.committing = True
        await tx.conn.execute(f"EXECUTE {name}({values}); {self._commit}")
        tx.committed = True

    async def _prepared(self, conn: asyncpg.Connection, sql: str) -> str:
        """The name of ``sql`` prepared on the writer's connection: prepared afresh
        (and planned against the tables as they are then) once it is
        GENERIC_PLAN_LIFETIME_SECONDS old, as asyncpg does with its own. Each
        preparation takes a new name, and the old one is freed in the same
        message after it: if the message fails, neither name is used again."""
        now = time.monotonic()
        known = self._statements.get(sql)
        if known is not None and now - known[1] < GENERIC_PLAN_LIFETIME_SECONDS:
            return known[0]
        self._statements.pop(sql, None)
        self._statements_made += 1
        name = f"tally_write_{self._statements_made}"
        free = f"; DEALLOCATE {known[0]}" if known is not None else ""
        await conn.execute(f"PREPARE {name} AS {sql}{free}")
        self._statements[sql] = (name, now)
        return name

    async def lease_event_wakeups(
        self, tenant_id: str, seconds: float, renew_within_seconds: float
    ) -> float:
        # Each statement its own transaction, holding one tenant's row lock at a
        # time: it cannot wait in a cycle with a writer. The update is
        # conditional, so a lease long enough already is read, not rewritten
        # (and a writer holding the row is not waited for).
        try:
            rows = await self.pool.fetch(
                _LEASE_EVENT_WAKEUPS, tenant_id, int(seconds * US), int(renew_within_seconds * US)
            )
            if not rows:
                rows = await self.pool.fetch(_EVENT_WAKEUPS_LEFT, tenant_id)
        except (*_UNAVAILABLE, *_RETRYABLE, asyncpg.ReadOnlySQLTransactionError) as exc:
            raise self._unavailable(exc) from exc
        return int(rows[0][0]) / US if rows else 0.0

    async def purge_idempotency_keys(self, now_us: int, limit: int) -> int:
        try:
            status = await self.pool.execute(_PURGE_KEYS, now_us, limit)
        except _UNAVAILABLE as exc:
            raise self._unavailable(exc) from exc
        return int(status.split()[-1])


# How the writer's statements are planned. Planning a statement for its values
# (a custom plan) cost more than running it for a small batch: 0.24 ms of the
# write statement's 0.44 and 0.13 of the lock-and-read's 0.18 for one transfer
# (pg_stat_statements, track_planning), a third of PostgreSQL's CPU per
# transfer. So the writer's session keeps a generic plan per statement, made
# once, with two guards against the one way a generic plan goes wrong here:
#
# - A generic plan made while a table is (nearly) empty may probe a tenant's
#   rows through an index on the tenant alone (every index of accounts and
#   transfers starts with tenant_id; on an empty table they cost the same) and
#   filter for the id: harmless at that size, and a scan of the tenant per id
#   if the plan outlives the table's growth. A cached plan is remade when
#   ANALYZE changes the table's statistics, which autovacuum may do a minute
#   later; the writer does not wait for that: its prepared statements live
#   GENERIC_PLAN_LIFETIME_SECONDS, then are prepared and planned afresh,
#   against the table as it is then.
# - A large batch's transaction plans for its values (SET LOCAL, one round trip):
#   at CUSTOM_PLANS_FROM_ROWS ids planning costs under a microsecond per
#   transfer, and a custom plan knows the tenant's own statistics, so a large
#   batch never runs on a plan made for another. (It does not know how many ids
#   a JSON parameter holds: PostgreSQL estimates 100 rows for any; the probes
#   are the plan's shape whatever the estimate, tests/integration/storage/
#   test_writer_plans.py.)
GENERIC_PLAN_LIFETIME_SECONDS = 1.0
CUSTOM_PLANS_FROM_ROWS = 500


# A batch's last write statement is sent in one message with its COMMIT while its
# values come to at most this many characters (a lone transfer's are about 600, a
# batch of 16's about 9,500, of 64 about 37,000; decisions/0010). PostgreSQL reads
# values written into SQL text more slowly than bound ones (a 13 KB value 10-20
# µs more, a 389 KB one 1.3 ms more), and Tally spends about 0.65 ns a character
# writing them: past this size the round trip saved is worth less than that.
COMMIT_WITH_WRITE_CHARS_MAX = 16 * 1024
# The most accounts a batch may lock and still be answered from the writer's
# memory, or teach it (decisions/0011). Memory is for the latency of small
# batches, whose read is a round trip for a few transfers; a large one shares
# its read among hundreds, and keeping what it read and changed cost about 5 %
# of a batched transfer's CPU (py-spy, make profile --batch 1000): a large
# batch empties memory instead, so that nothing it changed is remembered as it
# was.
KNOWN_ACCOUNTS_MAX = 64


class _WriteTx:
    """One write transaction of the writer: whether its statements take custom
    plans (above), and how far its COMMIT has gone."""

    __slots__ = ("_custom", "committed", "committing", "conn", "recalled", "seen")

    def __init__(self, conn: asyncpg.Connection, *, generic: bool) -> None:
        self.conn = conn
        self._custom = not generic
        # The COMMIT was sent (a connection lost now leaves the outcome unknown),
        # and it came back.
        self.committing = False
        self.committed = False
        # The tenant whose accounts came from memory, their [id, version] pairs
        # and the ids of the transfers taken not to exist, as JSON, for the
        # write to check.
        self.recalled: tuple[str, str, str] | None = None
        # The accounts as this transaction read or left them: remembered once
        # it has committed. None once it locks more than KNOWN_ACCOUNTS_MAX.
        self.seen: dict[Key, Account] | None = {}

    def locks(self, keys: int) -> None:
        """The transaction locks ``keys`` accounts: past KNOWN_ACCOUNTS_MAX it is
        a large batch, which memory neither answers nor keeps."""
        if keys > KNOWN_ACCOUNTS_MAX:
            self.seen = None

    def saw(self, known: KnownAccounts, accounts: list[tuple[str, Account]]) -> None:
        """Accounts read under their locks."""
        if self.seen is None:
            return
        known.compare(accounts)
        for tenant_id, account in accounts:
            self.seen[(tenant_id, account.id)] = account

    async def for_rows(self, rows: int) -> None:
        if rows >= CUSTOM_PLANS_FROM_ROWS and not self._custom:
            self._custom = True
            await self.conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")


class _PostgresTx:
    def __init__(self, conn: asyncpg.Connection, notifications: Notifications) -> None:
        self._conn = conn
        self._notifications = notifications
        self.sent: list[str] = []

    async def notify(self, channel: str, message: str) -> None:
        payload = stamp(message)
        self._notifications.expect([payload])
        self.sent.append(payload)
        await self._conn.execute("SELECT pg_notify($1, $2)", channel, payload)

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        return list(await self._conn.fetch(sql, *args))

    async def execute(self, sql: str, *args: Any) -> int:
        status: str = await self._conn.execute(sql, *args)
        # "UPDATE 3", "DELETE 0", "INSERT 0 1": the count is the last word.
        return int(status.split()[-1])

"""What every storage adapter offers, and the ledger reads they share.

Reads are written once, in PostgreSQL's ``$n`` parameter style; the SQLite
adapter rewrites them to its ``?n`` style. Each read is a single statement, so a
page comes from one consistent snapshot on both backends. Every ledger query
names the tenant: there is no way to read across tenants through this class.

Writes come in two kinds. The ledger's go through ``transact`` (the steps of
``storage.unit_of_work``); the small writes of identity and the audit log go
through ``transaction()``, a plain transaction of ``$n`` statements.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, TypeVar

from tally.core import Account, Transfer
from tally.storage.notifications import Notifications
from tally.storage.records import BalanceRecord, StoredEvent, StoredKey, TransferFilter
from tally.storage.rows import (
    ACCOUNT_COLUMNS,
    BALANCE_TOTALS,
    TRANSFER_COLUMNS,
    Row,
    account_from_row,
    columns,
    stored_key_from_row,
    transfer_from_row,
)
from tally.storage.unit_of_work import Steps, T


class UniqueViolation(Exception):
    """An insert or update collided with a unique key (an email, a token); the
    transaction is rolled back. Callers turn it into the domain's 409."""


class Tx(Protocol):
    """One open transaction: statements in the ``$n`` style, on either backend."""

    async def fetch(self, sql: str, *args: Any) -> list[Row]: ...

    async def execute(self, sql: str, *args: Any) -> int:
        """Run one statement; return the number of rows it changed."""
        ...

    async def notify(self, channel: str, message: str) -> None:
        """Tell every server process ``message`` on ``channel`` if, and when, this
        transaction commits (storage.notifications); the block that opened the
        transaction returns only once the message has gone out."""
        ...


# An account's balance history is three sources (migration 0007): the transfers
# that debit it and those that credit it, each row carrying that side's totals
# after the transfer, and its expiries in account_balances. Each is read through
# an index on (tenant, account, created_at_us, version), newest first, and the
# three are merged in that order. The writer never lets an account's change time
# go backwards (tally.ledger.transaction), so that order is version order too.
# (table, account column, transfer id column, prefix of the balance columns)
_HISTORY_SOURCES = (
    ("transfers", "debit_account_id", "id", "debit_"),
    ("transfers", "credit_account_id", "id", "credit_"),
    ("account_balances", "account_id", "transfer_id", ""),
)


def _of_account(table: str, account_column: str, prefix: str, account: str, alias: str) -> str:
    """The condition selecting ``account``'s records from one source. A transfer
    row without its totals was written by a process older than migration 0007
    (one still running while the schema moved on): its records are rows of
    account_balances, which that process also wrote, and are read there."""
    where = f"{alias}tenant_id = $1 AND {alias}{account_column} = {account}"
    if table == "transfers":
        where += f" AND {alias}{prefix}version IS NOT NULL"
    return where


def _newest_of_each(keys: str, table: str, of_account: str, version: str) -> str:
    """The FROM and WHERE of each key's newest ``$3`` rows of ``table``, by
    (created_at_us, ``version``): two probes of that index find the ``$3``-th
    newest, and a range scan reads from there, at most ``$3`` rows a key.
    ``keys`` selects the accounts' ids (``k.id``); ``of_account`` is the condition
    on one account's rows, ``{a}`` standing for the alias; the rows are ``h``.
    CROSS JOIN keeps the keys the outer loop on SQLite, which without statistics
    would otherwise walk the tenant's whole table."""
    nth = (
        f" FROM {table} AS x WHERE {of_account.format(a='x.')}"
        f" ORDER BY x.created_at_us DESC, x.{version} DESC LIMIT 1 OFFSET $3 - 1"
    )
    return (
        f" FROM ({keys}) AS k CROSS JOIN {table} AS h WHERE {of_account.format(a='h.')}"
        f" AND (h.created_at_us, h.{version}) >= (COALESCE((SELECT x.created_at_us{nth}), 0),"
        f" COALESCE((SELECT x.{version}{nth}), 0))"
    )


def history_sql(account: str, position: str, limit: str) -> str:
    """A SELECT of (version, transfer id, the four totals, created_at_us) of the
    account ``account`` (an expression), newest first, at most ``limit``:
    ``position`` is a condition on ``{time}`` and ``{version}``, or empty."""
    branches = []
    for table, account_column, transfer_column, prefix in _HISTORY_SOURCES:
        version = f"{prefix}version"
        where = _of_account(table, account_column, prefix, account, "")
        if position:
            where += " AND " + position.format(time="created_at_us", version=version)
        totals = ", ".join(f"{prefix}{name} AS {name}" for name in BALANCE_TOTALS)
        branches.append(
            f"SELECT * FROM (SELECT {version} AS version, {transfer_column} AS transfer_id,"
            f" {totals}, created_at_us FROM {table} WHERE {where}"
            f" ORDER BY created_at_us DESC, {version} DESC LIMIT {limit}) AS {prefix or 'expiry_'}s"
        )
    return f"{' UNION ALL '.join(branches)} ORDER BY created_at_us DESC, version DESC LIMIT {limit}"


R = TypeVar("R")


def _newest_by_account(
    found: list[tuple[str, R]], position: Callable[[R], Any], limit: int
) -> list[tuple[str, R]]:
    """(account id, item) of each account's newest ``limit`` items, by
    ``position``, newest first: what several ordered sources read for many
    accounts at once, merged and cut."""
    by_account: dict[str, list[R]] = {}
    for account_id, item in found:
        by_account.setdefault(account_id, []).append(item)
    newest: list[tuple[str, R]] = []
    for account_id, items in sorted(by_account.items()):
        items.sort(key=position, reverse=True)
        newest.extend((account_id, item) for item in items[:limit])
    return newest


# Where a page of history starts: before (created_at_us, version) of the last
# record of the previous page; a cursor from before migration 0007 names only a
# version, which is the same place (slower to find, once).
_BEFORE = "({time}, {version}) < ($3, $4)"
_BEFORE_VERSION = "{version} < $3"


class Store(abc.ABC):
    """A database holding Tally's ledger; one per server process."""

    # What this database can tell every server process (none on SQLite).
    notifications: Notifications = Notifications()
    # Whether a commit wakes the other processes' event feeds through this
    # database (PostgreSQL's NOTIFY, while a lease runs: tally.storage.wakeup_leases).
    announces_events: bool = False
    # Appended to a SELECT that claims rows for background work: on PostgreSQL the
    # rows are locked, and rows another process holds are skipped rather than
    # waited for; SQLite's BEGIN IMMEDIATE already excludes every other writer.
    skip_locked: str = ""
    # The audit chain's order, the rows past its mark ($1 txid, $2 id), the rows
    # whose transactions have finished, and the next transaction id (to tell a
    # mark made by another cluster): tally.audit.chain. On SQLite one transaction
    # writes at a time, so ids are committed in order: the order is the id, and
    # every row's txid is 0.
    audit_order: str = "e.id"
    audit_after_mark: str = "e.id > $2"
    audit_settled: str = "1 = 1"
    audit_next_txid: str = "NULL"

    # -- lifecycle ------------------------------------------------------------------

    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise Unavailable unless the database answers."""

    # -- writes -----------------------------------------------------------------------

    @abc.abstractmethod
    async def transact(self, steps: Steps[T]) -> T:
        """Perform a write transaction's steps (storage.unit_of_work) in one
        transaction, and commit. A lost race raises TransactionConflict (the caller
        may run it again); a database that is away, Unavailable."""

    @abc.abstractmethod
    async def settle_writer(self) -> None:
        """The writer has had nothing to do for a while: end the transaction that
        its last commit opened ahead of its next batch, if the adapter opens one
        (PostgreSQL). Never raises."""

    async def lease_event_wakeups(
        self, tenant_id: str, seconds: float, renew_within_seconds: float
    ) -> float:
        """Have the tenant's commits wake every process for ``seconds`` from now,
        unless its lease has more than ``renew_within_seconds`` left already;
        return the seconds left (tally.storage.wakeup_leases). Only where
        ``announces_events``."""
        raise NotImplementedError

    @abc.abstractmethod
    async def purge_idempotency_keys(self, now_us: int, limit: int) -> int:
        """Delete at most ``limit`` keys past their retention; return how many."""

    @abc.abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[Tx]:
        """A transaction for the small writes outside the ledger (identity, audit).

        It commits when the block ends and rolls back if it raises. A unique key
        collision raises ``UniqueViolation``; an unreachable database, Unavailable.
        Keep the block short: on SQLite it holds the one write lock.
        """

    # -- the primitive every read goes through -----------------------------------------

    @abc.abstractmethod
    async def fetch(self, sql: str, *args: Any) -> list[Row]: ...

    async def fetch_point(self, sql: str, *args: Any) -> list[Row]:
        """A read of one row by its key (a credential, an account, a transfer): the
        same as ``fetch``, where an adapter can serve it more cheaply."""
        return await self.fetch(sql, *args)

    @abc.abstractmethod
    def metadata_equals(self, key_param: int, value_param: int) -> str:
        """SQL that is true when metadata[key] = value, with the key as a param."""

    @abc.abstractmethod
    def metadata_key_arg(self, key: str) -> str: ...

    @abc.abstractmethod
    def json_rows(self, param: int, columns: list[tuple[str, str]]) -> str:
        """A SELECT of the rows of parameter ``param``, a JSON array of arrays
        (``json.dumps``), with ``columns`` as (name, PostgreSQL type): a whole set
        of rows in one parameter, for one statement instead of one per row."""

    # -- reads ------------------------------------------------------------------------

    async def find_idempotency_key(self, tenant_id: str, key: str, now_us: int) -> StoredKey | None:
        rows = await self.fetch_point(
            "SELECT fingerprint, status_code, headers, body FROM idempotency_keys"
            " WHERE tenant_id = $1 AND key = $2 AND expires_at_us > $3",
            tenant_id,
            key,
            now_us,
        )
        return stored_key_from_row(rows[0]) if rows else None

    async def get_account(self, tenant_id: str, account_id: str) -> Account | None:
        rows = await self.fetch_point(
            f"SELECT {columns(ACCOUNT_COLUMNS)} FROM accounts WHERE tenant_id = $1 AND id = $2",
            tenant_id,
            account_id,
        )
        return account_from_row(rows[0]) if rows else None

    async def get_accounts(self, tenant_id: str, account_ids: list[str]) -> list[Account]:
        """The accounts of this tenant among ``account_ids``, in one statement (a
        GraphQL page naming many accounts reads them together: no N+1)."""
        if not account_ids:
            return []
        rows = await self.fetch(
            f"SELECT {columns(ACCOUNT_COLUMNS)} FROM accounts WHERE tenant_id = $1"
            f" AND id IN ({self.json_rows(2, [('id', 'text')])})",
            tenant_id,
            json.dumps([[i] for i in account_ids]),
        )
        return [account_from_row(r) for r in rows]

    async def last_transfers(
        self, tenant_id: str, account_ids: list[str], limit: int
    ) -> list[tuple[str, Transfer]]:
        """(account id, transfer) for the newest ``limit`` transfers of each account,
        newest first (by sequence, as ``list_transfers`` with an ``account_id``
        filter lists them), in one statement.

        At most ``limit`` rows per account and side (``_newest_of_each``), newest
        by (created_at_us, the account's version), which is their sequence order
        since the writer never dates an account's change before its last; merged
        by sequence and cut here. (A statement that looked for them by
        sequence, with an ``OR`` of the two sides, read every transfer of a busy
        account: past the statement timeout for one with 100,000.) Exact for
        what was written since migration 0007; in history written before it, two
        processes' batches on one account could be dated against their commit
        order by a few milliseconds, and at the cut such a pair may show the
        older of the two."""
        if not account_ids:
            return []
        keys = self.json_rows(2, [("id", "text")])
        branches = []
        for side in ("debit", "credit"):
            of_account = f"{{a}}tenant_id = $1 AND {{a}}{side}_account_id = k.id"
            branches.append(
                f"SELECT k.id, {columns(TRANSFER_COLUMNS, 'h')}"
                + _newest_of_each(keys, "transfers", of_account, f"{side}_version")
            )
        rows = await self.fetch(
            " UNION ALL ".join(branches), tenant_id, json.dumps([[i] for i in account_ids]), limit
        )
        found = [(r[0], transfer_from_row(r[1:])) for r in rows]
        return _newest_by_account(found, lambda t: t.sequence, limit)

    async def list_accounts(
        self,
        tenant_id: str,
        *,
        after_sequence: int,
        limit: int,
        currency: str | None = None,
        status: str | None = None,
        metadata: dict[str, str] | None = None,
        id_prefix: str | None = None,
    ) -> list[Account]:
        where = ["tenant_id = $1", "sequence > $2"]
        args: list[Any] = [tenant_id, after_sequence]
        if id_prefix:
            # substr, not LIKE: an id may hold "_", which LIKE reads as a wildcard.
            args.extend((len(id_prefix), id_prefix))
            where.append(f"substr(id, 1, ${len(args) - 1}) = ${len(args)}")
        if currency is not None:
            args.append(currency)
            where.append(f"currency = ${len(args)}")
        if status is not None:
            args.append(status)
            where.append(f"status = ${len(args)}")
        for key, value in (metadata or {}).items():
            args.extend((self.metadata_key_arg(key), value))
            where.append(self.metadata_equals(len(args) - 1, len(args)))
        args.append(limit)
        rows = await self.fetch(
            f"SELECT {columns(ACCOUNT_COLUMNS)} FROM accounts WHERE {' AND '.join(where)}"
            f" ORDER BY sequence LIMIT ${len(args)}",
            *args,
        )
        return [account_from_row(r) for r in rows]

    async def get_transfer(self, tenant_id: str, transfer_id: str) -> Transfer | None:
        rows = await self.fetch_point(
            f"SELECT {columns(TRANSFER_COLUMNS)} FROM transfers WHERE tenant_id = $1 AND id = $2",
            tenant_id,
            transfer_id,
        )
        return transfer_from_row(rows[0]) if rows else None

    async def list_transfers(
        self, tenant_id: str, f: TransferFilter, *, cursor: int | None, limit: int
    ) -> list[Transfer]:
        where = ["tenant_id = $1"]
        args: list[Any] = [tenant_id]
        if cursor is not None:
            args.append(cursor)
            where.append(f"sequence {'<' if f.descending else '>'} ${len(args)}")
        if f.account_id is not None:
            args.append(f.account_id)
            where.append(f"(debit_account_id = ${len(args)} OR credit_account_id = ${len(args)})")
        if f.status is not None:
            args.append(f.status)
            where.append(f"status = ${len(args)}")
        if f.created_after_us is not None:
            args.append(f.created_after_us)
            where.append(f"created_at_us > ${len(args)}")
        if f.created_before_us is not None:
            args.append(f.created_before_us)
            where.append(f"created_at_us < ${len(args)}")
        args.append(limit)
        rows = await self.fetch(
            f"SELECT {columns(TRANSFER_COLUMNS)} FROM transfers WHERE {' AND '.join(where)}"
            f" ORDER BY sequence {'DESC' if f.descending else 'ASC'} LIMIT ${len(args)}",
            *args,
        )
        return [transfer_from_row(r) for r in rows]

    async def list_balances(
        self,
        tenant_id: str,
        account_id: str,
        *,
        before: tuple[int | None, int] | None,
        limit: int,
    ) -> list[BalanceRecord]:
        """Newest first; ``before``: the (created_at_us, version) of the last
        record of the previous page (created_at_us None: a version alone)."""
        if before is None:
            rows = await self.fetch(history_sql("$2", "", "$3"), tenant_id, account_id, limit)
        elif before[0] is None:
            rows = await self.fetch(
                history_sql("$2", _BEFORE_VERSION, "$4"), tenant_id, account_id, before[1], limit
            )
        else:
            rows = await self.fetch(
                history_sql("$2", _BEFORE, "$5"), tenant_id, account_id, *before, limit
            )
        return [BalanceRecord(*r) for r in rows]

    async def first_balances(
        self, tenant_id: str, account_ids: list[str], limit: int
    ) -> list[tuple[str, BalanceRecord]]:
        """(account id, record) for the newest ``limit`` records of each account's
        balance history, newest first, in one statement.

        At most ``limit`` rows per account and source (``_newest_of_each``),
        merged and cut here."""
        if not account_ids:
            return []
        branches = []
        keys = self.json_rows(2, [("id", "text")])
        for table, account_column, transfer_column, prefix in _HISTORY_SOURCES:
            version = f"{prefix}version"
            totals = ", ".join(f"h.{prefix}{name}" for name in BALANCE_TOTALS)
            of_account = _of_account(table, account_column, prefix, "k.id", "{a}")
            branches.append(
                f"SELECT k.id, h.{version}, h.{transfer_column}, {totals}, h.created_at_us"
                + _newest_of_each(keys, table, of_account, version)
            )
        rows = await self.fetch(
            " UNION ALL ".join(branches), tenant_id, json.dumps([[i] for i in account_ids]), limit
        )
        found = [(r[0], BalanceRecord(*r[1:])) for r in rows]
        return _newest_by_account(found, lambda b: b.position, limit)

    async def balance_at(self, tenant_id: str, account_id: str, at_us: int) -> BalanceRecord | None:
        rows = await self.fetch(
            history_sql("$2", "{time} <= $3", "1"), tenant_id, account_id, at_us
        )
        return BalanceRecord(*rows[0]) if rows else None

    async def list_events(self, tenant_id: str, *, after: int, limit: int) -> list[StoredEvent]:
        rows = await self.fetch(
            f"SELECT e.sequence, e.type, e.created_at_us, e.data, {columns(TRANSFER_COLUMNS, 't')}"
            " FROM events AS e LEFT JOIN transfers AS t"
            " ON t.tenant_id = e.tenant_id AND t.id = e.object_id"
            " WHERE e.tenant_id = $1 AND e.sequence > $2 ORDER BY e.sequence LIMIT $3",
            tenant_id,
            after,
            limit,
        )
        return [
            StoredEvent(r[0], r[1], r[2], r[3], None if r[4] is None else transfer_from_row(r[4:]))
            for r in rows
        ]

    async def last_event_sequence(self, tenant_id: str) -> int:
        """The sequence of the tenant's last committed event (0: none). The counter
        moves in the transaction that writes the events, so a reader sees it move
        only when they are committed."""
        rows = await self.fetch("SELECT event_sequence FROM tenants WHERE id = $1", tenant_id)
        return int(rows[0][0]) if rows else 0

    async def due_pending_transfers(self, now_us: int, limit: int) -> list[tuple[str, str]]:
        """(tenant, transfer id) of pending transfers past their deadline."""
        rows = await self.fetch(
            "SELECT tenant_id, id FROM transfers"
            " WHERE status = 'pending' AND expires_at_us IS NOT NULL AND expires_at_us <= $1"
            " ORDER BY expires_at_us LIMIT $2",
            now_us,
            limit,
        )
        return [(r[0], r[1]) for r in rows]

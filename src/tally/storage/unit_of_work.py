"""The protocol of a ledger write transaction, and its one retry policy.

A write transaction's logic is written once, as a generator of steps
(``tally.ledger.transaction``): it yields a request (find these idempotency
keys, lock these accounts, read these transfers, write these rows) and receives
the answer. Each adapter performs the steps with its own SQL inside one
database transaction: PostgreSQL awaiting asyncpg, SQLite synchronously, in
one go, on the event loop's thread (no hop per statement, nor per batch:
``storage.sqlite``). The logic
between the steps does no I/O, so it is the same on both databases and can be
tested with none.

A transaction that lost a race (a deadlock, a serialization failure, two
processes inserting one new id, a read that went stale before its lock) rolled
back whole, so running it again is safe: ``run_transaction`` does, up to
``ATTEMPTS_MAX`` times, on either database.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from tally.core import Changes
from tally.storage.records import KeyRow

log = logging.getLogger(__name__)

ATTEMPTS_MAX = 4

T = TypeVar("T")
Key = tuple[str, str]  # (tenant_id, object id or idempotency key)


@dataclass(frozen=True, slots=True)
class FindKeys:
    """Answer: ``dict[Key, StoredKey]`` of the keys stored and not yet expired."""

    keys: list[Key]
    now_us: int


@dataclass(frozen=True, slots=True)
class ReadTransfers:
    """Answer: ``list[tuple[tenant_id, Transfer]]`` of those that exist."""

    keys: list[Key]


@dataclass(frozen=True, slots=True)
class LockAccounts:
    """Lock the accounts, in the order given (the global order), and read them.
    Answer: ``list[tuple[tenant_id, Account]]`` of those that exist."""

    keys: list[Key]


@dataclass(frozen=True, slots=True)
class LockAndRead:
    """``LockAccounts(lock)`` then ``ReadTransfers(read)``, in one round trip where
    the database can. Answer: ``(accounts, transfers)`` as those two would.

    Only for a batch that resolves no pending transfer: in one statement the read
    may see the snapshot from before the locks were granted. That is safe when the
    transfers are read only to find a create that repeats an id (a transfer
    committed meanwhile makes the insert collide, and the transaction runs again),
    not when a post or void must see its hold's current state.

    PostgreSQL may answer it with no round trip at all, from the accounts as
    its writer's own commits left them, and take none of the transfers to
    exist; its write then checks, under the same locks, that a read would have
    found exactly that, or the transaction fails as a lost race and runs again
    (``tally.storage.known_accounts``, decisions/0011)."""

    lock: list[Key]
    read: list[Key]


@dataclass(frozen=True, slots=True)
class ReadCounters:
    """Answer: ``dict[tenant_id, int]``, the event sequence each tenant's new rows
    count from. (PostgreSQL answers 0 and adds the counter in the write itself,
    under the tenant's row lock; SQLite's one writer reads it.)"""

    tenant_ids: list[str]


@dataclass(slots=True)
class TenantWrite:
    """Everything one transaction writes for one tenant."""

    tenant_id: str
    changes: Changes = field(default_factory=Changes)
    # The public JSON of each event's account, in the order of changes.events;
    # None for a transfer event, which references its transfer (migration 0005).
    event_data: list[str | None] = field(default_factory=list)
    # How far the tenant's event counter moves (the sequences the core used).
    sequences_used: int = 0
    keys: list[KeyRow] = field(default_factory=list)
    # audit_events rows, in the columns after tenant_id (storage.rows.AUDIT_COLUMNS).
    audit_rows: list[tuple[Any, ...]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Write:
    """Write everything; the adapter commits after the last step. Answer: None."""

    tenants: list[TenantWrite]
    now_us: int


Step = FindKeys | ReadTransfers | LockAccounts | LockAndRead | ReadCounters | Write
Steps = Generator[Step, Any, T]


def by_tenant(keys: Sequence[Key]) -> dict[str, list[str]]:
    """Keys grouped per tenant, each group in the order given (the lock order, when
    the keys come sorted)."""
    grouped: dict[str, list[str]] = {}
    for tenant_id, object_id in keys:
        grouped.setdefault(tenant_id, []).append(object_id)
    return grouped


class TransactionConflict(Exception):
    """The transaction lost a race and rolled back whole; running it again is safe."""


class Transactor(Protocol):
    async def transact(self, steps: Steps[T]) -> T:
        """Perform the steps in one transaction and commit; raise
        TransactionConflict for a lost race, Unavailable when the database is away."""
        ...


async def run_transaction(store: Transactor, make_steps: Callable[[], Steps[T]]) -> T:
    for attempt in range(1, ATTEMPTS_MAX + 1):
        try:
            return await store.transact(make_steps())
        except TransactionConflict as exc:
            log.info("write transaction retry %d: %s", attempt, exc)
            if attempt == ATTEMPTS_MAX:
                raise
    raise AssertionError("unreachable")


def drive(steps: Steps[T], perform: Callable[[Step], Any]) -> T:
    """Run the steps, performing each synchronously (SQLite)."""
    answer: Any = None
    try:
        while True:
            answer = perform(steps.send(answer))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


async def drive_async(steps: Steps[T], perform: Callable[[Step], Awaitable[Any]]) -> T:
    """Run the steps, awaiting each (PostgreSQL)."""
    answer: Any = None
    try:
        while True:
            answer = await perform(steps.send(answer))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


__all__ = [
    "ATTEMPTS_MAX",
    "FindKeys",
    "Key",
    "LockAccounts",
    "ReadCounters",
    "ReadTransfers",
    "Step",
    "Steps",
    "TenantWrite",
    "TransactionConflict",
    "Write",
    "by_tenant",
    "drive",
    "drive_async",
    "run_transaction",
]

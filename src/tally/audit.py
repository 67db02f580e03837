"""The audit log: every mutating request, who made it, on what, from where, with what
outcome; append-only and hash-chained.

Where a row is written:

- A request that changes something records its row **in the same transaction**
  as the change (the ledger writer's batch, or an identity transaction), so the
  log never misses a committed change, and never shows one that rolled back.
- A request that changes nothing (refused: 401, 403, 404, 422, 429; replayed
  from an idempotency key) is recorded by the ``Appender``, which batches such
  rows and commits them within ``audit_flush_seconds``. A crash can lose the
  last few of those; never the record of a change.

Rows are inserted unsealed. The ``Sealer`` (one round at a time across all
processes: it locks the one ``audit_chain`` row) gives each the next number of
the chain and ``chain_hash = sha256(previous hash, the row's fields)``, and moves
the head. ``verify`` walks the chain: an edited row no longer matches its hash,
a deleted row leaves a gap in the numbers, and deleting the newest rows leaves
the head pointing past the end. (Someone who can rewrite the whole table and the
head can forge a consistent chain; keeping a copy of ``tally audit head``
elsewhere is what detects that.)
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter

from tally.errors import TallyError
from tally.storage import Store
from tally.storage.base import Tx
from tally.storage.rows import AUDIT_COLUMNS

log = logging.getLogger(__name__)

AUDIT_APPEND_FAILURES = Counter(
    "tally_audit_append_failures", "Audit rows of refused requests that could not be written."
)

FIELDS = ("tenant_id", *AUDIT_COLUMNS)
INSERT_SQL = (
    f"INSERT INTO audit_events ({', '.join(FIELDS)})"
    f" VALUES ({', '.join(f'${i}' for i in range(1, len(FIELDS) + 1))})"
)


@dataclass(slots=True)
class AuditContext:
    """One request's audit facts, filled in as the request learns them."""

    action: str  # the route's operation id: createTransfer, revokeApiKey, ...
    request_id: str | None
    client_address: str | None
    tenant_id: str | None = None
    actor_type: str = "anonymous"  # user, api_key, anonymous
    actor_id: str | None = None
    object_id: str | None = None
    recorded: bool = False  # written with the change; the route need not append it

    def row(
        self, status: int, code: str | None, now_us: int, object_id: str | None = None
    ) -> tuple[Any, ...]:
        """The audit_events row, in the order of FIELDS."""
        return (
            self.tenant_id,
            now_us,
            self.actor_type,
            self.actor_id,
            self.action,
            object_id or self.object_id,
            status,
            code,
            self.request_id,
            self.client_address,
        )


async def record(tx: Tx, ctx: AuditContext, status: int, code: str | None, now_us: int) -> None:
    """Write the request's row in the transaction of its change."""
    await tx.execute(INSERT_SQL, *ctx.row(status, code, now_us))
    ctx.recorded = True


class Appender:
    """Batches the rows of requests that changed nothing. Bounded: past
    ``queue_rows_max`` waiting rows, ``append`` waits for the next flush."""

    def __init__(
        self, store: Store, *, flush_seconds: float, queue_rows_max: int, batch_rows_max: int
    ) -> None:
        self._store = store
        self._flush_seconds = flush_seconds
        self._queue_rows_max = queue_rows_max
        self._batch_rows_max = batch_rows_max
        self._rows: list[tuple[Any, ...]] = []
        self._flushed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="tally-audit-appender")

    async def stop(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._flush()

    async def append(self, row: tuple[Any, ...]) -> None:
        while len(self._rows) >= self._queue_rows_max and not self._closing:
            self._flushed.clear()
            await self._flushed.wait()
        self._rows.append(row)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._flush_seconds)
            await self._flush()

    async def _flush(self) -> None:
        while self._rows:
            batch = self._rows[: self._batch_rows_max]
            try:
                async with self._store.transaction() as tx:
                    for row in batch:
                        await tx.execute(INSERT_SQL, *row)
            except TallyError as exc:  # the database is away: keep them, try next round
                log.warning("audit rows not written yet: %s", exc.detail)
                if len(self._rows) > self._queue_rows_max:
                    dropped = len(self._rows) - self._queue_rows_max
                    del self._rows[:dropped]
                    AUDIT_APPEND_FAILURES.inc(dropped)
                break
            del self._rows[: len(batch)]
        self._flushed.set()


# -- the chain ------------------------------------------------------------------------


def chain_hash(previous_hash: str, seq: int, values: Sequence[Any]) -> str:
    canonical = json.dumps([seq, *values], separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(f"{previous_hash}\n{canonical}".encode()).hexdigest()


async def seal(store: Store, rows_max: int) -> int:
    """Seal up to ``rows_max`` rows onto the chain; returns how many."""
    async with store.transaction() as tx:
        # The update takes the head's row lock: sealers in other processes wait, then
        # see these rows sealed (each statement reads what is committed by then).
        await tx.execute("UPDATE audit_chain SET head_seq = head_seq WHERE id = 1")
        head = await tx.fetch("SELECT head_seq, head_hash FROM audit_chain WHERE id = 1")
        seq, previous = int(head[0][0]), str(head[0][1])
        rows = await tx.fetch(
            f"SELECT id, {', '.join(FIELDS)} FROM audit_events WHERE chain_seq IS NULL"
            " ORDER BY id LIMIT $1",
            rows_max,
        )
        for row in rows:
            seq += 1
            previous = chain_hash(previous, seq, row[1:])
            await tx.execute(
                "UPDATE audit_events SET chain_seq = $2, chain_hash = $3 WHERE id = $1",
                row[0],
                seq,
                previous,
            )
        if rows:
            await tx.execute(
                "UPDATE audit_chain SET head_seq = $1, head_hash = $2 WHERE id = 1", seq, previous
            )
    return len(rows)


async def run_sealer(store: Store, *, interval_seconds: float, rows_max: int) -> None:
    while True:
        try:
            sealed = await seal(store, rows_max)
        except TallyError as exc:
            log.warning("audit sealing failed: %s", exc.detail)
            sealed = 0
        except Exception:
            log.exception("audit sealing failed")
            sealed = 0
        if sealed < rows_max:
            await asyncio.sleep(interval_seconds)


@dataclass
class Verdict:
    sealed: int = 0
    unsealed: int = 0
    head_seq: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


async def verify(
    store: Store, *, page_rows: int = 5_000, on_page: Callable[[int], None] | None = None
) -> Verdict:
    """Walk the whole chain; name every row that was edited, deleted or added."""
    verdict = Verdict()
    head = await store.fetch("SELECT head_seq, head_hash FROM audit_chain WHERE id = 1")
    head_seq, head_hash = int(head[0][0]), str(head[0][1])
    verdict.head_seq = head_seq
    expected_seq, previous = 1, ""
    while True:
        rows = await store.fetch(
            f"SELECT chain_seq, chain_hash, id, {', '.join(FIELDS)} FROM audit_events"
            " WHERE chain_seq >= $1 ORDER BY chain_seq LIMIT $2",
            expected_seq,
            page_rows,
        )
        for row in rows:
            seq, stored = int(row[0]), str(row[1])
            if seq != expected_seq:
                verdict.problems.append(
                    f"rows {expected_seq}..{seq - 1} of the chain are missing (deleted)"
                )
            if chain_hash(previous, seq, row[3:]) != stored:
                verdict.problems.append(f"row {seq} (id {row[2]}) was edited: its hash differs")
            previous, expected_seq = stored, seq + 1
            verdict.sealed += 1
        if on_page is not None:
            on_page(verdict.sealed)
        if len(rows) < page_rows:
            break
    last_seq = expected_seq - 1
    if last_seq < head_seq:
        verdict.problems.append(f"rows {last_seq + 1}..{head_seq} at the end are missing")
    elif last_seq > head_seq:
        verdict.problems.append(f"rows {head_seq + 1}..{last_seq} were added past the head")
    elif last_seq == head_seq and head_seq and previous != head_hash:
        verdict.problems.append("the last row does not match the chain head")
    unsealed = await store.fetch("SELECT COUNT(*) FROM audit_events WHERE chain_seq IS NULL")
    verdict.unsealed = int(unsealed[0][0])
    return verdict


@dataclass(frozen=True, slots=True)
class AuditRecord:
    id: int
    occurred_at_us: int
    actor_type: str
    actor_id: str | None
    action: str
    object_id: str | None
    status_code: int
    code: str | None
    request_id: str | None
    client_address: str | None
    chain_seq: int | None
    chain_hash: str | None


async def list_events(store: Store, tenant_id: str, after_id: int, limit: int) -> list[AuditRecord]:
    rows = await store.fetch(
        f"SELECT id, {', '.join(AUDIT_COLUMNS)}, chain_seq, chain_hash FROM audit_events"
        " WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3",
        tenant_id,
        after_id,
        limit,
    )
    return [AuditRecord(*r) for r in rows]

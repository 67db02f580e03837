"""The ledger's use cases: one method each, shared by every entry point.

A method takes the tenant, core commands (``tally.ledger.commands`` builds them
from plain values) and a ``WriteContext`` saying how the caller answers and
records the request; it returns the domain result. Writes go through the
batching writer; reads go straight to the store. Nothing here knows HTTP: an
entry point renders the outcomes, and gives its pure ``answer`` function when a
keyed or audited write must commit its answer with its effect.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tally.audit import AuditContext
from tally.core import (
    Account,
    Command,
    CreateAccount,
    CreateTransfer,
    Outcome,
    PostPending,
    Transfer,
    UpdateAccount,
    VoidPending,
)
from tally.errors import IdempotencyKeyInUse, IdempotencyKeyReused, NotFound
from tally.ledger.idempotency import Claim
from tally.ledger.public import object_json
from tally.ledger.transaction import Answer, JobResult
from tally.ledger.writer import Writer
from tally.storage import Store, TransferFilter
from tally.storage.records import BalanceRecord, EventRecord, StoredEvent, StoredResponse
from tally.support.clock import Clock
from tally.support.cursors import Page, decode_cursor, decode_pair_cursor, page_of


@dataclass(frozen=True, slots=True)
class WriteContext:
    """How the caller answers and records a write.

    ``answer`` renders the outcomes as the caller's response; it is required with
    ``claim`` (an idempotency key: the answer is stored with the effect) or
    ``audit`` (the audit row commits with the effect and records its status).
    """

    answer: Answer | None = None
    claim: Claim | None = None
    audit: AuditContext | None = None


@dataclass(frozen=True, slots=True)
class Written:
    """A write's result: the core's outcomes (none when replayed), and the answer
    made inside the transaction (for keyed or audited writes), which a replay
    returns byte for byte."""

    outcomes: list[Outcome]
    answer: StoredResponse | None = None
    replayed: bool = False


NO_CONTEXT = WriteContext()


class Ledger:
    def __init__(
        self,
        store: Store,
        writer: Writer,
        *,
        clock: Clock,
        in_use_retry_after_seconds: int = 1,
    ) -> None:
        self.store = store
        self.writer = writer
        self._clock = clock
        self._in_use_retry_after_seconds = in_use_retry_after_seconds
        # Keys this process is executing now: a second request with one of them is
        # answered 409 at once rather than queued behind the first.
        self._in_flight: set[tuple[str, str]] = set()

    # -- writes ------------------------------------------------------------------------

    async def create_account(
        self, tenant_id: str, command: CreateAccount, ctx: WriteContext = NO_CONTEXT
    ) -> Written:
        return await self._write(tenant_id, [command], ctx)

    async def update_account(
        self, tenant_id: str, command: UpdateAccount, ctx: WriteContext = NO_CONTEXT
    ) -> Written:
        return await self._write(tenant_id, [command], ctx)

    async def create_transfer(
        self, tenant_id: str, command: CreateTransfer, ctx: WriteContext = NO_CONTEXT
    ) -> Written:
        return await self._write(tenant_id, [command], ctx)

    async def post_pending(
        self, tenant_id: str, command: PostPending, ctx: WriteContext = NO_CONTEXT
    ) -> Written:
        return await self._write(tenant_id, [command], ctx)

    async def void_pending(
        self, tenant_id: str, command: VoidPending, ctx: WriteContext = NO_CONTEXT
    ) -> Written:
        return await self._write(tenant_id, [command], ctx)

    async def create_batch(
        self,
        tenant_id: str,
        commands: Sequence[CreateTransfer | PostPending | VoidPending],
        *,
        atomic: bool,
        ctx: WriteContext = NO_CONTEXT,
    ) -> Written:
        """Up to a thousand transfers, posts and voids in order; atomic: all or none."""
        return await self._write(tenant_id, commands, ctx, atomic=atomic)

    async def _write(
        self,
        tenant_id: str,
        commands: Sequence[Command],
        ctx: WriteContext,
        *,
        atomic: bool = False,
    ) -> Written:
        claim = ctx.claim
        if claim is None:
            return _written(await self._submit(tenant_id, commands, ctx, atomic))
        flight = (tenant_id, claim.key)
        if flight in self._in_flight:
            raise IdempotencyKeyInUse(self._in_use_retry_after_seconds)
        # A completed key is answered without queueing. The writer checks again
        # inside its transaction: that check is the one the guarantee rests on.
        stored = await self.store.find_idempotency_key(tenant_id, claim.key, self._clock())
        if stored is not None:
            if stored.fingerprint != claim.fingerprint:
                raise IdempotencyKeyReused()
            return Written([], stored.response, replayed=True)
        self._in_flight.add(flight)
        try:
            result = await self._submit(tenant_id, commands, ctx, atomic)
        finally:
            self._in_flight.discard(flight)
        if result.error is not None:
            raise result.error
        return _written(result)

    async def _submit(
        self, tenant_id: str, commands: Sequence[Command], ctx: WriteContext, atomic: bool
    ) -> JobResult:
        result = await self.writer.submit(
            tenant_id, commands, atomic=atomic, claim=ctx.claim, answer=ctx.answer, audit=ctx.audit
        )
        if ctx.audit is not None and result.audited:
            ctx.audit.recorded = True  # the writer committed its row with the change
        return result

    # -- reads ---------------------------------------------------------------------------

    async def get_account(self, tenant_id: str, account_id: str) -> Account:
        account = await self.store.get_account(tenant_id, account_id)
        if account is None:
            raise NotFound(f"No account with id {account_id!r}.")
        return account

    async def get_accounts(self, tenant_id: str, account_ids: list[str]) -> dict[str, Account]:
        """The accounts among ``account_ids`` that exist in this tenant, by id (a
        missing one is simply absent)."""
        accounts = await self.store.get_accounts(tenant_id, account_ids)
        return {a.id: a for a in accounts}

    async def last_transfers(
        self, tenant_id: str, account_ids: list[str], limit: int
    ) -> dict[str, list[Transfer]]:
        """Each account's newest ``limit`` transfers (newest first), in one read."""
        found: dict[str, list[Transfer]] = {i: [] for i in account_ids}
        for account_id, transfer in await self.store.last_transfers(tenant_id, account_ids, limit):
            found[account_id].append(transfer)
        return found

    async def list_accounts(
        self,
        tenant_id: str,
        *,
        limit: int,
        cursor: str | None,
        currency: str | None,
        status: str | None,
        metadata: dict[str, str],
        id_prefix: str | None = None,
    ) -> Page[Account]:
        rows = await self.store.list_accounts(
            tenant_id,
            after_sequence=decode_cursor(cursor) if cursor else 0,
            limit=limit + 1,
            currency=currency,
            status=status,
            metadata=metadata,
            id_prefix=id_prefix,
        )
        return page_of(rows, limit, lambda a: a.sequence)

    # The balance reads take the account the caller already loaded (and so knows
    # exists in this tenant), rather than reading it a second time.

    async def balance_history(
        self, tenant_id: str, account: Account, *, limit: int, cursor: str | None
    ) -> Page[BalanceRecord]:
        rows = await self.store.list_balances(
            tenant_id,
            account.id,
            before=decode_pair_cursor(cursor) if cursor else None,
            limit=limit + 1,
        )
        return page_of(rows, limit, lambda b: b.position)

    async def first_balances(
        self, tenant_id: str, account_ids: list[str], limit: int
    ) -> dict[str, Page[BalanceRecord]]:
        """The first page of each account's balance history (as ``balance_history``
        with no cursor), for many accounts in one read."""
        found: dict[str, list[BalanceRecord]] = {i: [] for i in account_ids}
        rows = await self.store.first_balances(tenant_id, account_ids, limit + 1)
        for account_id, record in rows:
            found[account_id].append(record)
        return {i: page_of(r, limit, lambda b: b.position) for i, r in found.items()}

    async def balance_at(self, tenant_id: str, account: Account, at_us: int) -> BalanceRecord:
        record = await self.store.balance_at(tenant_id, account.id, at_us)
        if record is not None:
            return record
        # No transfer had touched the account by then: every total was zero.
        return BalanceRecord(
            version=0,
            transfer_id=None,
            debits_pending=0,
            debits_posted=0,
            credits_pending=0,
            credits_posted=0,
            created_at_us=None if at_us < account.created_at_us else account.created_at_us,
        )

    async def get_transfer(self, tenant_id: str, transfer_id: str) -> Transfer:
        transfer = await self.store.get_transfer(tenant_id, transfer_id)
        if transfer is None:
            raise NotFound(f"No transfer with id {transfer_id!r}.")
        return transfer

    async def list_transfers(
        self, tenant_id: str, f: TransferFilter, *, limit: int, cursor: str | None
    ) -> Page[Transfer]:
        rows = await self.store.list_transfers(
            tenant_id, f, cursor=decode_cursor(cursor) if cursor else None, limit=limit + 1
        )
        return page_of(rows, limit, lambda t: t.sequence)

    async def list_events(
        self, tenant_id: str, *, after: int, limit: int, cursor: str | None
    ) -> Page[EventRecord]:
        start = decode_cursor(cursor) if cursor else after
        rows = await self.store.list_events(tenant_id, after=start, limit=limit + 1)
        return page_of([_event(r) for r in rows], limit, lambda e: e.sequence)

    async def read_events(self, tenant_id: str, *, after: int, limit: int) -> list[EventRecord]:
        """Up to ``limit`` events after ``after``, oldest first (the live streams)."""
        rows = await self.store.list_events(tenant_id, after=after, limit=limit)
        return [_event(r) for r in rows]

    async def last_event_sequence(self, tenant_id: str) -> int:
        return await self.store.last_event_sequence(tenant_id)


def _event(stored: StoredEvent) -> EventRecord:
    """Every event with its object's public JSON: an account event's stored copy,
    or a transfer event's transfer as it was then (migration 0005)."""
    if stored.data is not None:
        data = stored.data
    else:
        assert stored.transfer is not None, "a transfer event's transfer is never deleted"
        data = object_json(stored.transfer.as_of(stored.type)).decode()
    return EventRecord(stored.sequence, stored.type, stored.created_at_us, data)


def _written(result: JobResult) -> Written:
    return Written(result.outcomes, result.response, result.replayed)

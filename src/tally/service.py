"""The service layer: one method per use case, shared by every entry point.

Routes parse and render; this layer turns a parsed request into core commands,
sends writes through the batching writer (with their idempotency key, if any),
and reads straight from the store. REST today, GraphQL later, call the same
methods.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from tally.core import (
    Account,
    Command,
    CreateAccount,
    CreateTransfer,
    NormalBalance,
    PostPending,
    Transfer,
    UpdateAccount,
    VoidPending,
)
from tally.errors import (
    FieldError,
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    NotFound,
    ValidationFailed,
)
from tally.idempotency import Claim, StoredResponse
from tally.ids import new_id
from tally.schemas import (
    AccountCreate,
    AccountUpdate,
    BatchAction,
    PendingPost,
    PendingVoid,
    TransferCreate,
)
from tally.storage import Store, TransferFilter
from tally.storage.base import BalanceRecord, EventRecord
from tally.storage.batch import AuditSource, JobResult, Render
from tally.writer import Writer

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None

    @property
    def has_more(self) -> bool:
        return self.next_cursor is not None


POSITION_MAX = 2**63 - 1  # a BIGINT: every sequence and version fits


def encode_cursor(position: int) -> str:
    return base64.urlsafe_b64encode(f"v1:{position}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        version, _, position = text.partition(":")
        if version != "v1" or not position.isdigit() or len(position) > 19:
            raise ValueError(cursor)
        if int(position) > POSITION_MAX:
            raise ValueError(cursor)
        return int(position)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ValidationFailed(
            [FieldError("cursor", "invalid", "Not a cursor this server issued.")]
        ) from None


def _page(items: list[T], limit: int, position_of_last: int) -> Page[T]:
    """Pages are fetched with one extra row: its presence says there is more."""
    if len(items) > limit:
        return Page(items[:limit], encode_cursor(position_of_last))
    return Page(items, None)


@dataclass(frozen=True, slots=True)
class Written:
    """A write's HTTP answer, and whether it replays an earlier one."""

    response: StoredResponse
    replayed: bool = False


class Ledger:
    """The use cases. Each write takes a ``render`` that turns the core's outcomes
    into the HTTP response: for a request with an Idempotency-Key the writer calls
    it inside the database transaction, so the response is stored with the effect
    (see tally.idempotency)."""

    def __init__(
        self,
        store: Store,
        writer: Writer,
        *,
        clock: Callable[[], int],
        in_use_retry_after_seconds: int = 1,
    ) -> None:
        self.store = store
        self.writer = writer
        self._clock = clock
        self._in_use_retry_after_seconds = in_use_retry_after_seconds
        # Keys this process is executing now: a second request with one of them is
        # answered 409 at once rather than queued behind the first.
        self._in_flight: set[tuple[str, str]] = set()

    async def _write(
        self,
        tenant_id: str,
        commands: Sequence[Command],
        render: Render,
        claim: Claim | None,
        *,
        atomic: bool = False,
        audit: AuditSource | None = None,
    ) -> Written:
        if claim is None:
            result = await self.writer.submit(
                tenant_id, commands, atomic=atomic, render=render, audit=audit
            )
            _mark_audited(audit, result)
            return Written(result.response or render(result.outcomes))
        flight = (tenant_id, claim.key)
        if flight in self._in_flight:
            raise IdempotencyKeyInUse(self._in_use_retry_after_seconds)
        # A completed key is answered without queueing. The writer checks again
        # inside its transaction: that check is the one the guarantee rests on.
        stored = await self.store.find_idempotency_key(tenant_id, claim.key, self._clock())
        if stored is not None:
            if stored.fingerprint != claim.fingerprint:
                raise IdempotencyKeyReused()
            return Written(stored.response, replayed=True)
        self._in_flight.add(flight)
        try:
            result = await self.writer.submit(
                tenant_id, commands, atomic=atomic, claim=claim, render=render, audit=audit
            )
        finally:
            self._in_flight.discard(flight)
        _mark_audited(audit, result)
        if result.error is not None:
            raise result.error
        assert result.response is not None
        return Written(result.response, result.replayed)

    # -- accounts ---------------------------------------------------------------------

    async def create_account(
        self,
        tenant_id: str,
        body: AccountCreate,
        render: Render,
        claim: Claim | None,
        audit: AuditSource | None = None,
    ) -> Written:
        command = CreateAccount(
            id=body.id or new_id("acc"),
            currency=body.currency,
            normal_balance=NormalBalance(body.normal_balance),
            debits_must_not_exceed_credits=body.flags.debits_must_not_exceed_credits,
            credits_must_not_exceed_debits=body.flags.credits_must_not_exceed_debits,
            metadata=body.metadata,
        )
        return await self._write(tenant_id, [command], render, claim, audit=audit)

    async def update_account(
        self,
        tenant_id: str,
        account_id: str,
        body: AccountUpdate,
        expected_version: int | None,
        render: Render,
        claim: Claim | None,
        audit: AuditSource | None = None,
    ) -> Written:
        command = UpdateAccount(
            id=account_id,
            metadata=body.metadata,
            close=body.status == "closed",
            expected_version=expected_version,
        )
        return await self._write(tenant_id, [command], render, claim, audit=audit)

    async def get_account(self, tenant_id: str, account_id: str) -> Account:
        account = await self.store.get_account(tenant_id, account_id)
        if account is None:
            raise NotFound(f"No account with id {account_id!r}.")
        return account

    async def list_accounts(
        self,
        tenant_id: str,
        *,
        limit: int,
        cursor: str | None,
        currency: str | None,
        status: str | None,
        metadata: dict[str, str],
    ) -> Page[Account]:
        rows = await self.store.list_accounts(
            tenant_id,
            after_sequence=decode_cursor(cursor) if cursor else 0,
            limit=limit + 1,
            currency=currency,
            status=status,
            metadata=metadata,
        )
        return _page(rows, limit, rows[limit - 1].sequence if len(rows) > limit else 0)

    # The balance reads take the account the caller already loaded (and so knows
    # exists in this tenant), rather than reading it a second time.

    async def balance_history(
        self, tenant_id: str, account: Account, *, limit: int, cursor: str | None
    ) -> Page[BalanceRecord]:
        rows = await self.store.list_balances(
            tenant_id,
            account.id,
            before_version=decode_cursor(cursor) if cursor else None,
            limit=limit + 1,
        )
        return _page(rows, limit, rows[limit - 1].version if len(rows) > limit else 0)

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

    # -- transfers --------------------------------------------------------------------

    async def create_transfer(
        self,
        tenant_id: str,
        body: TransferCreate,
        render: Render,
        claim: Claim | None,
        audit: AuditSource | None = None,
    ) -> Written:
        return await self._write(tenant_id, [transfer_command(body)], render, claim, audit=audit)

    async def post_pending(
        self,
        tenant_id: str,
        pending_id: str,
        body: PendingPost,
        render: Render,
        claim: Claim | None,
        audit: AuditSource | None = None,
    ) -> Written:
        command = PostPending(
            id=body.id or new_id("trf"),
            pending_id=pending_id,
            amount=body.amount,
            metadata=body.metadata,
        )
        return await self._write(tenant_id, [command], render, claim, audit=audit)

    async def void_pending(
        self,
        tenant_id: str,
        pending_id: str,
        body: PendingVoid,
        render: Render,
        claim: Claim | None,
        audit: AuditSource | None = None,
    ) -> Written:
        command = VoidPending(
            id=body.id or new_id("trf"), pending_id=pending_id, metadata=body.metadata
        )
        return await self._write(tenant_id, [command], render, claim, audit=audit)

    async def create_batch(
        self,
        tenant_id: str,
        items: Sequence[TransferCreate | BatchAction],
        render: Render,
        claim: Claim | None,
        *,
        atomic: bool,
        audit: AuditSource | None = None,
    ) -> Written:
        commands = [transfer_command(item) for item in items]
        return await self._write(tenant_id, commands, render, claim, atomic=atomic, audit=audit)

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
        return _page(rows, limit, rows[limit - 1].sequence if len(rows) > limit else 0)

    # -- events -------------------------------------------------------------------------

    async def list_events(
        self, tenant_id: str, *, after: int, limit: int, cursor: str | None
    ) -> Page[EventRecord]:
        start = decode_cursor(cursor) if cursor else after
        rows = await self.store.list_events(tenant_id, after=start, limit=limit + 1)
        return _page(rows, limit, rows[limit - 1].sequence if len(rows) > limit else 0)


def transfer_command(item: TransferCreate | BatchAction) -> Command:
    if isinstance(item, BatchAction):
        if item.action == "post":
            return PostPending(
                id=item.id or new_id("trf"),
                pending_id=item.pending_id,
                amount=item.amount,
                metadata=item.metadata,
            )
        return VoidPending(
            id=item.id or new_id("trf"), pending_id=item.pending_id, metadata=item.metadata
        )
    return CreateTransfer(
        id=item.id or new_id("trf"),
        debit_account_id=item.debit_account_id,
        credit_account_id=item.credit_account_id,
        amount=item.amount,
        currency=item.currency,
        pending=item.pending,
        timeout_seconds=item.timeout_seconds,
        metadata=item.metadata,
    )


def _mark_audited(audit: AuditSource | None, result: JobResult) -> None:
    """The writer committed the request's audit row with its effect."""
    if audit is not None and result.audited:
        audit.recorded = True

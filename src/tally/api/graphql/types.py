"""The GraphQL object types: the same objects REST answers, field for field.

Each is made from the public Struct REST renders (``tally.ledger.public``), so a
field means the same thing in both APIs. Nested fields (an account's last
transfers and balance history, a transfer's accounts) read through the
request's dataloaders, and each checks the scope its data needs, as the REST
route that serves that data would.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Generic, TypeVar

import strawberry

from tally.api.graphql.context import Context
from tally.api.graphql.scalars import Int64, JSONObject, Metadata
from tally.api.routes.accounts import snapshot_out
from tally.api.schemas.ledger import EventOut
from tally.core import Account as CoreAccount
from tally.core import Transfer as CoreTransfer
from tally.errors import FieldError, ValidationFailed
from tally.ledger.public import AccountOut, TransferOut, account_out, transfer_out
from tally.storage.records import BalanceRecord
from tally.support.cursors import Page, Position, encode_cursor

T = TypeVar("T")
Info = strawberry.Info[Context, None]

LAST_TRANSFERS_MAX = 100


@strawberry.type
class PageInfo:
    has_next_page: bool
    end_cursor: str | None = strawberry.field(
        description="Pass as `after` for the next page; null on the last page."
    )


@strawberry.type
class Edge(Generic[T]):
    cursor: str
    node: T


@strawberry.type(description="A page of a list, read from one consistent snapshot.")
class Connection(Generic[T]):
    edges: list[Edge[T]]
    nodes: list[T]
    page_info: PageInfo


def connection(page: Page[Any], nodes: list[T], positions: Sequence[Position]) -> Connection[T]:
    edges = [Edge(cursor=encode_cursor(p), node=n) for p, n in zip(positions, nodes, strict=True)]
    return Connection(
        edges=edges,
        nodes=nodes,
        page_info=PageInfo(has_next_page=page.has_more, end_cursor=page.next_cursor),
    )


@strawberry.type
class Balance:
    posted: Int64
    pending: Int64
    available: Int64


@strawberry.type
class AccountFlags:
    debits_must_not_exceed_credits: bool
    credits_must_not_exceed_debits: bool


def page_size(value: int | None, size_max: int, default: int, name: str = "first") -> int:
    """A page size as REST's ``limit``: 1 to the same maximum, or a 422-coded error."""
    size = default if value is None else value
    if not 1 <= size <= size_max:
        raise ValidationFailed([FieldError(name, "out_of_range", f"{name} must be 1-{size_max}.")])
    return size


@strawberry.type(description="A bucket of value in one currency (api.md §1).")
class Account:
    id: str
    currency: str
    normal_balance: str = strawberry.field(description="credit or debit.")
    flags: AccountFlags
    status: str = strawberry.field(description="open or closed.")
    debits_pending: Int64
    debits_posted: Int64
    credits_pending: Int64
    credits_posted: Int64
    balance: Balance
    metadata: Metadata
    version: Int64
    created_at: str
    updated_at: str
    core: strawberry.Private[CoreAccount | None] = None

    @classmethod
    def of(cls, account: CoreAccount) -> Account:
        made = cls.from_out(account_out(account))
        made.core = account
        return made

    @classmethod
    def from_out(cls, a: AccountOut) -> Account:
        return cls(
            id=a.id,
            currency=a.currency,
            normal_balance=a.normal_balance,
            flags=AccountFlags(
                debits_must_not_exceed_credits=a.flags.debits_must_not_exceed_credits,
                credits_must_not_exceed_debits=a.flags.credits_must_not_exceed_debits,
            ),
            status=a.status,
            debits_pending=a.debits_pending,
            debits_posted=a.debits_posted,
            credits_pending=a.credits_pending,
            credits_posted=a.credits_posted,
            balance=Balance(
                posted=a.balance.posted, pending=a.balance.pending, available=a.balance.available
            ),
            metadata=a.metadata,
            version=a.version,
            created_at=a.created_at,
            updated_at=a.updated_at,
        )

    @strawberry.field(
        description="The account's newest transfers, newest first (scope transfers:read)."
    )
    async def last_transfers(self, info: Info, first: int = 10) -> list[Transfer]:
        ctx = info.context
        ctx.require("transfers:read")
        size = page_size(first, LAST_TRANSFERS_MAX, 10, "first")
        found = await ctx.loaders.last_transfers(size).load(self.id)
        return [Transfer.of(t) for t in found]

    @strawberry.field(
        description="The account's totals after each change, newest first "
        "(scope accounts:read), as GET /v1/accounts/{id}/balances."
    )
    async def balance_history(
        self, info: Info, first: int | None = None, after: str | None = None
    ) -> Connection[BalanceSnapshot]:
        ctx = info.context
        ctx.require("accounts:read")
        s = ctx.services.settings
        size = page_size(first, s.page_limit_max, s.page_limit_default, "first")
        account = await self._account(ctx)
        if after is None:  # the common case, batched across the accounts of a page
            page = await ctx.loaders.balances(size).load((account.id, account))
        else:
            page = await ctx.services.ledger.balance_history(
                ctx.tenant_id, account, limit=size, cursor=after
            )
        return balance_connection(account, page)

    async def _account(self, ctx: Context) -> CoreAccount:
        if self.core is not None:
            return self.core
        # Made from a stored answer (an idempotent replay): read it now.
        return await ctx.services.ledger.get_account(ctx.tenant_id, self.id)


@strawberry.type(description="An immutable movement of value (api.md §1).")
class Transfer:
    id: str
    debit_account_id: str
    credit_account_id: str
    amount: Int64
    currency: str
    pending: bool
    status: str = strawberry.field(description="posted, pending, voided or expired.")
    timeout_seconds: int | None
    expires_at: str | None
    pending_id: str | None
    resolved_at: str | None
    metadata: Metadata
    created_at: str

    @classmethod
    def of(cls, transfer: CoreTransfer) -> Transfer:
        return cls.from_out(transfer_out(transfer))

    @classmethod
    def from_out(cls, t: TransferOut) -> Transfer:
        return cls(
            id=t.id,
            debit_account_id=t.debit_account_id,
            credit_account_id=t.credit_account_id,
            amount=t.amount,
            currency=t.currency,
            pending=t.pending,
            status=t.status,
            timeout_seconds=t.timeout_seconds,
            expires_at=t.expires_at,
            pending_id=t.pending_id,
            resolved_at=t.resolved_at,
            metadata=t.metadata,
            created_at=t.created_at,
        )

    @strawberry.field(description="The account debited (scope accounts:read).")
    async def debit_account(self, info: Info) -> Account | None:
        return await _account(info, self.debit_account_id)

    @strawberry.field(description="The account credited (scope accounts:read).")
    async def credit_account(self, info: Info) -> Account | None:
        return await _account(info, self.credit_account_id)


async def _account(info: Info, account_id: str) -> Account | None:
    ctx = info.context
    ctx.require("accounts:read")
    found = await ctx.loaders.accounts.load(account_id)
    return None if found is None else Account.of(found)


@strawberry.type(description="An account's totals after one change.")
class BalanceSnapshot:
    account_id: str
    version: Int64
    transfer_id: str | None
    debits_pending: Int64
    debits_posted: Int64
    credits_pending: Int64
    credits_posted: Int64
    balance: Balance
    created_at: str | None


def balance_connection(
    account: CoreAccount, page: Page[BalanceRecord]
) -> Connection[BalanceSnapshot]:
    nodes = []
    for record in page.items:
        s = snapshot_out(account, record)
        nodes.append(
            BalanceSnapshot(
                account_id=s.account_id,
                version=s.version,
                transfer_id=s.transfer_id,
                debits_pending=s.debits_pending,
                debits_posted=s.debits_posted,
                credits_pending=s.credits_pending,
                credits_posted=s.credits_posted,
                balance=Balance(
                    posted=s.balance.posted,
                    pending=s.balance.pending,
                    available=s.balance.available,
                ),
                created_at=s.created_at,
            )
        )
    return connection(page, nodes, [r.position for r in page.items])


@strawberry.type(description="An immutable record of a state change (api.md §1).")
class Event:
    sequence: Int64
    type: str
    created_at: str
    data: JSONObject = strawberry.field(
        description="The account or transfer as it was after the change."
    )

    @classmethod
    def from_out(cls, e: EventOut, data: dict[str, Any]) -> Event:
        return cls(sequence=e.sequence, type=e.type, created_at=e.created_at, data=data)

"""The query root: the REST reads, as GraphQL fields over the same ledger service.

Each field checks the scope of the REST route that reads the same data, and
pages with the service's keyset pagination (``first`` as REST's ``limit``, with
the same maximum; ``after`` as its ``cursor``).
"""

from __future__ import annotations

from enum import Enum
from typing import Any

import msgspec
import strawberry

from tally.api.graphql.scalars import Int64, Metadata
from tally.api.graphql.types import (
    Account,
    BalanceSnapshot,
    Connection,
    Event,
    Info,
    Transfer,
    balance_connection,
    connection,
    page_size,
)
from tally.api.parsing import checked_metadata_filters
from tally.api.routes.events import event_out
from tally.api.streams import AFTER_MAX
from tally.errors import FieldError, NotFound, ValidationFailed
from tally.storage import TransferFilter
from tally.support.clock import parse_time
from tally.support.ids import is_valid_id

FILTER_CHARS_MAX = 64


@strawberry.enum
class AccountStatus(Enum):
    OPEN = "open"
    CLOSED = "closed"


@strawberry.enum
class TransferStatus(Enum):
    POSTED = "posted"
    PENDING = "pending"
    VOIDED = "voided"
    EXPIRED = "expired"


@strawberry.enum
class Order(Enum):
    ASC = "asc"
    DESC = "desc"


def object_id(value: str) -> str:
    if not is_valid_id(value):
        # No object can have such an id, so it is simply not there (as in REST).
        raise NotFound(f"No object with id {value[:80]!r}: no id has that form.")
    return value


def _text(name: str, value: str | None, chars_max: int = FILTER_CHARS_MAX) -> str | None:
    if value is not None and (not 1 <= len(value) <= chars_max or "\x00" in value):
        raise ValidationFailed(
            [FieldError(name, "invalid", f"{name} must be 1-{chars_max} characters, no NUL.")]
        )
    return value


def _time(name: str, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return parse_time(value)
    except (ValueError, OverflowError):
        message = f"{name} must be an RFC 3339 time with a zone, such as 2026-11-26T08:00:00Z."
        raise ValidationFailed([FieldError(name, "invalid", message)]) from None


def _metadata_filters(metadata: dict[str, Any] | None) -> dict[str, str]:
    """REST's ``metadata[key]=value`` filters (the same checks), as one object."""
    if metadata is None:
        return {}
    if len(metadata) > 10 or not all(isinstance(v, str) for v in metadata.values()):
        message = "metadata is an object of at most 10 string keys to string values."
        raise ValidationFailed([FieldError("metadata", "invalid", message)])
    return checked_metadata_filters((f"metadata.{k}"[:80], k, v) for k, v in metadata.items())


def _size(info: Info, first: int | None) -> int:
    s = info.context.services.settings
    return page_size(first, s.page_limit_max, s.page_limit_default)


@strawberry.type
class Query:
    @strawberry.field(description="One account (scope accounts:read).")
    async def account(self, info: Info, id: str) -> Account:
        ctx = info.context
        ctx.require("accounts:read")
        return Account.of(await ctx.services.ledger.get_account(ctx.tenant_id, object_id(id)))

    @strawberry.field(
        description="Accounts, oldest first (scope accounts:read); metadata: each key must "
        "have this value (at most 10), as REST's metadata[key]=value."
    )
    async def accounts(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        currency: str | None = None,
        status: AccountStatus | None = None,
        metadata: Metadata | None = None,
    ) -> Connection[Account]:
        ctx = info.context
        ctx.require("accounts:read")
        filters = _metadata_filters(metadata)
        page = await ctx.services.ledger.list_accounts(
            ctx.tenant_id,
            limit=_size(info, first),
            cursor=_text("after", after, 128),
            currency=_text("currency", currency, 16),
            status=None if status is None else status.value,
            metadata=filters,
        )
        return connection(
            page, [Account.of(a) for a in page.items], [a.sequence for a in page.items]
        )

    @strawberry.field(description="One transfer (scope transfers:read).")
    async def transfer(self, info: Info, id: str) -> Transfer:
        ctx = info.context
        ctx.require("transfers:read")
        return Transfer.of(await ctx.services.ledger.get_transfer(ctx.tenant_id, object_id(id)))

    @strawberry.field(description="Transfers (scope transfers:read), as GET /v1/transfers.")
    async def transfers(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        account_id: str | None = None,
        status: TransferStatus | None = None,
        created_after: str | None = None,
        created_before: str | None = None,
        order: Order = Order.ASC,
    ) -> Connection[Transfer]:
        ctx = info.context
        ctx.require("transfers:read")
        f = TransferFilter(
            account_id=_text("accountId", account_id),
            status=None if status is None else status.value,
            created_after_us=_time("createdAfter", created_after),
            created_before_us=_time("createdBefore", created_before),
            descending=order is Order.DESC,
        )
        page = await ctx.services.ledger.list_transfers(
            ctx.tenant_id, f, limit=_size(info, first), cursor=_text("after", after, 128)
        )
        nodes = [Transfer.of(t) for t in page.items]
        return connection(page, nodes, [t.sequence for t in page.items])

    @strawberry.field(
        description="An account's totals after each change, newest first (scope accounts:read)."
    )
    async def balance_history(
        self, info: Info, account_id: str, first: int | None = None, after: str | None = None
    ) -> Connection[BalanceSnapshot]:
        ctx = info.context
        ctx.require("accounts:read")
        size, cursor = _size(info, first), _text("after", after, 128)
        ledger = ctx.services.ledger
        account = await ledger.get_account(ctx.tenant_id, object_id(account_id))
        page = await ledger.balance_history(ctx.tenant_id, account, limit=size, cursor=cursor)
        return balance_connection(account, page)

    @strawberry.field(description="Events after a sequence, oldest first (scope events:read).")
    async def events(
        self,
        info: Info,
        after_sequence: Int64 = 0,
        first: int | None = None,
        after: str | None = None,
    ) -> Connection[Event]:
        ctx = info.context
        ctx.require("events:read")
        if not 0 <= after_sequence <= AFTER_MAX:
            message = f"afterSequence must be 0-{AFTER_MAX}."
            raise ValidationFailed([FieldError("afterSequence", "out_of_range", message)])
        page = await ctx.services.ledger.list_events(
            ctx.tenant_id,
            after=after_sequence,
            limit=_size(info, first),
            cursor=_text("after", after, 128),
        )
        nodes = [Event.from_out(event_out(e), msgspec.json.decode(e.data)) for e in page.items]
        return connection(page, nodes, [e.sequence for e in page.items])

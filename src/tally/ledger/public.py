"""The public shape of the ledger's objects: what REST answers, what an event
records and what a webhook delivers, all from these Structs.

An account or transfer is rendered here, once, from the core's value, so the
object a client reads, the ``data`` of its event and the OpenAPI document's
schema cannot differ.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct

from tally.core.model import Account, Transfer
from tally.support.clock import format_time

Timestamp = Annotated[
    str,
    Meta(
        description="RFC 3339, UTC, microseconds, assigned at commit.",
        examples=["2026-11-26T08:00:00.123456Z"],
    ),
]


class FlagsOut(Struct):
    debits_must_not_exceed_credits: bool
    credits_must_not_exceed_debits: bool


class BalanceOut(Struct):
    posted: int
    pending: int
    available: int


# The answers' objects, made by the thousand for a batch: plain data, so not
# tracked by the cycle collector (gc=False; tally.core.model says why).
class AccountOut(Struct, gc=False):
    id: str
    object: Literal["account"]
    currency: str
    normal_balance: Literal["credit", "debit"]
    flags: FlagsOut
    status: Literal["open", "closed"]
    debits_pending: int
    debits_posted: int
    credits_pending: int
    credits_posted: int
    balance: BalanceOut
    metadata: dict[str, str]
    version: int
    created_at: Timestamp
    updated_at: Timestamp


class TransferOut(Struct, gc=False):
    id: str
    object: Literal["transfer"]
    debit_account_id: str
    credit_account_id: str
    amount: int
    currency: str
    pending: bool
    status: Literal["posted", "pending", "voided", "expired"]
    timeout_seconds: int | None
    expires_at: Timestamp | None
    pending_id: str | None
    resolved_at: Timestamp | None
    metadata: dict[str, str]
    created_at: Timestamp


def _maybe_time(us: int | None) -> str | None:
    return None if us is None else format_time(us)


def account_out(a: Account) -> AccountOut:
    b = a.balance
    return AccountOut(
        id=a.id,
        object="account",
        currency=a.currency,
        normal_balance=a.normal_balance.value,
        flags=FlagsOut(a.debits_must_not_exceed_credits, a.credits_must_not_exceed_debits),
        status=a.status.value,
        debits_pending=a.debits_pending,
        debits_posted=a.debits_posted,
        credits_pending=a.credits_pending,
        credits_posted=a.credits_posted,
        balance=BalanceOut(b.posted, b.pending, b.available),
        metadata=a.metadata,
        version=a.version,
        created_at=format_time(a.created_at_us),
        updated_at=format_time(a.updated_at_us),
    )


def transfer_out(t: Transfer) -> TransferOut:
    return TransferOut(
        id=t.id,
        object="transfer",
        debit_account_id=t.debit_account_id,
        credit_account_id=t.credit_account_id,
        amount=t.amount,
        currency=t.currency,
        pending=t.pending,
        status=t.status.value,
        timeout_seconds=t.timeout_seconds,
        expires_at=_maybe_time(t.expires_at_us),
        pending_id=t.pending_id,
        resolved_at=_maybe_time(t.resolved_at_us),
        metadata=t.metadata,
        created_at=format_time(t.created_at_us),
    )


_encoder = msgspec.json.Encoder()


def encode(value: object) -> bytes:
    return _encoder.encode(value)


def object_json(obj: Account | Transfer) -> bytes:
    """The public JSON of an object, as its events store it."""
    if isinstance(obj, Account):
        return _encoder.encode(account_out(obj))
    return _encoder.encode(transfer_out(obj))

"""Mapping between database rows and the core's values, shared by both backends.

Rows are plain tuples in the column order below; both adapters select and write
these same columns, so the mapping exists once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from tally.core.model import (
    Account,
    AccountStatus,
    BalanceChange,
    Event,
    NormalBalance,
    Transfer,
    TransferStatus,
)
from tally.storage.records import StoredKey, StoredResponse

ACCOUNT_COLUMNS = (
    "id",
    "sequence",
    "currency",
    "normal_balance",
    "debits_must_not_exceed_credits",
    "credits_must_not_exceed_debits",
    "status",
    "metadata",
    "version",
    "debits_pending",
    "debits_posted",
    "credits_pending",
    "credits_posted",
    "created_at_us",
    "updated_at_us",
)
TRANSFER_COLUMNS = (
    "id",
    "sequence",
    "debit_account_id",
    "credit_account_id",
    "amount",
    "currency",
    "pending",
    "status",
    "timeout_seconds",
    "expires_at_us",
    "pending_id",
    "resolved_at_us",
    "metadata",
    "created_at_us",
)
# A transfer row also carries each account's totals just after the transfer
# (migration 0007): written with the row, never read back as part of a Transfer.
BALANCE_TOTALS = ("debits_pending", "debits_posted", "credits_pending", "credits_posted")
_SIDE_BALANCE = ("version", *BALANCE_TOTALS)
TRANSFER_WRITE_COLUMNS = (
    *TRANSFER_COLUMNS,
    *(f"debit_{name}" for name in _SIDE_BALANCE),
    *(f"credit_{name}" for name in _SIDE_BALANCE),
)
# account_balances: the balance changes with no transfer row of their own (expiries).
BALANCE_COLUMNS = (
    "account_id",
    "version",
    "transfer_id",
    "debits_pending",
    "debits_posted",
    "credits_pending",
    "credits_posted",
    "created_at_us",
)
# data: an account event's copy of its account; object_id: a transfer event's
# transfer, which is not copied (migration 0005).
EVENT_COLUMNS = ("sequence", "type", "created_at_us", "data", "object_id")
KEY_COLUMNS = (
    "key",
    "fingerprint",
    "status_code",
    "headers",
    "body",
    "created_at_us",
    "expires_at_us",
)
# audit_events, after tenant_id (tally.audit describes the log).
AUDIT_COLUMNS = (
    "occurred_at_us",
    "actor_type",
    "actor_id",
    "action",
    "object_id",
    "status_code",
    "code",
    "request_id",
    "client_address",
)

Row = Sequence[Any]

_metadata_decoder = msgspec.json.Decoder(dict[str, str])
_headers_decoder = msgspec.json.Decoder(list[tuple[str, str]])
_encode = msgspec.json.encode


# Enum members by stored value: a dict lookup is a tenth of ``Enum(value)``'s cost,
# and every locked account and read transfer is built from a row.
_normal_balance = {e.value: e for e in NormalBalance}.__getitem__
_account_status = {e.value: e for e in AccountStatus}.__getitem__
_transfer_status = {e.value: e for e in TransferStatus}.__getitem__


def columns(names: Sequence[str], alias: str = "") -> str:
    prefix = f"{alias}." if alias else ""
    return ", ".join(prefix + name for name in names)


def account_from_row(r: Row) -> Account:
    # The fields in Account's order, positionally: keywords cost more, and the
    # writer builds one for every account it locks.
    return Account(
        r[0],  # id
        r[2],  # currency
        _normal_balance(r[3]),
        bool(r[4]),  # debits_must_not_exceed_credits
        bool(r[5]),  # credits_must_not_exceed_debits
        _metadata_decoder.decode(r[7]),
        _account_status(r[6]),
        r[13],  # created_at_us
        r[14],  # updated_at_us
        r[1],  # sequence
        r[8],  # version
        r[9],  # debits_pending
        r[10],  # debits_posted
        r[11],  # credits_pending
        r[12],  # credits_posted
    )


def account_row(a: Account) -> tuple[Any, ...]:
    # The enums are StrEnums: a member is its value, a str (``.value`` is a
    # descriptor call, 0.26 µs each in Python 3.11, on every row of a batch).
    return (
        a.id,
        a.sequence,
        a.currency,
        a.normal_balance,
        a.debits_must_not_exceed_credits,
        a.credits_must_not_exceed_debits,
        a.status,
        _encode(a.metadata).decode(),
        a.version,
        a.debits_pending,
        a.debits_posted,
        a.credits_pending,
        a.credits_posted,
        a.created_at_us,
        a.updated_at_us,
    )


def transfer_from_row(r: Row) -> Transfer:
    # As account_from_row: Transfer's fields in order.
    return Transfer(
        r[0],  # id
        r[2],  # debit_account_id
        r[3],  # credit_account_id
        r[4],  # amount
        r[5],  # currency
        bool(r[6]),  # pending
        _transfer_status(r[7]),
        _metadata_decoder.decode(r[12]),
        r[13],  # created_at_us
        r[1],  # sequence
        r[8],  # timeout_seconds
        r[9],  # expires_at_us
        r[10],  # pending_id
        r[11],  # resolved_at_us
    )


def transfer_row(t: Transfer) -> tuple[Any, ...]:
    return (
        t.id,
        t.sequence,
        t.debit_account_id,
        t.credit_account_id,
        t.amount,
        t.currency,
        t.pending,
        t.status,
        t.timeout_seconds,
        t.expires_at_us,
        t.pending_id,
        t.resolved_at_us,
        _encode(t.metadata).decode(),
        t.created_at_us,
    )


def _after(a: Account) -> tuple[int, int, int, int, int]:
    return (a.version, a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted)


def transfer_and_balance_rows(
    created: Sequence[Transfer], changes: Sequence[BalanceChange]
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The rows of the transfers created (``TRANSFER_WRITE_COLUMNS``) and of the
    balance changes that are not on one of them (``BALANCE_COLUMNS``).

    A transfer's creation moves its two accounts once each, and those totals go
    on its row. Every other change (an expiry, which moves the accounts of a
    transfer created earlier) is a row of its own."""
    sides: dict[tuple[str, str], tuple[int, int, int, int, int] | None] = {}
    for t in created:
        sides[t.id, t.debit_account_id] = sides[t.id, t.credit_account_id] = None
    balances = []
    for change in changes:
        key = (change.transfer_id, change.account.id)
        if key in sides and sides[key] is None:
            sides[key] = _after(change.account)
        else:
            balances.append(balance_row(change))
    transfers = []
    for t in created:
        debit, credit = sides[t.id, t.debit_account_id], sides[t.id, t.credit_account_id]
        assert debit is not None, f"{t.id} moved no debit account"
        assert credit is not None, f"{t.id} moved no credit account"
        transfers.append((*transfer_row(t), *debit, *credit))
    return transfers, balances


def balance_row(change: BalanceChange) -> tuple[Any, ...]:
    a = change.account
    return (
        a.id,
        a.version,
        change.transfer_id,
        a.debits_pending,
        a.debits_posted,
        a.credits_pending,
        a.credits_posted,
        a.updated_at_us,
    )


def event_row(e: Event, data: str | None) -> tuple[Any, ...]:
    return (e.sequence, e.type, e.created_at_us, data, e.data.id if data is None else None)


def key_row(
    key: str, fingerprint: str, response: StoredResponse, now_us: int, retention_us: int
) -> tuple[Any, ...]:
    return (
        key,
        fingerprint,
        response.status,
        _encode(response.headers).decode(),
        response.body,
        now_us,
        now_us + retention_us,
    )


def stored_key_from_row(r: Row) -> StoredKey:
    """From (fingerprint, status_code, headers, body)."""
    headers = tuple(tuple(h) for h in _headers_decoder.decode(r[2]))
    return StoredKey(r[0], StoredResponse(r[1], bytes(r[3]), headers))  # type: ignore[arg-type]

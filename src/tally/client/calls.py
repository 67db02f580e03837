"""Every call the client can make, described once: method, path, body, the
type its answer decodes into, and whether it is a write that carries an
idempotency key.

The synchronous and the asynchronous client both run these descriptions
(``Call``), so the two can never disagree on a path or a field. The request and
answer types are the server's own schemas (``tally.api.schemas``): the client
and the server cannot drift apart either.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import msgspec

from tally.api.schemas.ledger import (
    AccountCreate,
    AccountFlags,
    AccountList,
    AccountOut,
    BalanceList,
    BalanceSnapshotOut,
    BatchItem,
    BatchOut,
    EventList,
    PendingPost,
    PendingVoid,
    TransferCreate,
    TransferList,
    TransferOut,
)

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


@dataclass(frozen=True)
class Call(Generic[T_co]):
    """One logical call. ``keyed`` calls are writes: the client sends
    ``idempotency_key`` (made here, once, unless the caller gave one) on every
    attempt, so a retry can never apply the write twice."""

    method: str
    path: str
    answer: type[T_co]
    body: Any = None
    query: tuple[tuple[str, str], ...] = ()
    keyed: bool = False
    idempotency_key: str | None = None
    headers: tuple[tuple[str, str], ...] = ()

    def with_cursor(self, cursor: str) -> Call[T_co]:
        query = tuple((k, v) for k, v in self.query if k != "cursor")
        return replace(self, query=(*query, ("cursor", cursor)))

    def content(self) -> bytes | None:
        return None if self.body is None else msgspec.json.encode(self.body)


def new_idempotency_key() -> str:
    return f"tally-py-{uuid.uuid4()}"


def _write(method: str, path: str, answer: type[T], body: Any, key: str | None) -> Call[T]:
    return Call(
        method, path, answer, body, keyed=True, idempotency_key=key or new_idempotency_key()
    )


def _query(**values: Any) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    for name, value in values.items():
        if value is None:
            continue
        if name == "metadata":
            out.extend((f"metadata[{k}]", str(v)) for k, v in value.items())
        else:
            out.append((name, str(value).lower() if isinstance(value, bool) else str(value)))
    return tuple(out)


def _id(value: str) -> str:
    return quote(value, safe="")


# -- accounts ---------------------------------------------------------------------


def create_account(
    currency: str,
    *,
    id: str | None = None,
    normal_balance: str = "credit",
    debits_must_not_exceed_credits: bool = False,
    credits_must_not_exceed_debits: bool = False,
    metadata: Mapping[str, str] | None = None,
    idempotency_key: str | None = None,
) -> Call[AccountOut]:
    flags = AccountFlags(debits_must_not_exceed_credits, credits_must_not_exceed_debits)
    body = AccountCreate(
        currency=currency, id=id, normal_balance=normal_balance,  # type: ignore[arg-type]
        flags=flags, metadata=dict(metadata or {}),
    )  # fmt: skip
    return _write("POST", "/v1/accounts", AccountOut, body, idempotency_key)


def get_account(id: str) -> Call[AccountOut]:
    return Call("GET", f"/v1/accounts/{_id(id)}", AccountOut)


def list_accounts(
    *,
    currency: str | None = None,
    status: str | None = None,
    metadata: Mapping[str, str] | None = None,
    limit: int | None = None,
) -> Call[AccountList]:
    query = _query(currency=currency, status=status, metadata=metadata, limit=limit)
    return Call("GET", "/v1/accounts", AccountList, query=query)


def update_account(
    id: str,
    *,
    metadata: Mapping[str, str | None] | None = None,
    close: bool = False,
    if_match: str | None = None,
    idempotency_key: str | None = None,
) -> Call[AccountOut]:
    fields: dict[str, Any] = {}
    if metadata is not None:
        fields["metadata"] = dict(metadata)
    if close:
        fields["status"] = "closed"
    call = _write("PATCH", f"/v1/accounts/{_id(id)}", AccountOut, fields, idempotency_key)
    return replace(call, headers=(("if-match", if_match),)) if if_match else call


def list_balances(id: str, *, limit: int | None = None) -> Call[BalanceList]:
    return Call("GET", f"/v1/accounts/{_id(id)}/balances", BalanceList, query=_query(limit=limit))


def balance_at(id: str, at: str) -> Call[BalanceSnapshotOut]:
    """The account's totals as of ``at`` (RFC 3339)."""
    path = f"/v1/accounts/{_id(id)}/balances"
    return Call("GET", path, BalanceSnapshotOut, query=_query(at=at))


# -- transfers --------------------------------------------------------------------


def create_transfer(
    debit_account_id: str,
    credit_account_id: str,
    amount: int,
    *,
    id: str | None = None,
    currency: str | None = None,
    pending: bool = False,
    timeout_seconds: int | None = None,
    metadata: Mapping[str, str] | None = None,
    idempotency_key: str | None = None,
) -> Call[TransferOut]:
    body = TransferCreate(
        debit_account_id=debit_account_id, credit_account_id=credit_account_id,
        amount=amount, id=id, currency=currency, pending=pending,
        timeout_seconds=timeout_seconds, metadata=dict(metadata or {}),
    )  # fmt: skip
    return _write("POST", "/v1/transfers", TransferOut, body, idempotency_key)


def post_transfer(
    pending_id: str,
    *,
    amount: int | None = None,
    id: str | None = None,
    metadata: Mapping[str, str] | None = None,
    idempotency_key: str | None = None,
) -> Call[TransferOut]:
    body = PendingPost(id=id, amount=amount, metadata=dict(metadata or {}))
    path = f"/v1/transfers/{_id(pending_id)}/post"
    return _write("POST", path, TransferOut, body, idempotency_key)


def void_transfer(
    pending_id: str,
    *,
    id: str | None = None,
    metadata: Mapping[str, str] | None = None,
    idempotency_key: str | None = None,
) -> Call[TransferOut]:
    body = PendingVoid(id=id, metadata=dict(metadata or {}))
    path = f"/v1/transfers/{_id(pending_id)}/void"
    return _write("POST", path, TransferOut, body, idempotency_key)


def create_batch(
    items: Sequence[BatchItem | TransferCreate | Mapping[str, Any]],
    *,
    atomic: bool = False,
    idempotency_key: str | None = None,
) -> Call[BatchOut]:
    """Up to 1,000 transfers, posts and voids in order (api.md §4, Batches).
    Items may be dicts with the fields of a transfer request or a batch action."""
    body = {"transfers": [_item(i) for i in items], "atomic": atomic}
    return _write("POST", "/v1/transfers/batch", BatchOut, body, idempotency_key)


def _item(item: BatchItem | TransferCreate | Mapping[str, Any]) -> Any:
    if isinstance(item, Mapping):
        return {k: v for k, v in item.items() if v is not None}
    return item


def get_transfer(id: str) -> Call[TransferOut]:
    return Call("GET", f"/v1/transfers/{_id(id)}", TransferOut)


def list_transfers(
    *,
    account_id: str | None = None,
    status: str | None = None,
    created_after: str | None = None,
    created_before: str | None = None,
    order: str | None = None,
    limit: int | None = None,
) -> Call[TransferList]:
    query = _query(
        account_id=account_id, status=status, created_after=created_after,
        created_before=created_before, order=order, limit=limit,
    )  # fmt: skip
    return Call("GET", "/v1/transfers", TransferList, query=query)


def whoami() -> Call[dict[str, Any]]:
    """The caller: a user or an API key, its tenant and its scopes (``GET /v1/me``)."""
    return Call("GET", "/v1/me", dict)


# -- events -----------------------------------------------------------------------


def list_events(*, after: int | None = None, limit: int | None = None) -> Call[EventList]:
    return Call("GET", "/v1/events", EventList, query=_query(after=after, limit=limit))


__all__ = [
    "Call",
    "balance_at",
    "create_account",
    "create_batch",
    "create_transfer",
    "get_account",
    "get_transfer",
    "list_accounts",
    "list_balances",
    "list_events",
    "list_transfers",
    "new_idempotency_key",
    "post_transfer",
    "update_account",
    "void_transfer",
    "whoami",
]

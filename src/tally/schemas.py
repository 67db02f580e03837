"""Request and response schemas of the HTTP API, as msgspec Structs.

One Struct per direction and object (``TransferCreate`` in, ``TransferOut`` out),
so that a client can never set a field it may only read. The OpenAPI document is
generated from these same Structs, so the published contract cannot drift from
what the server parses and renders. The limits of api.md §2 live in the
annotations.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType, field

from tally.core.model import (
    AMOUNT_MAX,
    METADATA_KEY_CHARS_MAX,
    METADATA_KEYS_MAX,
    METADATA_VALUE_CHARS_MAX,
    TIMEOUT_SECONDS_MAX,
    Account,
    Transfer,
)
from tally.ids import ID_CHARS_MAX, ID_PATTERN

Id = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=ID_CHARS_MAX,
        pattern=ID_PATTERN,
        description="1-64 characters: letters, digits and . _ : - (not first).",
    ),
]
# JSON Schema counts 4241.0 as an integer; Tally does not (api.md §2: never floats).
Amount = Annotated[
    int,
    Meta(
        ge=1,
        le=AMOUNT_MAX,
        description="Minor units (cents): a JSON integer, never a float; written without "
        "a fraction or exponent (4241, not 4241.0).",
    ),
]
Currency = Annotated[
    str,
    Meta(
        pattern=r"^[A-Z][A-Z0-9_]{0,15}(?![\s\S])",  # see ids.ID_PATTERN
        description="An ISO 4217 code such as USD, or your own unit: 1-16 of A-Z, 0-9, _.",
        examples=["USD"],
    ),
]
# No NUL: PostgreSQL's text and jsonb cannot hold it.
MetadataKey = Annotated[
    str, Meta(min_length=1, max_length=METADATA_KEY_CHARS_MAX, pattern="^[^\u0000]*$")
]
MetadataValue = Annotated[str, Meta(max_length=METADATA_VALUE_CHARS_MAX, pattern="^[^\u0000]*$")]
Metadata = Annotated[
    dict[MetadataKey, MetadataValue],
    Meta(max_length=METADATA_KEYS_MAX, description="At most 50 string keys to string values."),
]
TimeoutSeconds = Annotated[
    int,
    Meta(
        ge=1,
        le=TIMEOUT_SECONDS_MAX,
        description="Seconds; pending transfers only. A JSON integer (60, not 60.0).",
    ),
]
Timestamp = Annotated[
    str,
    Meta(
        description="RFC 3339, UTC, microseconds, assigned at commit.",
        examples=["2026-11-26T08:00:00.123456Z"],
    ),
]


class _In(Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of request bodies: an unknown field is an error, never silently dropped."""


# -- requests -------------------------------------------------------------------


class AccountFlags(_In):
    debits_must_not_exceed_credits: bool = False
    credits_must_not_exceed_debits: bool = False


class AccountCreate(_In):
    currency: Currency
    id: Id | None = None
    normal_balance: Literal["credit", "debit"] = "credit"
    flags: AccountFlags = field(default_factory=AccountFlags)
    metadata: Metadata = field(default_factory=dict)


class AccountUpdate(_In):
    metadata: (
        Annotated[
            dict[MetadataKey, MetadataValue | None],
            Meta(
                max_length=METADATA_KEYS_MAX,
                description="Merged into the metadata; a null value removes that key.",
            ),
        ]
        | None
    ) = None
    status: Literal["closed"] | None = None


class TransferCreate(_In):
    debit_account_id: Id
    credit_account_id: Id
    amount: Amount
    id: Id | None = None
    currency: Currency | None = None
    pending: bool = False
    timeout_seconds: TimeoutSeconds | None = None
    metadata: Metadata = field(default_factory=dict)


class PendingPost(_In):
    id: Id | None = None
    amount: Amount | None = None
    metadata: Metadata = field(default_factory=dict)


class PendingVoid(_In):
    id: Id | None = None
    metadata: Metadata = field(default_factory=dict)


class BatchAction(_In):
    """A batch item that posts or voids a pending transfer."""

    pending_id: Id
    action: Literal["post", "void"]
    id: Id | None = None
    amount: Amount | None = None
    metadata: Metadata = field(default_factory=dict)


class BatchItem(_In):
    """A batch item as read: the union of both shapes' fields, all optional.

    The two shapes (a transfer request, a post/void action) have no tag field, so
    an item is decoded into this one typed Struct (no untyped JSON ever, so no
    unbounded nesting) and then checked for being exactly one of them. The
    OpenAPI document describes it as oneOf TransferCreate, BatchAction.
    """

    # UNSET, not None, where the two shapes accept no null: an explicit null is
    # then refused here as it would be by TransferCreate or BatchAction.
    debit_account_id: Id | UnsetType = UNSET
    credit_account_id: Id | UnsetType = UNSET
    amount: Amount | None = None
    id: Id | None = None
    currency: Currency | None = None
    pending: bool | UnsetType = UNSET
    timeout_seconds: TimeoutSeconds | None = None
    metadata: Metadata = field(default_factory=dict)
    pending_id: Id | UnsetType = UNSET
    action: Literal["post", "void"] | UnsetType = UNSET


class BatchCreate(_In):
    transfers: Annotated[
        list[BatchItem],
        Meta(
            min_length=1,
            max_length=1000,
            description="1-1000 items, each a transfer request or a post/void action.",
        ),
    ]
    atomic: bool = False


# -- responses --------------------------------------------------------------------


class FlagsOut(Struct):
    debits_must_not_exceed_credits: bool
    credits_must_not_exceed_debits: bool


class BalanceOut(Struct):
    posted: int
    pending: int
    available: int


class AccountOut(Struct):
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


class TransferOut(Struct):
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


class BalanceSnapshotOut(Struct):
    """An account's totals after one change (or as of an instant)."""

    account_id: str
    object: Literal["balance"]
    version: int
    transfer_id: str | None
    debits_pending: int
    debits_posted: int
    credits_pending: int
    credits_posted: int
    balance: BalanceOut
    created_at: Timestamp | None


class EventOut(Struct):
    sequence: int
    type: Literal[
        "account.created",
        "account.updated",
        "account.closed",
        "transfer.created",
        "transfer.expired",
    ]
    created_at: Timestamp
    data: Annotated[
        msgspec.Raw, Meta(description="The account or transfer as it was after the change.")
    ]


class ErrorOut(Struct):
    code: str
    detail: str


class BatchResultOut(Struct):
    index: int
    status: Literal["created", "exists", "failed"]
    transfer: TransferOut | None
    error: ErrorOut | None


class BatchOut(Struct):
    results: list[BatchResultOut]


class AccountList(Struct):
    data: list[AccountOut]
    has_more: bool
    next_cursor: str | None


class TransferList(Struct):
    data: list[TransferOut]
    has_more: bool
    next_cursor: str | None


class BalanceList(Struct):
    data: list[BalanceSnapshotOut]
    has_more: bool
    next_cursor: str | None


class EventList(Struct):
    data: list[EventOut]
    has_more: bool
    next_cursor: str | None


class FieldErrorOut(Struct):
    field: str
    code: str
    message: str


class Problem(Struct, omit_defaults=True):
    """RFC 9457 problem details, with the contract's stable ``code``."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    request_id: str | None = None
    errors: list[FieldErrorOut] | None = None
    fields: list[str] | None = None
    results: list[BatchResultOut] | None = None


# -- rendering ---------------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@functools.lru_cache(maxsize=4096)
def _format_second(second: int) -> str:
    return (_EPOCH + timedelta(seconds=second)).strftime("%Y-%m-%dT%H:%M:%S")


def format_time(us: int) -> str:
    # Every response and event carries several times, mostly from the same few
    # seconds: format each second once, then add the microseconds.
    second, micro = divmod(us, 1_000_000)
    return f"{_format_second(second)}.{micro:06d}Z"


def parse_time(text: str) -> int:
    """An RFC 3339 instant to microseconds; ValueError if it is not one."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError("a time needs a zone offset, such as Z")
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


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
    """The public JSON of an object, as stored in its events."""
    if isinstance(obj, Account):
        return _encoder.encode(account_out(obj))
    return _encoder.encode(transfer_out(obj))

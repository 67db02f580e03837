"""Request and response schemas of the ledger's routes, as msgspec Structs.

One Struct per direction and object (``TransferCreate`` in, ``TransferOut`` out),
so that a client can never set a field it may only read. The OpenAPI document is
generated from these same Structs, so the published contract cannot drift from
what the server parses and renders. The limits of api.md §2 live in the
annotations. The objects themselves (``AccountOut``, ``TransferOut``) are the
ledger's public shape (``tally.ledger.public``), which events record too.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType, field

from tally.api.schemas.common import NO_NUL, RequestBody, pattern
from tally.core.model import (
    AMOUNT_MAX,
    METADATA_KEY_CHARS_MAX,
    METADATA_KEYS_MAX,
    METADATA_VALUE_CHARS_MAX,
    TIMEOUT_SECONDS_MAX,
)
from tally.ledger.public import AccountOut, BalanceOut, FlagsOut, Timestamp, TransferOut
from tally.support.ids import ID_CHARS_MAX, ID_PATTERN

Id = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=ID_CHARS_MAX,
        pattern=pattern(
            ID_PATTERN,
            "Must be 1-64 characters of letters, digits and . _ : -, starting with a "
            "letter or a digit.",
        ),
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
        pattern=pattern(
            r"^[A-Z][A-Z0-9_]{0,15}(?![\s\S])",  # (?![\s\S]): see ids.ID_PATTERN
            "Must be 1-16 characters of A-Z, 0-9 and _, starting with a letter: an ISO "
            "4217 code such as USD, or your own unit such as POINTS, in capitals.",
        ),
        description="An ISO 4217 code such as USD, or your own unit: 1-16 of A-Z, 0-9, _.",
        examples=["USD"],
    ),
]
MetadataKey = Annotated[str, Meta(min_length=1, max_length=METADATA_KEY_CHARS_MAX, pattern=NO_NUL)]
MetadataValue = Annotated[str, Meta(max_length=METADATA_VALUE_CHARS_MAX, pattern=NO_NUL)]
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


# -- requests -------------------------------------------------------------------


class AccountFlags(RequestBody):
    debits_must_not_exceed_credits: bool = False
    credits_must_not_exceed_debits: bool = False


class AccountCreate(RequestBody):
    currency: Currency
    id: Id | None = None
    normal_balance: Literal["credit", "debit"] = "credit"
    flags: AccountFlags = field(default_factory=AccountFlags)
    metadata: Metadata = field(default_factory=dict)


class AccountUpdate(RequestBody):
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


class TransferCreate(RequestBody):
    debit_account_id: Id
    credit_account_id: Id
    amount: Amount
    id: Id | None = None
    currency: Currency | None = None
    pending: bool = False
    timeout_seconds: TimeoutSeconds | None = None
    metadata: Metadata = field(default_factory=dict)


class PendingPost(RequestBody):
    id: Id | None = None
    amount: Amount | None = None
    metadata: Metadata = field(default_factory=dict)


class PendingVoid(RequestBody):
    id: Id | None = None
    metadata: Metadata = field(default_factory=dict)


class BatchAction(RequestBody):
    """A batch item that posts or voids a pending transfer."""

    pending_id: Id
    action: Literal["post", "void"]
    id: Id | None = None
    amount: Amount | None = None
    metadata: Metadata = field(default_factory=dict)


class BatchItem(RequestBody):
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


class BatchCreate(RequestBody):
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


# A batch's results, one per item: plain data, so not tracked by the cycle
# collector (gc=False; tally.core.model says why).
class ErrorOut(Struct, gc=False):
    code: str
    detail: str


class BatchResultOut(Struct, gc=False):
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


__all__ = [
    "AccountCreate",
    "AccountFlags",
    "AccountList",
    "AccountOut",
    "AccountUpdate",
    "BalanceList",
    "BalanceOut",
    "BalanceSnapshotOut",
    "BatchAction",
    "BatchCreate",
    "BatchItem",
    "BatchOut",
    "BatchResultOut",
    "ErrorOut",
    "EventList",
    "EventOut",
    "FlagsOut",
    "PendingPost",
    "PendingVoid",
    "TransferCreate",
    "TransferList",
    "TransferOut",
]

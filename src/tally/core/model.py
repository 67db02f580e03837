"""The ledger's objects, as plain immutable values.

Money is an integer in minor units; times are integers in microseconds since the
Unix epoch (the core never reads a clock: the caller passes ``now_us``).
Objects are immutable: a change makes a new value, which is what lets the engine
roll back an atomic batch and lets an event keep the object exactly as it was.
Accounts, transfers, their events and balance changes (and the engine's
outcomes) are frozen msgspec Structs: the engine makes several per transfer,
thousands per batch. Built from fifteen fields, positionally, one takes 0.09 µs,
against 0.29 for a named tuple (what they were until 2026-12-07) and 1.68 for a
frozen slotted dataclass, which sets each field through ``object.__setattr__``;
a field reads in 8 ns, as a dataclass's does, against a named tuple's 18
(``timeit``, docs/performance.md). msgspec is only the record type here: the
core still does no I/O and no encoding.

They are declared ``gc=False``: Python's cycle collector does not track them. A
value holds only text, numbers, enum members, other such values and metadata
dicts of text, and being frozen it can never be made to hold itself, so no
reference cycle can pass through one and reference counting frees each. Tracked,
a batch's thousands of live values were traversed by every young-generation
collection and promoted through the older ones: a tenth of Tally's CPU on the
batch path, a hundredth since (docs/performance.md). The commands
(``tally.core.commands``) and the engine's ``Outcome`` are declared the same way.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal, NamedTuple

from msgspec import Struct
from msgspec.structs import replace

AMOUNT_MAX = 2**63 - 1
TIMEOUT_SECONDS_MAX = 31_536_000
METADATA_KEYS_MAX = 50
METADATA_KEY_CHARS_MAX = 64
METADATA_VALUE_CHARS_MAX = 512

Metadata = dict[str, str]


class NormalBalance(StrEnum):
    CREDIT = "credit"
    DEBIT = "debit"


class AccountStatus(StrEnum):
    OPEN = "open"
    CLOSED = "closed"


class TransferStatus(StrEnum):
    POSTED = "posted"
    PENDING = "pending"
    VOIDED = "voided"
    EXPIRED = "expired"


class Balance(NamedTuple):
    posted: int
    pending: int
    available: int


class Account(Struct, frozen=True, gc=False):
    id: str
    currency: str
    normal_balance: NormalBalance
    debits_must_not_exceed_credits: bool
    credits_must_not_exceed_debits: bool
    metadata: Metadata
    status: AccountStatus
    created_at_us: int
    updated_at_us: int
    # The per-tenant event sequence of the account's creation: the list order.
    sequence: int
    # Bumped by every change, totals included: the ETag and the balance history key.
    version: int = 1
    debits_pending: int = 0
    debits_posted: int = 0
    credits_pending: int = 0
    credits_posted: int = 0

    @property
    def balance(self) -> Balance:
        return derive_balance(
            self.normal_balance,
            debits_pending=self.debits_pending,
            debits_posted=self.debits_posted,
            credits_pending=self.credits_pending,
            credits_posted=self.credits_posted,
        )

    def evolve(self, **changes: Any) -> Account:
        return replace(self, **changes)

    def moved(self, *, pending_delta: int, posted_delta: int, debit: bool, now_us: int) -> Account:
        """This account after one side of a transfer: the hot path of every batch,
        so it builds the new value directly (``evolve`` costs twice as much)."""
        debits_pending, debits_posted = self.debits_pending, self.debits_posted
        credits_pending, credits_posted = self.credits_pending, self.credits_posted
        if debit:
            debits_pending += pending_delta
            debits_posted += posted_delta
        else:
            credits_pending += pending_delta
            credits_posted += posted_delta
        return Account(
            self.id,
            self.currency,
            self.normal_balance,
            self.debits_must_not_exceed_credits,
            self.credits_must_not_exceed_debits,
            self.metadata,
            self.status,
            self.created_at_us,
            now_us,
            self.sequence,
            self.version + 1,
            debits_pending,
            debits_posted,
            credits_pending,
            credits_posted,
        )


def derive_balance(
    normal_balance: NormalBalance,
    *,
    debits_pending: int,
    debits_posted: int,
    credits_pending: int,
    credits_posted: int,
) -> Balance:
    """The balance a person reads, from the four totals (api.md §1)."""
    if normal_balance is NormalBalance.CREDIT:
        return Balance(
            posted=credits_posted - debits_posted,
            pending=credits_pending - debits_pending,
            available=credits_posted - debits_posted - debits_pending,
        )
    return Balance(
        posted=debits_posted - credits_posted,
        pending=debits_pending - credits_pending,
        available=debits_posted - credits_posted - credits_pending,
    )


class Transfer(Struct, frozen=True, gc=False):
    id: str
    debit_account_id: str
    credit_account_id: str
    amount: int
    currency: str
    pending: bool
    status: TransferStatus
    metadata: Metadata
    created_at_us: int
    sequence: int
    timeout_seconds: int | None = None
    expires_at_us: int | None = None
    # Set on the records that post or void a pending transfer.
    pending_id: str | None = None
    # Set on a pending transfer once it is posted, voided or expired.
    resolved_at_us: int | None = None

    def evolve(self, **changes: Any) -> Transfer:
        return replace(self, **changes)

    def as_of(self, event_type: str) -> Transfer:
        """The transfer as it was when an event of ``event_type`` about it happened.

        A transfer changes at most once after it is created: a pending one is
        posted, voided or expired, and then never again. So only the creation of a
        pending transfer saw something other than what the transfer is now."""
        if event_type == "transfer.created" and self.pending:
            return self.evolve(status=TransferStatus.PENDING, resolved_at_us=None)
        return self


class BalanceChange(Struct, frozen=True, gc=False):
    """One row of an account's balance history: its totals after a transfer."""

    account: Account
    transfer_id: str


EventType = Literal[
    "account.created",
    "account.updated",
    "account.closed",
    "transfer.created",
    "transfer.expired",
]


class Event(Struct, frozen=True, gc=False):
    sequence: int
    type: EventType
    created_at_us: int
    # The object after the change, kept as the immutable value it was then.
    data: Account | Transfer

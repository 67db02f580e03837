"""Builders for the ledger-core unit tests.

The core is pure, so a test builds a ``Book`` in memory, applies commands and looks
at the result; nothing here touches a clock or a database.

These live in their own uniquely named module rather than in ``conftest.py``: test
modules import them by name, and ``from conftest import ...`` would resolve to
whichever directory's conftest pytest loaded last once tests/integration has one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from tally.core import (
    Account,
    Book,
    Code,
    CreateAccount,
    CreateTransfer,
    Outcome,
    PostPending,
    Status,
    Transfer,
    UpdateAccount,
    VoidPending,
)

# 2025-11-26T08:00:00Z, in microseconds since the Unix epoch.
NOW_US = 1_764_144_000_000_000
MICROSECONDS_PER_SECOND = 1_000_000
USD = "USD"
EUR = "EUR"


def make_book(
    *,
    now_us: int = NOW_US,
    last_sequence: int = 0,
    accounts: Iterable[Account] = (),
    transfers: Iterable[Transfer] = (),
) -> Book:
    return Book(accounts, transfers, now_us=now_us, last_sequence=last_sequence)


def reload(book: Book, *, now_us: int) -> Book:
    """The same ledger in a later write transaction, as a storage adapter would load it."""
    return make_book(
        now_us=now_us,
        last_sequence=book.last_sequence,
        accounts=book.accounts.values(),
        transfers=book.transfers.values(),
    )


def created(outcome: Outcome) -> Any:
    assert outcome.status is Status.CREATED, outcome
    assert outcome.code is None
    return outcome.object


def assert_fails(outcome: Outcome, code: Code) -> None:
    assert outcome.status is Status.FAILED, outcome
    assert outcome.code is code, outcome
    assert outcome.object is None
    assert not outcome.ok


def account_of(outcome: Outcome) -> Account:
    assert isinstance(outcome.object, Account), outcome
    return outcome.object


def transfer_of(outcome: Outcome) -> Transfer:
    assert isinstance(outcome.object, Transfer), outcome
    return outcome.object


def open_account(book: Book, account_id: str, currency: str = USD, **fields: Any) -> Account:
    account: Account = created(book.apply(CreateAccount(account_id, currency, **fields)))
    return account


def move(
    book: Book, transfer_id: str, debit_id: str, credit_id: str, amount: int, **fields: Any
) -> Transfer:
    transfer: Transfer = created(
        book.apply(CreateTransfer(transfer_id, debit_id, credit_id, amount, **fields))
    )
    return transfer


def fund(book: Book, account_id: str, amount: int, *, source_id: str = "source") -> Transfer:
    """Credit ``account_id`` with ``amount`` posted, from an unlimited source account."""
    if source_id not in book.accounts:
        open_account(book, source_id, book.accounts[account_id].currency)
    transfer_id = f"fund-{account_id}-{len(book.transfers)}"
    return move(book, transfer_id, source_id, account_id, amount)


def post(book: Book, post_id: str, pending_id: str, amount: int | None = None) -> Transfer:
    record: Transfer = created(book.apply(PostPending(post_id, pending_id, amount)))
    return record


def void(book: Book, void_id: str, pending_id: str) -> Transfer:
    record: Transfer = created(book.apply(VoidPending(void_id, pending_id)))
    return record


def close(book: Book, account_id: str) -> Account:
    outcome = book.apply(UpdateAccount(account_id, close=True))
    assert outcome.status is Status.UPDATED, outcome
    return account_of(outcome)


def totals(account: Account) -> dict[str, int]:
    return {
        "debits_pending": account.debits_pending,
        "debits_posted": account.debits_posted,
        "credits_pending": account.credits_pending,
        "credits_posted": account.credits_posted,
    }


def snapshot(book: Book) -> dict[str, Any]:
    """Everything a failed command or atomic batch must leave exactly as it was."""
    changes = book.changes()
    return {
        "accounts": dict(book.accounts),
        "transfers": dict(book.transfers),
        "last_sequence": book.last_sequence,
        "changes": dataclasses.asdict(changes),
        "events": [(e.sequence, e.type, e.data) for e in changes.events],
        "balance_changes": list(changes.balance_changes),
    }

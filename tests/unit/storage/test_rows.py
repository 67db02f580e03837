"""Rows and the core's values: building an Account or Transfer from a stored row
is the inverse of writing one (tally.storage.rows builds them positionally, so a
field out of place would show here first)."""

from __future__ import annotations

from enum import Enum
from typing import Any

from tally.core import Account, AccountStatus, NormalBalance, Transfer, TransferStatus
from tally.storage.rows import account_from_row, account_row, transfer_from_row, transfer_row


def _stored(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """The row as the database gives it back: an enum is plain text there (a row
    is written with the StrEnum member, which is its value)."""
    return tuple(v.value if isinstance(v, Enum) else v for v in row)


def test_an_account_read_back_from_its_row_is_the_same_account() -> None:
    account = Account(
        id="acc_1",
        currency="USD",
        normal_balance=NormalBalance.DEBIT,
        debits_must_not_exceed_credits=True,
        credits_must_not_exceed_debits=False,
        metadata={"owner": "ada"},
        status=AccountStatus.CLOSED,
        created_at_us=1_000,
        updated_at_us=2_000,
        sequence=7,
        version=3,
        debits_pending=11,
        debits_posted=12,
        credits_pending=13,
        credits_posted=14,
    )
    back = account_from_row(_stored(account_row(account)))
    assert back == account
    # A StrEnum equals its text, so equality alone would pass a bare str; the
    # core compares members by identity.
    assert back.normal_balance is NormalBalance.DEBIT
    assert back.status is AccountStatus.CLOSED


def test_a_transfer_read_back_from_its_row_is_the_same_transfer() -> None:
    transfer = Transfer(
        id="trf_1",
        debit_account_id="acc_1",
        credit_account_id="acc_2",
        amount=500,
        currency="EUR",
        pending=True,
        status=TransferStatus.VOIDED,
        metadata={"order": "42"},
        created_at_us=3_000,
        sequence=9,
        timeout_seconds=60,
        expires_at_us=63_000,
        pending_id="trf_0",
        resolved_at_us=4_000,
    )
    back = transfer_from_row(_stored(transfer_row(transfer)))
    assert back == transfer
    assert back.status is TransferStatus.VOIDED

"""Single-phase transfers: what moves, what is refused, and idempotent ids."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from tally.core import (
    AMOUNT_MAX,
    Book,
    Code,
    CreateTransfer,
    Status,
    TransferStatus,
    UpdateAccount,
)
from tests.unit.core.builders import (
    EUR,
    NOW_US,
    USD,
    assert_fails,
    close,
    fund,
    move,
    open_account,
    post,
    snapshot,
    totals,
    transfer_of,
)


@pytest.fixture
def pair(book: Book) -> Book:
    """A book with two unlimited USD accounts, ``a`` and ``b``."""
    open_account(book, "a")
    open_account(book, "b")
    return book


def refused(book: Book, command: CreateTransfer, code: Code) -> None:
    """Assert the command fails with ``code`` and leaves the book exactly as it was."""
    before = snapshot(book)
    assert_fails(book.apply(command), code)
    assert snapshot(book) == before


# -- what a transfer does ----------------------------------------------------------------


def test_transfer_moves_amount_to_posted_totals_of_both_accounts(pair: Book) -> None:
    transfer = move(pair, "t1", "a", "b", 125, metadata={"order": "42"})

    assert transfer.status is TransferStatus.POSTED
    assert not transfer.pending
    assert (transfer.debit_account_id, transfer.credit_account_id) == ("a", "b")
    assert transfer.amount == 125
    assert transfer.currency == USD
    assert transfer.metadata == {"order": "42"}
    assert transfer.created_at_us == NOW_US
    assert transfer.timeout_seconds is None
    assert transfer.expires_at_us is None
    assert transfer.pending_id is None
    assert transfer.resolved_at_us is None
    assert pair.transfers["t1"] is transfer
    assert totals(pair.accounts["a"]) == {
        "debits_pending": 0,
        "debits_posted": 125,
        "credits_pending": 0,
        "credits_posted": 0,
    }
    assert totals(pair.accounts["b"]) == {
        "debits_pending": 0,
        "debits_posted": 0,
        "credits_pending": 0,
        "credits_posted": 125,
    }


def test_transfer_bumps_version_and_update_time_of_both_accounts(pair: Book) -> None:
    pair.now_us = NOW_US + 9

    move(pair, "t1", "a", "b", 1)

    for account_id in ("a", "b"):
        assert pair.accounts[account_id].version == 2
        assert pair.accounts[account_id].updated_at_us == NOW_US + 9


def test_transfer_records_one_balance_change_per_account(pair: Book) -> None:
    move(pair, "t1", "a", "b", 5)

    rows = pair.changes().balance_changes

    assert [(row.account.id, row.transfer_id) for row in rows] == [("a", "t1"), ("b", "t1")]
    assert rows[0].account is pair.accounts["a"]
    assert rows[1].account is pair.accounts["b"]


def test_transfer_accepts_the_largest_amount(pair: Book) -> None:
    transfer = move(pair, "t1", "a", "b", AMOUNT_MAX)

    assert transfer.amount == AMOUNT_MAX
    assert pair.accounts["a"].debits_posted == AMOUNT_MAX
    assert pair.accounts["b"].credits_posted == AMOUNT_MAX


# -- accounts and currency ---------------------------------------------------------------


def test_rejects_transfer_between_an_account_and_itself(pair: Book) -> None:
    refused(pair, CreateTransfer("t1", "a", "a", 1), Code.ACCOUNTS_MUST_BE_DIFFERENT)


def test_rejects_transfer_from_unknown_debit_account(pair: Book) -> None:
    refused(pair, CreateTransfer("t1", "ghost", "b", 1), Code.DEBIT_ACCOUNT_NOT_FOUND)


def test_rejects_transfer_to_unknown_credit_account(pair: Book) -> None:
    refused(pair, CreateTransfer("t1", "a", "ghost", 1), Code.CREDIT_ACCOUNT_NOT_FOUND)


def test_reports_the_debit_account_first_when_both_accounts_are_unknown(pair: Book) -> None:
    refused(pair, CreateTransfer("t1", "ghost", "phantom", 1), Code.DEBIT_ACCOUNT_NOT_FOUND)


def test_rejects_transfer_between_accounts_in_different_currencies(pair: Book) -> None:
    open_account(pair, "euros", EUR)

    refused(pair, CreateTransfer("t1", "a", "euros", 1), Code.ACCOUNTS_MUST_HAVE_THE_SAME_CURRENCY)
    refused(pair, CreateTransfer("t2", "euros", "a", 1), Code.ACCOUNTS_MUST_HAVE_THE_SAME_CURRENCY)


def test_accepts_transfer_between_accounts_in_the_same_non_default_currency(pair: Book) -> None:
    open_account(pair, "euros", EUR)
    open_account(pair, "more-euros", EUR)

    transfer = move(pair, "t1", "euros", "more-euros", 1)

    assert transfer.currency == EUR


def test_rejects_transfer_whose_currency_differs_from_its_accounts(pair: Book) -> None:
    refused(pair, CreateTransfer("t1", "a", "b", 1, currency=EUR), Code.CURRENCY_MISMATCH)


def test_accepts_transfer_whose_currency_matches_its_accounts(pair: Book) -> None:
    transfer = move(pair, "t1", "a", "b", 1, currency=USD)

    assert transfer.currency == USD


def test_rejects_transfer_from_a_closed_debit_account(pair: Book) -> None:
    close(pair, "a")

    refused(pair, CreateTransfer("t1", "a", "b", 1), Code.DEBIT_ACCOUNT_CLOSED)


def test_rejects_transfer_to_a_closed_credit_account(pair: Book) -> None:
    close(pair, "b")

    refused(pair, CreateTransfer("t1", "a", "b", 1), Code.CREDIT_ACCOUNT_CLOSED)


def test_a_closed_account_does_not_block_transfers_between_open_accounts(pair: Book) -> None:
    open_account(pair, "c")
    pair.apply(UpdateAccount("a", metadata={"note": "still open"}))
    close(pair, "c")

    move(pair, "t1", "a", "b", 1)
    move(pair, "t2", "b", "a", 1)


def test_rejects_pending_transfer_on_a_closed_account(pair: Book) -> None:
    close(pair, "b")

    refused(pair, CreateTransfer("t1", "a", "b", 1, pending=True), Code.CREDIT_ACCOUNT_CLOSED)


def test_rejects_timeout_on_a_transfer_that_is_not_pending(pair: Book) -> None:
    refused(
        pair, CreateTransfer("t1", "a", "b", 1, timeout_seconds=60), Code.TIMEOUT_REQUIRES_PENDING
    )


def test_accepts_timeout_on_a_pending_transfer(pair: Book) -> None:
    transfer = move(pair, "t1", "a", "b", 1, pending=True, timeout_seconds=60)

    assert transfer.timeout_seconds == 60


# -- limits: debits_must_not_exceed_credits ----------------------------------------------


@pytest.fixture
def wallet_with_100(pair: Book) -> Book:
    """``wallet`` may not be overdrawn and holds 100 posted credits."""
    open_account(pair, "wallet", debits_must_not_exceed_credits=True)
    fund(pair, "wallet", 100)
    return pair


def test_accepts_transfer_of_exactly_the_available_credits(wallet_with_100: Book) -> None:
    move(wallet_with_100, "spend", "wallet", "b", 100)

    assert wallet_with_100.accounts["wallet"].balance.available == 0


def test_rejects_transfer_that_exceeds_credits(wallet_with_100: Book) -> None:
    refused(wallet_with_100, CreateTransfer("spend", "wallet", "b", 101), Code.EXCEEDS_CREDITS)


def test_rejects_pending_transfer_that_exceeds_credits(wallet_with_100: Book) -> None:
    refused(
        wallet_with_100,
        CreateTransfer("hold", "wallet", "b", 101, pending=True),
        Code.EXCEEDS_CREDITS,
    )


def test_earlier_spending_counts_against_the_credit_limit(wallet_with_100: Book) -> None:
    move(wallet_with_100, "spend-1", "wallet", "b", 60)

    refused(wallet_with_100, CreateTransfer("spend-2", "wallet", "b", 41), Code.EXCEEDS_CREDITS)
    move(wallet_with_100, "spend-3", "wallet", "b", 40)


def test_reservations_count_against_the_credit_limit(wallet_with_100: Book) -> None:
    move(wallet_with_100, "hold", "wallet", "b", 60, pending=True)

    refused(wallet_with_100, CreateTransfer("spend", "wallet", "b", 41), Code.EXCEEDS_CREDITS)
    move(wallet_with_100, "spend-rest", "wallet", "b", 40)


def test_pending_credits_cannot_be_spent(pair: Book) -> None:
    open_account(pair, "wallet", debits_must_not_exceed_credits=True)
    move(pair, "incoming", "a", "wallet", 100, pending=True)

    refused(pair, CreateTransfer("spend", "wallet", "b", 1), Code.EXCEEDS_CREDITS)


def test_account_with_the_credit_limit_cannot_spend_anything_before_it_is_funded(
    pair: Book,
) -> None:
    open_account(pair, "wallet", debits_must_not_exceed_credits=True)

    refused(pair, CreateTransfer("spend", "wallet", "b", 1), Code.EXCEEDS_CREDITS)


def test_credit_limit_does_not_limit_what_the_account_receives(wallet_with_100: Book) -> None:
    move(wallet_with_100, "more", "a", "wallet", AMOUNT_MAX - 100)

    assert wallet_with_100.accounts["wallet"].credits_posted == AMOUNT_MAX


# -- limits: credits_must_not_exceed_debits ----------------------------------------------


@pytest.fixture
def receivable_with_100(pair: Book) -> Book:
    """``receivable`` may not take more credits than debits, and has 100 posted debits."""
    open_account(pair, "receivable", credits_must_not_exceed_debits=True)
    move(pair, "invoice", "receivable", "a", 100)
    return pair


def test_accepts_credit_of_exactly_the_posted_debits(receivable_with_100: Book) -> None:
    move(receivable_with_100, "paid", "b", "receivable", 100)

    assert receivable_with_100.accounts["receivable"].credits_posted == 100


def test_rejects_transfer_that_exceeds_debits(receivable_with_100: Book) -> None:
    refused(
        receivable_with_100, CreateTransfer("paid", "b", "receivable", 101), Code.EXCEEDS_DEBITS
    )


def test_pending_credits_count_against_the_debit_limit(receivable_with_100: Book) -> None:
    move(receivable_with_100, "held", "b", "receivable", 70, pending=True)

    refused(receivable_with_100, CreateTransfer("paid", "b", "receivable", 31), Code.EXCEEDS_DEBITS)
    move(receivable_with_100, "paid-rest", "b", "receivable", 30)


def test_debit_limit_does_not_limit_what_the_account_sends(receivable_with_100: Book) -> None:
    move(receivable_with_100, "more", "receivable", "b", AMOUNT_MAX - 100)


def test_reports_the_debit_side_limit_first_when_both_limits_are_broken(pair: Book) -> None:
    open_account(pair, "wallet", debits_must_not_exceed_credits=True)
    open_account(pair, "receivable", credits_must_not_exceed_debits=True)

    refused(pair, CreateTransfer("t1", "wallet", "receivable", 1), Code.EXCEEDS_CREDITS)


# -- overflow at 2^63-1 ------------------------------------------------------------------


def test_accepts_debits_reaching_exactly_the_largest_total(pair: Book) -> None:
    open_account(pair, "c")
    move(pair, "t1", "a", "b", AMOUNT_MAX - 1)

    move(pair, "t2", "a", "c", 1)

    assert pair.accounts["a"].debits_posted == AMOUNT_MAX


def test_rejects_transfer_that_overflows_debits(pair: Book) -> None:
    open_account(pair, "c")
    move(pair, "t1", "a", "b", AMOUNT_MAX)

    refused(pair, CreateTransfer("t2", "a", "c", 1), Code.OVERFLOWS_DEBITS)


def test_reservations_count_towards_debit_overflow(pair: Book) -> None:
    open_account(pair, "c")
    move(pair, "hold", "a", "b", AMOUNT_MAX - 10, pending=True)

    refused(pair, CreateTransfer("t2", "a", "c", 11), Code.OVERFLOWS_DEBITS)
    move(pair, "t3", "a", "c", 10)


def test_accepts_credits_reaching_exactly_the_largest_total(pair: Book) -> None:
    open_account(pair, "c")
    move(pair, "t1", "a", "b", AMOUNT_MAX - 1)

    move(pair, "t2", "c", "b", 1)

    assert pair.accounts["b"].credits_posted == AMOUNT_MAX


def test_rejects_transfer_that_overflows_credits(pair: Book) -> None:
    open_account(pair, "c")
    move(pair, "t1", "a", "b", AMOUNT_MAX)

    refused(pair, CreateTransfer("t2", "c", "b", 1), Code.OVERFLOWS_CREDITS)


def test_reservations_count_towards_credit_overflow(pair: Book) -> None:
    open_account(pair, "c")
    move(pair, "hold", "a", "b", AMOUNT_MAX - 10, pending=True)

    refused(pair, CreateTransfer("t2", "c", "b", 11), Code.OVERFLOWS_CREDITS)
    move(pair, "t3", "c", "b", 10)


def test_reports_debit_overflow_first_when_both_sides_would_overflow(pair: Book) -> None:
    move(pair, "t1", "a", "b", AMOUNT_MAX)

    refused(pair, CreateTransfer("t2", "a", "b", 1), Code.OVERFLOWS_DEBITS)


def test_debits_of_an_account_do_not_count_towards_its_credit_overflow(pair: Book) -> None:
    open_account(pair, "c")
    move(pair, "t1", "a", "b", AMOUNT_MAX)

    move(pair, "t2", "c", "a", AMOUNT_MAX)

    assert totals(pair.accounts["a"])["debits_posted"] == AMOUNT_MAX
    assert totals(pair.accounts["a"])["credits_posted"] == AMOUNT_MAX


# -- idempotent ids ----------------------------------------------------------------------


def test_repeated_transfer_with_same_fields_returns_the_existing_transfer(pair: Book) -> None:
    command = CreateTransfer("t1", "a", "b", 10, metadata={"order": "42"})
    first = pair.apply(command)
    before = snapshot(pair)

    again = pair.apply(command)

    assert again.status is Status.EXISTS
    assert again.ok
    assert again.object is first.object
    assert snapshot(pair) == before


def test_repeated_transfer_naming_the_currency_it_was_created_without_still_exists(
    pair: Book,
) -> None:
    move(pair, "t1", "a", "b", 10)

    again = pair.apply(CreateTransfer("t1", "a", "b", 10, currency=USD))

    assert again.status is Status.EXISTS


def test_repeated_transfer_exists_even_after_its_account_closed(pair: Book) -> None:
    command = CreateTransfer("t1", "a", "b", 10)
    pair.apply(command)
    close(pair, "a")

    again = pair.apply(command)

    assert again.status is Status.EXISTS


def test_repeated_transfer_exists_even_when_it_would_now_exceed_credits(pair: Book) -> None:
    open_account(pair, "wallet", debits_must_not_exceed_credits=True)
    fund(pair, "wallet", 10)
    command = CreateTransfer("spend", "wallet", "b", 10)
    pair.apply(command)

    again = pair.apply(command)

    assert again.status is Status.EXISTS
    assert pair.accounts["wallet"].debits_posted == 10


def test_repeated_pending_transfer_returns_its_current_status(pair: Book) -> None:
    command = CreateTransfer("hold", "a", "b", 10, pending=True)
    pair.apply(command)
    post(pair, "capture", "hold")

    again = pair.apply(command)

    assert again.status is Status.EXISTS
    assert transfer_of(again).status is TransferStatus.POSTED


@pytest.mark.parametrize(
    ("changed", "field"),
    [
        ({"debit_account_id": "c"}, "debit_account_id"),
        ({"credit_account_id": "c"}, "credit_account_id"),
        ({"amount": 11}, "amount"),
        ({"currency": EUR}, "currency"),
        ({"pending": True}, "pending"),
        ({"metadata": {"order": "43"}}, "metadata"),
    ],
)
def test_rejects_transfer_id_reused_with_different_field(
    pair: Book, changed: dict[str, Any], field: str
) -> None:
    open_account(pair, "c")
    original = CreateTransfer("t1", "a", "b", 10, metadata={"order": "42"})
    pair.apply(original)
    before = snapshot(pair)

    outcome = pair.apply(msgspec.structs.replace(original, **changed))

    assert_fails(outcome, Code.EXISTS_WITH_DIFFERENT_FIELDS)
    assert outcome.fields == (field,)
    assert snapshot(pair) == before


def test_rejects_pending_transfer_id_reused_with_different_timeout(pair: Book) -> None:
    move(pair, "hold", "a", "b", 10, pending=True, timeout_seconds=60)

    outcome = pair.apply(CreateTransfer("hold", "a", "b", 10, pending=True, timeout_seconds=61))

    assert_fails(outcome, Code.EXISTS_WITH_DIFFERENT_FIELDS)
    assert outcome.fields == ("timeout_seconds",)


def test_names_every_differing_field_when_transfer_id_is_reused(pair: Book) -> None:
    move(pair, "t1", "a", "b", 10)

    outcome = pair.apply(CreateTransfer("t1", "b", "a", 20, metadata={"x": "y"}))

    assert_fails(outcome, Code.EXISTS_WITH_DIFFERENT_FIELDS)
    assert set(outcome.fields) == {"debit_account_id", "credit_account_id", "amount", "metadata"}


def test_rejects_transfer_reusing_the_id_of_a_post_record(pair: Book) -> None:
    move(pair, "hold", "a", "b", 10, pending=True)
    post(pair, "capture", "hold")

    outcome = pair.apply(CreateTransfer("capture", "a", "b", 10))

    assert_fails(outcome, Code.EXISTS_WITH_DIFFERENT_FIELDS)
    assert "pending_id" in outcome.fields


def test_existing_transfer_id_wins_over_validation_of_the_new_fields(pair: Book) -> None:
    move(pair, "t1", "a", "b", 10)

    outcome = pair.apply(CreateTransfer("t1", "a", "a", 10, timeout_seconds=5))

    assert_fails(outcome, Code.EXISTS_WITH_DIFFERENT_FIELDS)
    assert set(outcome.fields) == {"credit_account_id", "timeout_seconds"}

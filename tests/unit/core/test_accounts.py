"""Accounts: creation, idempotent ids, updates, closing and derived balances."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from tally.core import (
    AccountStatus,
    Balance,
    Book,
    Code,
    CreateAccount,
    NormalBalance,
    Status,
    UpdateAccount,
)
from tally.core.model import METADATA_KEYS_MAX
from tests.unit.core.builders import (
    EUR,
    NOW_US,
    USD,
    account_of,
    assert_fails,
    close,
    fund,
    make_book,
    move,
    open_account,
    reload,
    snapshot,
)


def metadata_with(key_count: int, prefix: str = "k") -> dict[str, str]:
    return {f"{prefix}{i}": "v" for i in range(key_count)}


# -- creation ---------------------------------------------------------------------------


def test_creates_open_credit_normal_account_with_zero_totals(book: Book) -> None:
    account = open_account(book, "wallet", USD)

    assert account.id == "wallet"
    assert account.currency == USD
    assert account.normal_balance is NormalBalance.CREDIT
    assert account.status is AccountStatus.OPEN
    assert not account.debits_must_not_exceed_credits
    assert not account.credits_must_not_exceed_debits
    assert account.metadata == {}
    assert account.created_at_us == NOW_US
    assert account.updated_at_us == NOW_US
    assert account.version == 1
    assert (account.debits_pending, account.debits_posted) == (0, 0)
    assert (account.credits_pending, account.credits_posted) == (0, 0)
    assert account.balance == Balance(posted=0, pending=0, available=0)
    assert book.accounts["wallet"] is account


def test_creates_account_with_requested_normal_balance_flag_and_metadata(book: Book) -> None:
    account = open_account(
        book,
        "cash",
        EUR,
        normal_balance=NormalBalance.DEBIT,
        credits_must_not_exceed_debits=True,
        metadata={"bank": "acme"},
    )

    assert account.normal_balance is NormalBalance.DEBIT
    assert account.credits_must_not_exceed_debits
    assert not account.debits_must_not_exceed_credits
    assert account.metadata == {"bank": "acme"}


def test_account_metadata_is_a_copy_of_the_command_metadata(book: Book) -> None:
    metadata = {"owner": "ada"}
    account = open_account(book, "wallet", metadata=metadata)

    metadata["owner"] = "mallory"

    assert account.metadata == {"owner": "ada"}


def test_rejects_account_with_both_limit_flags(book: Book) -> None:
    before = snapshot(book)

    outcome = book.apply(
        CreateAccount(
            "both",
            USD,
            debits_must_not_exceed_credits=True,
            credits_must_not_exceed_debits=True,
        )
    )

    assert_fails(outcome, Code.FLAGS_ARE_MUTUALLY_EXCLUSIVE)
    assert snapshot(book) == before


@pytest.mark.parametrize(
    "flag", ["debits_must_not_exceed_credits", "credits_must_not_exceed_debits"]
)
def test_accepts_account_with_exactly_one_limit_flag(book: Book, flag: str) -> None:
    account = open_account(book, "limited", USD, **{flag: True})

    assert getattr(account, flag) is True


# -- idempotent ids ----------------------------------------------------------------------


def test_repeated_account_creation_with_same_fields_returns_the_existing_account(
    book: Book,
) -> None:
    command = CreateAccount(
        "wallet", USD, debits_must_not_exceed_credits=True, metadata={"owner": "ada"}
    )
    first = book.apply(command)
    before = snapshot(book)

    again = book.apply(command)

    assert again.status is Status.EXISTS
    assert again.ok
    assert again.code is None
    assert again.object is first.object
    assert snapshot(book) == before


def test_repeated_account_creation_returns_existing_account_with_its_current_totals(
    book: Book,
) -> None:
    open_account(book, "wallet")
    fund(book, "wallet", 25)

    again = book.apply(CreateAccount("wallet", USD))

    assert again.status is Status.EXISTS
    assert again.object is book.accounts["wallet"]
    assert account_of(again).credits_posted == 25


@pytest.mark.parametrize(
    ("changed", "field"),
    [
        ({"currency": EUR}, "currency"),
        ({"normal_balance": NormalBalance.DEBIT}, "normal_balance"),
        ({"debits_must_not_exceed_credits": True}, "flags.debits_must_not_exceed_credits"),
        ({"credits_must_not_exceed_debits": True}, "flags.credits_must_not_exceed_debits"),
        ({"metadata": {"owner": "bob"}}, "metadata"),
    ],
)
def test_rejects_account_id_reused_with_different_field(
    book: Book, changed: dict[str, Any], field: str
) -> None:
    original = CreateAccount("wallet", USD, metadata={"owner": "ada"})
    book.apply(original)
    before = snapshot(book)

    outcome = book.apply(msgspec.structs.replace(original, **changed))

    assert_fails(outcome, Code.EXISTS_WITH_DIFFERENT_FIELDS)
    assert outcome.fields == (field,)
    assert snapshot(book) == before


def test_names_every_differing_field_when_account_id_is_reused(book: Book) -> None:
    open_account(book, "wallet", USD)

    outcome = book.apply(
        CreateAccount("wallet", EUR, NormalBalance.DEBIT, metadata={"owner": "bob"})
    )

    assert_fails(outcome, Code.EXISTS_WITH_DIFFERENT_FIELDS)
    assert set(outcome.fields) == {"currency", "normal_balance", "metadata"}


def test_existing_account_id_wins_over_flag_validation(book: Book) -> None:
    open_account(book, "wallet")

    outcome = book.apply(
        CreateAccount(
            "wallet", USD, debits_must_not_exceed_credits=True, credits_must_not_exceed_debits=True
        )
    )

    assert_fails(outcome, Code.EXISTS_WITH_DIFFERENT_FIELDS)
    assert set(outcome.fields) == {
        "flags.debits_must_not_exceed_credits",
        "flags.credits_must_not_exceed_debits",
    }


# -- updates -----------------------------------------------------------------------------


def test_update_of_unknown_account_is_not_found(book: Book) -> None:
    open_account(book, "wallet")
    before = snapshot(book)

    outcome = book.apply(UpdateAccount("nobody", metadata={"a": "b"}))

    assert_fails(outcome, Code.NOT_FOUND)
    assert snapshot(book) == before


def test_update_of_known_account_is_found(book: Book) -> None:
    open_account(book, "wallet")

    outcome = book.apply(UpdateAccount("wallet", metadata={"a": "b"}))

    assert outcome.status is Status.UPDATED


def test_update_merges_metadata_and_removes_keys_set_to_none() -> None:
    book = make_book()
    open_account(book, "wallet", metadata={"keep": "1", "change": "2", "drop": "3"})
    later = reload(book, now_us=NOW_US + 5)

    outcome = later.apply(
        UpdateAccount("wallet", metadata={"change": "two", "drop": None, "new": "4"})
    )

    assert outcome.status is Status.UPDATED
    account = account_of(outcome)
    assert account is later.accounts["wallet"]
    assert account.metadata == {"keep": "1", "change": "two", "new": "4"}
    assert account.version == 2
    assert account.updated_at_us == NOW_US + 5
    assert account.created_at_us == NOW_US
    assert [e.type for e in later.changes().events] == ["account.updated"]


def test_removing_a_missing_metadata_key_changes_nothing(book: Book) -> None:
    account = open_account(book, "wallet", metadata={"a": "1"})
    before = snapshot(book)

    outcome = book.apply(UpdateAccount("wallet", metadata={"absent": None}))

    assert outcome.status is Status.UPDATED
    assert outcome.object is account
    assert snapshot(book) == before


def test_update_that_changes_nothing_writes_no_event_and_keeps_version(book: Book) -> None:
    account = open_account(book, "wallet", metadata={"a": "1"})
    before = snapshot(book)

    outcome = book.apply(UpdateAccount("wallet", metadata={"a": "1"}))

    assert outcome.status is Status.UPDATED
    assert outcome.object is account
    assert snapshot(book) == before


def test_rejects_update_with_stale_expected_version(book: Book) -> None:
    open_account(book, "wallet")
    book.apply(UpdateAccount("wallet", metadata={"a": "1"}))
    before = snapshot(book)

    outcome = book.apply(UpdateAccount("wallet", metadata={"a": "2"}, expected_version=1))

    assert_fails(outcome, Code.PRECONDITION_FAILED)
    assert snapshot(book) == before


def test_accepts_update_with_current_expected_version(book: Book) -> None:
    open_account(book, "wallet")
    book.apply(UpdateAccount("wallet", metadata={"a": "1"}))

    outcome = book.apply(UpdateAccount("wallet", metadata={"a": "2"}, expected_version=2))

    assert outcome.status is Status.UPDATED
    assert account_of(outcome).metadata == {"a": "2"}
    assert account_of(outcome).version == 3


def test_a_transfer_changes_the_account_version_so_an_older_etag_is_stale(book: Book) -> None:
    open_account(book, "wallet")
    seen_version = book.accounts["wallet"].version
    fund(book, "wallet", 10)

    outcome = book.apply(
        UpdateAccount("wallet", metadata={"a": "1"}, expected_version=seen_version)
    )

    assert book.accounts["wallet"].version == seen_version + 1
    assert_fails(outcome, Code.PRECONDITION_FAILED)


def test_accepts_metadata_update_reaching_exactly_the_key_limit(book: Book) -> None:
    open_account(book, "wallet", metadata=metadata_with(METADATA_KEYS_MAX - 1))

    outcome = book.apply(UpdateAccount("wallet", metadata={"last": "v"}))

    assert outcome.status is Status.UPDATED
    assert len(account_of(outcome).metadata) == METADATA_KEYS_MAX


def test_rejects_metadata_update_that_passes_the_key_limit(book: Book) -> None:
    open_account(book, "wallet", metadata=metadata_with(METADATA_KEYS_MAX))
    before = snapshot(book)

    outcome = book.apply(UpdateAccount("wallet", metadata={"one_too_many": "v"}))

    assert_fails(outcome, Code.VALIDATION_ERROR)
    assert outcome.fields == ("metadata",)
    assert snapshot(book) == before


def test_accepts_metadata_update_at_the_key_limit_that_removes_as_many_keys_as_it_adds(
    book: Book,
) -> None:
    open_account(book, "wallet", metadata=metadata_with(METADATA_KEYS_MAX))

    outcome = book.apply(UpdateAccount("wallet", metadata={"k0": None, "replacement": "v"}))

    assert outcome.status is Status.UPDATED
    assert len(account_of(outcome).metadata) == METADATA_KEYS_MAX


# -- closing -----------------------------------------------------------------------------


def test_closes_account_with_an_account_closed_event(book: Book) -> None:
    open_account(book, "wallet")

    account = close(book, "wallet")

    assert account.status is AccountStatus.CLOSED
    assert account.version == 2
    assert book.accounts["wallet"] is account
    event = book.changes().events[-1]
    assert event.type == "account.closed"
    assert event.data is account


def test_closing_a_closed_account_again_changes_nothing(book: Book) -> None:
    open_account(book, "wallet")
    closed = close(book, "wallet")
    before = snapshot(book)

    again = close(book, "wallet")

    assert again is closed
    assert snapshot(book) == before


def test_metadata_of_a_closed_account_can_still_change(book: Book) -> None:
    open_account(book, "wallet")
    close(book, "wallet")

    outcome = book.apply(UpdateAccount("wallet", metadata={"note": "archived"}, close=True))

    assert outcome.status is Status.UPDATED
    assert account_of(outcome).status is AccountStatus.CLOSED
    assert account_of(outcome).metadata == {"note": "archived"}
    assert book.changes().events[-1].type == "account.updated"


def test_closing_with_metadata_writes_one_account_closed_event(book: Book) -> None:
    open_account(book, "wallet")
    events_before = len(book.changes().events)

    outcome = book.apply(UpdateAccount("wallet", metadata={"why": "churn"}, close=True))

    assert account_of(outcome).metadata == {"why": "churn"}
    assert [e.type for e in book.changes().events[events_before:]] == ["account.closed"]


def test_an_update_without_close_does_not_reopen_a_closed_account(book: Book) -> None:
    open_account(book, "wallet")
    close(book, "wallet")

    outcome = book.apply(UpdateAccount("wallet", metadata={"a": "1"}))

    assert account_of(outcome).status is AccountStatus.CLOSED


def test_closing_keeps_the_account_totals(book: Book) -> None:
    open_account(book, "wallet")
    fund(book, "wallet", 70)

    account = close(book, "wallet")

    assert account.credits_posted == 70
    assert account.balance.posted == 70


# -- derived balances --------------------------------------------------------------------


def test_credit_normal_balance_is_credits_minus_debits_less_outgoing_reservations(
    book: Book,
) -> None:
    open_account(book, "wallet", normal_balance=NormalBalance.CREDIT)
    open_account(book, "other")
    move(book, "in", "other", "wallet", 1000)
    move(book, "in-held", "other", "wallet", 300, pending=True)
    move(book, "out", "wallet", "other", 200)
    move(book, "out-held", "wallet", "other", 50, pending=True)

    wallet = book.accounts["wallet"]

    assert (wallet.credits_posted, wallet.credits_pending) == (1000, 300)
    assert (wallet.debits_posted, wallet.debits_pending) == (200, 50)
    assert wallet.balance == Balance(posted=800, pending=250, available=750)


def test_debit_normal_balance_is_debits_minus_credits_less_outgoing_reservations(
    book: Book,
) -> None:
    open_account(book, "cash", normal_balance=NormalBalance.DEBIT)
    open_account(book, "equity")
    move(book, "in", "cash", "equity", 1000)
    move(book, "in-held", "cash", "equity", 300, pending=True)
    move(book, "out", "equity", "cash", 200)
    move(book, "out-held", "equity", "cash", 50, pending=True)

    cash = book.accounts["cash"]

    assert (cash.debits_posted, cash.debits_pending) == (1000, 300)
    assert (cash.credits_posted, cash.credits_pending) == (200, 50)
    assert cash.balance == Balance(posted=800, pending=250, available=750)


def test_mirrored_movements_read_the_same_under_the_two_normal_balances(
    book: Book,
) -> None:
    open_account(book, "credit-normal", normal_balance=NormalBalance.CREDIT)
    open_account(book, "debit-normal", normal_balance=NormalBalance.DEBIT)
    move(book, "t1", "credit-normal", "debit-normal", 40)
    move(book, "t2", "debit-normal", "credit-normal", 100)
    move(book, "t3", "credit-normal", "debit-normal", 7, pending=True)

    credit_normal = book.accounts["credit-normal"].balance
    debit_normal = book.accounts["debit-normal"].balance

    assert credit_normal == Balance(posted=60, pending=-7, available=53)
    assert debit_normal == Balance(posted=60, pending=-7, available=53)


def test_balance_can_be_negative_on_an_account_without_limits(book: Book) -> None:
    open_account(book, "wallet")
    open_account(book, "other")

    move(book, "overdraw", "wallet", "other", 30)

    assert book.accounts["wallet"].balance == Balance(posted=-30, pending=0, available=-30)

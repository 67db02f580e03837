"""Batches: items in order, each seeing the earlier ones; atomic means all or nothing."""

from __future__ import annotations

import pytest

from tally.core import (
    Book,
    Code,
    CreateAccount,
    CreateTransfer,
    ExpirePending,
    Outcome,
    PostPending,
    Status,
    TransferStatus,
    UpdateAccount,
    VoidPending,
)
from tests.unit.core.builders import (
    MICROSECONDS_PER_SECOND,
    NOW_US,
    USD,
    assert_fails,
    fund,
    make_book,
    move,
    open_account,
    reload,
    snapshot,
)


@pytest.fixture
def wallet(book: Book) -> Book:
    """``wallet`` (no overdraft) holds 100; ``shop`` is unlimited."""
    open_account(book, "wallet", debits_must_not_exceed_credits=True)
    open_account(book, "shop")
    fund(book, "wallet", 100)
    return book


def statuses(outcomes: list[Outcome]) -> list[Status]:
    return [o.status for o in outcomes]


def codes(outcomes: list[Outcome]) -> list[Code | None]:
    return [o.code for o in outcomes]


# -- non-atomic --------------------------------------------------------------------------


def test_non_atomic_items_see_the_effects_of_earlier_items(book: Book) -> None:
    outcomes = book.execute(
        [
            CreateAccount("source", USD),
            CreateAccount("wallet", USD, debits_must_not_exceed_credits=True),
            CreateAccount("shop", USD),
            CreateTransfer("fund", "source", "wallet", 50),
            CreateTransfer("spend", "wallet", "shop", 50),
        ]
    )

    assert statuses(outcomes) == [Status.CREATED] * 5
    assert book.accounts["wallet"].balance.available == 0
    assert book.accounts["shop"].credits_posted == 50


def test_non_atomic_items_succeed_or_fail_independently(wallet: Book) -> None:
    outcomes = wallet.execute(
        [
            CreateTransfer("spend-1", "wallet", "shop", 60),
            CreateTransfer("spend-2", "wallet", "shop", 60),
            CreateTransfer("spend-3", "wallet", "shop", 40),
        ]
    )

    assert statuses(outcomes) == [Status.CREATED, Status.FAILED, Status.CREATED]
    assert codes(outcomes) == [None, Code.EXCEEDS_CREDITS, None]
    assert "spend-2" not in wallet.transfers
    assert wallet.accounts["wallet"].debits_posted == 100


def test_non_atomic_batch_reports_one_outcome_per_item_in_order(wallet: Book) -> None:
    outcomes = wallet.execute(
        [
            CreateTransfer("t1", "ghost", "shop", 1),
            CreateTransfer("t2", "wallet", "ghost", 1),
            CreateTransfer("t3", "wallet", "wallet", 1),
            CreateTransfer("t4", "wallet", "shop", 1),
        ]
    )

    assert codes(outcomes) == [
        Code.DEBIT_ACCOUNT_NOT_FOUND,
        Code.CREDIT_ACCOUNT_NOT_FOUND,
        Code.ACCOUNTS_MUST_BE_DIFFERENT,
        None,
    ]
    assert outcomes[3].object is wallet.transfers["t4"]


def test_non_atomic_batch_repeating_an_id_reports_exists_for_the_repeat(wallet: Book) -> None:
    outcomes = wallet.execute(
        [
            CreateTransfer("spend", "wallet", "shop", 10),
            CreateTransfer("spend", "wallet", "shop", 10),
            CreateTransfer("spend", "wallet", "shop", 11),
        ]
    )

    assert statuses(outcomes) == [Status.CREATED, Status.EXISTS, Status.FAILED]
    assert outcomes[1].object is outcomes[0].object
    assert outcomes[2].code is Code.EXISTS_WITH_DIFFERENT_FIELDS
    assert wallet.accounts["wallet"].debits_posted == 10


def test_non_atomic_batch_can_reserve_and_post_in_order(wallet: Book) -> None:
    outcomes = wallet.execute(
        [
            CreateTransfer("hold", "wallet", "shop", 80, pending=True),
            CreateTransfer("spend", "wallet", "shop", 21),
            PostPending("capture", "hold", 70),
            CreateTransfer("spend-rest", "wallet", "shop", 30),
        ]
    )

    assert codes(outcomes) == [None, Code.EXCEEDS_CREDITS, None, None]
    assert wallet.accounts["wallet"].debits_posted == 100
    assert wallet.accounts["wallet"].debits_pending == 0


def test_empty_batch_changes_nothing(wallet: Book) -> None:
    before = snapshot(wallet)

    assert wallet.execute([]) == []
    assert wallet.execute([], atomic=True) == []
    assert snapshot(wallet) == before


# -- atomic ------------------------------------------------------------------------------


def test_atomic_batch_that_succeeds_applies_every_item(wallet: Book) -> None:
    outcomes = wallet.execute(
        [
            CreateAccount("shop-2", USD),
            CreateTransfer("spend-1", "wallet", "shop", 60),
            CreateTransfer("spend-2", "wallet", "shop-2", 40),
        ],
        atomic=True,
    )

    assert statuses(outcomes) == [Status.CREATED] * 3
    assert wallet.accounts["wallet"].balance.available == 0
    assert wallet.accounts["shop-2"].credits_posted == 40


def test_atomic_batch_items_see_the_effects_of_earlier_items(book: Book) -> None:
    outcomes = book.execute(
        [
            CreateAccount("source", USD),
            CreateAccount("wallet", USD, debits_must_not_exceed_credits=True),
            CreateAccount("shop", USD),
            CreateTransfer("fund", "source", "wallet", 50),
            CreateTransfer("hold", "wallet", "shop", 50, pending=True),
            VoidPending("cancel", "hold"),
            CreateTransfer("spend", "wallet", "shop", 50),
        ],
        atomic=True,
    )

    assert all(o.status is Status.CREATED for o in outcomes)
    assert book.accounts["shop"].credits_posted == 50


def test_atomic_batch_counts_exists_and_skipped_items_as_success(wallet: Book) -> None:
    move(wallet, "spend", "wallet", "shop", 10)

    outcomes = wallet.execute(
        [
            CreateTransfer("spend", "wallet", "shop", 10),
            ExpirePending("spend"),
            CreateTransfer("spend-2", "wallet", "shop", 90),
        ],
        atomic=True,
    )

    assert statuses(outcomes) == [Status.EXISTS, Status.SKIPPED, Status.CREATED]
    assert wallet.accounts["wallet"].debits_posted == 100


def test_atomic_batch_with_a_failure_keeps_its_code_and_links_every_other_item(
    wallet: Book,
) -> None:
    outcomes = wallet.execute(
        [
            CreateTransfer("spend-1", "wallet", "shop", 60),
            CreateTransfer("spend-2", "wallet", "shop", 60),
            CreateTransfer("spend-3", "wallet", "shop", 10),
            CreateTransfer("spend-4", "ghost", "shop", 10),
        ],
        atomic=True,
    )

    assert statuses(outcomes) == [Status.FAILED] * 4
    assert codes(outcomes) == [
        Code.LINKED_EVENT_FAILED,
        Code.EXCEEDS_CREDITS,
        Code.LINKED_EVENT_FAILED,
        Code.LINKED_EVENT_FAILED,
    ]
    assert all(o.object is None for o in outcomes)


def test_atomic_batch_reports_only_the_first_failure(wallet: Book) -> None:
    outcomes = wallet.execute(
        [
            CreateTransfer("t1", "wallet", "wallet", 1),
            CreateTransfer("t2", "ghost", "shop", 1),
        ],
        atomic=True,
    )

    assert codes(outcomes) == [Code.ACCOUNTS_MUST_BE_DIFFERENT, Code.LINKED_EVENT_FAILED]


def test_atomic_batch_failing_on_its_last_item_links_all_earlier_items(wallet: Book) -> None:
    outcomes = wallet.execute(
        [
            CreateAccount("shop-2", USD),
            CreateTransfer("t1", "wallet", "shop-2", 1),
            CreateTransfer("t2", "wallet", "shop", 1000),
        ],
        atomic=True,
    )

    assert codes(outcomes) == [
        Code.LINKED_EVENT_FAILED,
        Code.LINKED_EVENT_FAILED,
        Code.EXCEEDS_CREDITS,
    ]


def test_failed_atomic_batch_restores_the_book_exactly(wallet: Book) -> None:
    move(wallet, "hold", "wallet", "shop", 30, pending=True)
    loaded_accounts = dict(wallet.accounts)
    loaded_transfers = dict(wallet.transfers)
    before = snapshot(wallet)

    outcomes = wallet.execute(
        [
            CreateAccount("shop-2", USD),
            UpdateAccount("wallet", metadata={"note": "batch"}),
            PostPending("capture", "hold", 20),
            CreateTransfer("spend", "wallet", "shop-2", 70),
            UpdateAccount("shop", close=True),
            CreateTransfer("too-much", "wallet", "shop-2", 11),
        ],
        atomic=True,
    )

    assert codes(outcomes)[-1] is Code.EXCEEDS_CREDITS
    assert snapshot(wallet) == before
    assert "shop-2" not in wallet.accounts
    assert "capture" not in wallet.transfers
    assert wallet.transfers["hold"].status is TransferStatus.PENDING
    # The very objects, not copies: changes() tells updates apart by identity.
    assert all(wallet.accounts[k] is v for k, v in loaded_accounts.items())
    assert all(wallet.transfers[k] is v for k, v in loaded_transfers.items())
    assert list(wallet.accounts) == list(loaded_accounts)


def test_failed_atomic_batch_keeps_changes_made_before_it(book: Book) -> None:
    open_account(book, "a")
    open_account(book, "b")
    move(book, "before", "a", "b", 5)
    changes_before = book.changes()

    book.execute(
        [CreateTransfer("t1", "a", "b", 1), CreateTransfer("t2", "a", "ghost", 1)], atomic=True
    )

    changes_after = book.changes()
    assert changes_after.events == changes_before.events
    assert changes_after.balance_changes == changes_before.balance_changes
    assert changes_after.accounts_created == changes_before.accounts_created
    assert changes_after.transfers_created == changes_before.transfers_created
    assert book.accounts["a"].debits_posted == 5


def test_failed_atomic_batch_on_a_loaded_book_reports_no_changes() -> None:
    setup = make_book()
    open_account(setup, "a")
    open_account(setup, "b")
    move(setup, "hold", "a", "b", 10, pending=True)
    book = reload(setup, now_us=NOW_US + 1)

    book.execute(
        [PostPending("capture", "hold"), CreateTransfer("t", "a", "ghost", 1)], atomic=True
    )

    changes = book.changes()
    assert changes.accounts_created == changes.accounts_updated == []
    assert changes.transfers_created == changes.transfers_updated == []
    assert changes.balance_changes == []
    assert changes.events == []
    assert book.last_sequence == setup.last_sequence


def test_sequences_continue_without_gap_after_a_failed_atomic_batch(wallet: Book) -> None:
    last_sequence = wallet.last_sequence

    wallet.execute(
        [CreateTransfer("t1", "wallet", "shop", 1), CreateTransfer("t2", "wallet", "shop", 500)],
        atomic=True,
    )
    transfer = move(wallet, "t3", "wallet", "shop", 1)

    assert transfer.sequence == last_sequence + 1
    assert wallet.changes().events[-1].sequence == last_sequence + 1


def test_atomic_batch_can_run_again_after_a_failed_one(wallet: Book) -> None:
    failed = wallet.execute([CreateTransfer("t1", "wallet", "shop", 101)], atomic=True)
    assert_fails(failed[0], Code.EXCEEDS_CREDITS)

    outcomes = wallet.execute([CreateTransfer("t1", "wallet", "shop", 100)], atomic=True)

    assert statuses(outcomes) == [Status.CREATED]


def test_failed_atomic_batch_undoes_an_expiry_it_performed(wallet: Book) -> None:
    move(wallet, "hold", "wallet", "shop", 100, pending=True, timeout_seconds=1)
    due = reload(wallet, now_us=NOW_US + MICROSECONDS_PER_SECOND)
    before = snapshot(due)

    outcomes = due.execute(
        [ExpirePending("hold"), CreateTransfer("spend", "wallet", "shop", 101)], atomic=True
    )

    assert codes(outcomes) == [Code.LINKED_EVENT_FAILED, Code.EXCEEDS_CREDITS]
    assert snapshot(due) == before
    assert due.transfers["hold"].status is TransferStatus.PENDING


def test_atomic_batch_of_one_failing_item_keeps_its_code(wallet: Book) -> None:
    outcomes = wallet.execute([PostPending("capture", "ghost")], atomic=True)

    assert codes(outcomes) == [Code.PENDING_TRANSFER_NOT_FOUND]

"""Two-phase transfers: reserve, then exactly one of post, void or expiry."""

from __future__ import annotations

import pytest

from tally.core import (
    AMOUNT_MAX,
    AccountStatus,
    Book,
    Code,
    CreateTransfer,
    ExpirePending,
    Outcome,
    PostPending,
    Status,
    TransferStatus,
    VoidPending,
)
from tests.unit.core.builders import (
    MICROSECONDS_PER_SECOND,
    NOW_US,
    assert_fails,
    close,
    fund,
    make_book,
    move,
    open_account,
    post,
    reload,
    snapshot,
    totals,
    void,
)

TIMEOUT_SECONDS = 60
DEADLINE_US = NOW_US + TIMEOUT_SECONDS * MICROSECONDS_PER_SECOND


@pytest.fixture
def held(book: Book) -> Book:
    """``hold`` reserves 100 from ``a`` to ``b``, expiring TIMEOUT_SECONDS after NOW_US."""
    open_account(book, "a")
    open_account(book, "b")
    move(book, "hold", "a", "b", 100, pending=True, timeout_seconds=TIMEOUT_SECONDS)
    return book


def at(book: Book, now_us: int) -> Book:
    return reload(book, now_us=now_us)


def refused(book: Book, command: PostPending | VoidPending, code: Code) -> None:
    before = snapshot(book)
    assert_fails(book.apply(command), code)
    assert snapshot(book) == before


def released(book: Book) -> bool:
    a, b = book.accounts["a"], book.accounts["b"]
    return a.debits_pending == 0 and b.credits_pending == 0


# -- reserving ---------------------------------------------------------------------------


def test_pending_transfer_reserves_the_amount_in_pending_totals(held: Book) -> None:
    hold = held.transfers["hold"]

    assert hold.pending
    assert hold.status is TransferStatus.PENDING
    assert hold.resolved_at_us is None
    assert totals(held.accounts["a"]) == {
        "debits_pending": 100,
        "debits_posted": 0,
        "credits_pending": 0,
        "credits_posted": 0,
    }
    assert totals(held.accounts["b"]) == {
        "debits_pending": 0,
        "debits_posted": 0,
        "credits_pending": 100,
        "credits_posted": 0,
    }


def test_pending_transfer_expires_timeout_seconds_after_its_creation(held: Book) -> None:
    hold = held.transfers["hold"]

    assert hold.timeout_seconds == TIMEOUT_SECONDS
    assert hold.expires_at_us == DEADLINE_US


def test_pending_transfer_without_timeout_never_expires(book: Book) -> None:
    open_account(book, "a")
    open_account(book, "b")
    hold = move(book, "hold", "a", "b", 5, pending=True)
    far_future = at(book, NOW_US + 10 * 365 * 24 * 3600 * MICROSECONDS_PER_SECOND)

    expiry = far_future.apply(ExpirePending("hold"))

    assert hold.expires_at_us is None
    assert expiry.status is Status.SKIPPED
    post(far_future, "capture", "hold")


def test_pending_transfer_accepts_the_largest_timeout(book: Book) -> None:
    open_account(book, "a")
    open_account(book, "b")

    hold = move(book, "hold", "a", "b", 5, pending=True, timeout_seconds=31_536_000)

    assert hold.expires_at_us == NOW_US + 31_536_000 * MICROSECONDS_PER_SECOND


# -- posting -----------------------------------------------------------------------------


def test_full_post_releases_the_reservation_and_moves_the_pending_amount(held: Book) -> None:
    later = at(held, NOW_US + 7)

    record = post(later, "capture", "hold")

    assert record.pending_id == "hold"
    assert record.status is TransferStatus.POSTED
    assert not record.pending
    assert record.amount == 100
    assert (record.debit_account_id, record.credit_account_id) == ("a", "b")
    assert record.currency == "USD"
    assert record.created_at_us == NOW_US + 7
    assert later.transfers["capture"] is record
    hold = later.transfers["hold"]
    assert hold.status is TransferStatus.POSTED
    assert hold.resolved_at_us == NOW_US + 7
    assert hold.amount == 100
    assert totals(later.accounts["a"]) == {
        "debits_pending": 0,
        "debits_posted": 100,
        "credits_pending": 0,
        "credits_posted": 0,
    }
    assert totals(later.accounts["b"]) == {
        "debits_pending": 0,
        "debits_posted": 0,
        "credits_pending": 0,
        "credits_posted": 100,
    }


def test_post_of_exactly_the_pending_amount_succeeds(held: Book) -> None:
    record = post(held, "capture", "hold", amount=100)

    assert record.amount == 100
    assert held.accounts["a"].debits_posted == 100


def test_rejects_post_that_exceeds_the_pending_amount(held: Book) -> None:
    refused(held, PostPending("capture", "hold", 101), Code.EXCEEDS_PENDING_TRANSFER_AMOUNT)
    assert held.transfers["hold"].status is TransferStatus.PENDING


def test_partial_post_releases_the_whole_reservation_and_moves_only_the_posted_amount(
    held: Book,
) -> None:
    record = post(held, "capture", "hold", amount=30)

    assert record.amount == 30
    assert held.transfers["hold"].status is TransferStatus.POSTED
    assert held.transfers["hold"].amount == 100
    assert totals(held.accounts["a"]) == {
        "debits_pending": 0,
        "debits_posted": 30,
        "credits_pending": 0,
        "credits_posted": 0,
    }
    assert totals(held.accounts["b"]) == {
        "debits_pending": 0,
        "debits_posted": 0,
        "credits_pending": 0,
        "credits_posted": 30,
    }


def test_post_records_balance_changes_under_the_post_record(held: Book) -> None:
    rows_before = len(held.changes().balance_changes)

    post(held, "capture", "hold")

    rows = held.changes().balance_changes[rows_before:]
    assert [(row.account.id, row.transfer_id) for row in rows] == [
        ("a", "capture"),
        ("b", "capture"),
    ]


def test_post_is_not_limited_again_because_the_reservation_already_counted(
    book: Book,
) -> None:
    open_account(book, "wallet", debits_must_not_exceed_credits=True)
    open_account(book, "shop")
    fund(book, "wallet", 100)
    move(book, "hold", "wallet", "shop", 100, pending=True)

    post(book, "capture", "hold")

    assert book.accounts["wallet"].balance.available == 0


def test_partial_post_frees_the_unposted_rest_for_spending(book: Book) -> None:
    open_account(book, "wallet", debits_must_not_exceed_credits=True)
    open_account(book, "shop")
    fund(book, "wallet", 100)
    move(book, "hold", "wallet", "shop", 100, pending=True)
    assert_fails(book.apply(CreateTransfer("spend", "wallet", "shop", 1)), Code.EXCEEDS_CREDITS)

    post(book, "capture", "hold", amount=60)

    move(book, "spend", "wallet", "shop", 40)
    assert_fails(book.apply(CreateTransfer("more", "wallet", "shop", 1)), Code.EXCEEDS_CREDITS)


def test_post_cannot_overflow_because_the_reservation_already_counted(book: Book) -> None:
    open_account(book, "a")
    open_account(book, "b")
    move(book, "hold", "a", "b", AMOUNT_MAX, pending=True)

    post(book, "capture", "hold")

    assert book.accounts["a"].debits_posted == AMOUNT_MAX
    assert book.accounts["b"].credits_posted == AMOUNT_MAX


# -- voiding -----------------------------------------------------------------------------


def test_void_releases_the_reservation_and_moves_nothing(held: Book) -> None:
    later = at(held, NOW_US + 3)

    record = void(later, "cancel", "hold")

    assert record.status is TransferStatus.VOIDED
    assert record.pending_id == "hold"
    assert record.amount == 100
    assert record.created_at_us == NOW_US + 3
    hold = later.transfers["hold"]
    assert hold.status is TransferStatus.VOIDED
    assert hold.resolved_at_us == NOW_US + 3
    for account in later.accounts.values():
        assert set(totals(account).values()) == {0}


def test_void_frees_the_reserved_amount_for_spending(book: Book) -> None:
    open_account(book, "wallet", debits_must_not_exceed_credits=True)
    open_account(book, "shop")
    fund(book, "wallet", 100)
    move(book, "hold", "wallet", "shop", 100, pending=True)

    void(book, "cancel", "hold")

    move(book, "spend", "wallet", "shop", 100)


# -- what can be resolved ----------------------------------------------------------------


def test_rejects_post_of_an_unknown_transfer(held: Book) -> None:
    refused(held, PostPending("capture", "ghost"), Code.PENDING_TRANSFER_NOT_FOUND)


def test_rejects_void_of_an_unknown_transfer(held: Book) -> None:
    refused(held, VoidPending("cancel", "ghost"), Code.PENDING_TRANSFER_NOT_FOUND)


def test_rejects_post_of_a_transfer_that_was_never_pending(held: Book) -> None:
    move(held, "direct", "a", "b", 5)

    refused(held, PostPending("capture", "direct"), Code.PENDING_TRANSFER_NOT_PENDING)
    refused(held, VoidPending("cancel", "direct"), Code.PENDING_TRANSFER_NOT_PENDING)


def test_rejects_post_of_a_post_record(held: Book) -> None:
    post(held, "capture", "hold")

    refused(held, PostPending("capture-again", "capture"), Code.PENDING_TRANSFER_NOT_PENDING)


def test_rejects_void_of_a_void_record(held: Book) -> None:
    void(held, "cancel", "hold")

    refused(held, VoidPending("cancel-again", "cancel"), Code.PENDING_TRANSFER_NOT_PENDING)


@pytest.mark.parametrize("second", [PostPending, VoidPending])
def test_rejects_resolving_an_already_posted_transfer(held: Book, second: type) -> None:
    post(held, "capture", "hold")

    refused(held, second("second", "hold"), Code.PENDING_TRANSFER_ALREADY_POSTED)


@pytest.mark.parametrize("second", [PostPending, VoidPending])
def test_rejects_resolving_an_already_voided_transfer(held: Book, second: type) -> None:
    void(held, "cancel", "hold")

    refused(held, second("second", "hold"), Code.PENDING_TRANSFER_ALREADY_VOIDED)


@pytest.mark.parametrize("second", [PostPending, VoidPending])
def test_rejects_resolving_an_expired_transfer(held: Book, second: type) -> None:
    later = at(held, DEADLINE_US)
    assert later.apply(ExpirePending("hold")).status is Status.UPDATED

    refused(later, second("second", "hold"), Code.PENDING_TRANSFER_EXPIRED)


def test_rejects_post_at_the_deadline_before_the_expiry_is_written(held: Book) -> None:
    due = at(held, DEADLINE_US)

    refused(due, PostPending("capture", "hold"), Code.PENDING_TRANSFER_EXPIRED)
    assert due.transfers["hold"].status is TransferStatus.PENDING


def test_rejects_void_at_the_deadline_before_the_expiry_is_written(held: Book) -> None:
    refused(at(held, DEADLINE_US), VoidPending("cancel", "hold"), Code.PENDING_TRANSFER_EXPIRED)


def test_rejects_post_long_after_the_deadline_before_the_expiry_is_written(held: Book) -> None:
    refused(
        at(held, DEADLINE_US + 3600 * MICROSECONDS_PER_SECOND),
        PostPending("capture", "hold"),
        Code.PENDING_TRANSFER_EXPIRED,
    )


def test_accepts_post_one_microsecond_before_the_deadline(held: Book) -> None:
    last_moment = at(held, DEADLINE_US - 1)

    post(last_moment, "capture", "hold")

    assert last_moment.accounts["b"].credits_posted == 100


def test_accepts_void_one_microsecond_before_the_deadline(held: Book) -> None:
    last_moment = at(held, DEADLINE_US - 1)

    void(last_moment, "cancel", "hold")

    assert last_moment.transfers["hold"].status is TransferStatus.VOIDED


def test_rejects_post_on_a_closed_debit_account(held: Book) -> None:
    close(held, "a")

    refused(held, PostPending("capture", "hold"), Code.DEBIT_ACCOUNT_CLOSED)


def test_rejects_post_on_a_closed_credit_account(held: Book) -> None:
    close(held, "b")

    refused(held, PostPending("capture", "hold"), Code.CREDIT_ACCOUNT_CLOSED)


@pytest.mark.parametrize("closed_id", ["a", "b"])
def test_void_is_allowed_on_a_closed_account(held: Book, closed_id: str) -> None:
    close(held, closed_id)

    void(held, "cancel", "hold")

    assert released(held)
    assert held.accounts[closed_id].status is AccountStatus.CLOSED


@pytest.mark.parametrize("closed_id", ["a", "b"])
def test_expiry_is_allowed_on_a_closed_account(held: Book, closed_id: str) -> None:
    close(held, closed_id)
    due = at(held, DEADLINE_US)

    outcome = due.apply(ExpirePending("hold"))

    assert outcome.status is Status.UPDATED
    assert released(due)


# -- expiry ------------------------------------------------------------------------------


def expire(book: Book, pending_id: str = "hold") -> Outcome:
    return book.apply(ExpirePending(pending_id))


def test_expiry_before_the_deadline_is_skipped_and_changes_nothing(held: Book) -> None:
    early = at(held, DEADLINE_US - 1)
    before = snapshot(early)

    outcome = expire(early)

    assert outcome.status is Status.SKIPPED
    assert outcome.ok
    assert outcome.object is early.transfers["hold"]
    assert snapshot(early) == before
    assert early.transfers["hold"].status is TransferStatus.PENDING


def test_expiry_at_exactly_the_deadline_releases_the_reservation(held: Book) -> None:
    due = at(held, DEADLINE_US)

    outcome = expire(due)

    assert outcome.status is Status.UPDATED
    expired = due.transfers["hold"]
    assert outcome.object is expired
    assert expired.status is TransferStatus.EXPIRED
    assert expired.resolved_at_us == DEADLINE_US
    assert released(due)
    assert due.accounts["a"].debits_posted == 0
    assert due.accounts["b"].credits_posted == 0
    assert [(e.type, e.data) for e in due.changes().events] == [("transfer.expired", expired)]
    assert due.changes().transfers_updated == [expired]
    assert due.changes().transfers_created == []
    rows = due.changes().balance_changes
    assert [(row.account.id, row.transfer_id) for row in rows] == [("a", "hold"), ("b", "hold")]


def test_expiry_after_the_deadline_releases_the_reservation(held: Book) -> None:
    late = at(held, DEADLINE_US + 4 * MICROSECONDS_PER_SECOND)

    assert expire(late).status is Status.UPDATED
    assert late.transfers["hold"].resolved_at_us == DEADLINE_US + 4 * MICROSECONDS_PER_SECOND
    assert released(late)


def test_expiry_happens_exactly_once(held: Book) -> None:
    due = at(held, DEADLINE_US)
    assert expire(due).status is Status.UPDATED
    before = snapshot(due)

    again = expire(due)

    assert again.status is Status.SKIPPED
    assert again.object is due.transfers["hold"]
    assert snapshot(due) == before


def test_expiry_in_a_later_transaction_after_it_was_written_is_skipped(held: Book) -> None:
    due = at(held, DEADLINE_US)
    expire(due)
    later = at(due, DEADLINE_US + 1)

    outcome = expire(later)

    assert outcome.status is Status.SKIPPED
    assert later.changes().events == []
    assert released(later)


def test_expiry_of_a_posted_transfer_is_skipped(held: Book) -> None:
    post(held, "capture", "hold")
    due = at(held, DEADLINE_US)
    before = snapshot(due)

    outcome = expire(due)

    assert outcome.status is Status.SKIPPED
    assert due.transfers["hold"].status is TransferStatus.POSTED
    assert snapshot(due) == before
    assert due.accounts["b"].credits_posted == 100


def test_expiry_of_a_voided_transfer_is_skipped(held: Book) -> None:
    void(held, "cancel", "hold")
    due = at(held, DEADLINE_US)

    assert expire(due).status is Status.SKIPPED
    assert due.transfers["hold"].status is TransferStatus.VOIDED


def test_expiry_of_a_single_phase_transfer_is_skipped(held: Book) -> None:
    move(held, "direct", "a", "b", 5)
    due = at(held, DEADLINE_US)
    before = snapshot(due)

    assert expire(due, "direct").status is Status.SKIPPED
    assert snapshot(due) == before


def test_expiry_of_an_unknown_transfer_is_skipped(held: Book) -> None:
    outcome = expire(at(held, DEADLINE_US), "ghost")

    assert outcome.status is Status.SKIPPED
    assert outcome.object is None


def test_expired_reservation_can_be_spent_again(book: Book) -> None:
    open_account(book, "wallet", debits_must_not_exceed_credits=True)
    open_account(book, "shop")
    fund(book, "wallet", 100)
    move(book, "hold", "wallet", "shop", 100, pending=True, timeout_seconds=1)
    due = at(book, NOW_US + MICROSECONDS_PER_SECOND)

    expire(due)

    move(due, "spend", "wallet", "shop", 100)


# -- idempotent ids of post and void -----------------------------------------------------


def test_repeated_post_with_same_fields_returns_the_existing_record(held: Book) -> None:
    first = post(held, "capture", "hold", amount=40)
    before = snapshot(held)

    again = held.apply(PostPending("capture", "hold", 40))

    assert again.status is Status.EXISTS
    assert again.object is first
    assert snapshot(held) == before


def test_repeated_full_post_naming_the_full_amount_still_exists(held: Book) -> None:
    post(held, "capture", "hold")

    again = held.apply(PostPending("capture", "hold", 100))

    assert again.status is Status.EXISTS


def test_repeated_void_with_same_fields_returns_the_existing_record(held: Book) -> None:
    first = void(held, "cancel", "hold")

    again = held.apply(VoidPending("cancel", "hold"))

    assert again.status is Status.EXISTS
    assert again.object is first


def test_repeated_post_exists_even_after_the_deadline(held: Book) -> None:
    post(held, "capture", "hold")
    due = at(held, DEADLINE_US + 1)

    again = due.apply(PostPending("capture", "hold"))

    assert again.status is Status.EXISTS


def test_rejects_post_id_reused_with_a_different_amount(held: Book) -> None:
    post(held, "capture", "hold", amount=40)
    before = snapshot(held)

    outcome = held.apply(PostPending("capture", "hold", 41))

    assert_fails(outcome, Code.EXISTS_WITH_DIFFERENT_FIELDS)
    assert outcome.fields == ("amount",)
    assert snapshot(held) == before


def test_rejects_partial_post_id_reused_without_an_amount(held: Book) -> None:
    post(held, "capture", "hold", amount=40)

    outcome = held.apply(PostPending("capture", "hold"))

    assert_fails(outcome, Code.EXISTS_WITH_DIFFERENT_FIELDS)
    assert outcome.fields == ("amount",)


def test_rejects_post_id_reused_with_different_metadata(held: Book) -> None:
    post(held, "capture", "hold")

    outcome = held.apply(PostPending("capture", "hold", metadata={"note": "x"}))

    assert_fails(outcome, Code.EXISTS_WITH_DIFFERENT_FIELDS)
    assert outcome.fields == ("metadata",)


def test_rejects_post_id_reused_for_another_pending_transfer(held: Book) -> None:
    move(held, "hold-2", "a", "b", 100, pending=True)
    post(held, "capture", "hold")

    outcome = held.apply(PostPending("capture", "hold-2"))

    assert_fails(outcome, Code.EXISTS_WITH_DIFFERENT_FIELDS)
    assert outcome.fields == ("pending_id",)
    assert held.transfers["hold-2"].status is TransferStatus.PENDING


def test_a_post_id_reused_for_another_hold_names_the_amount_whatever_the_book_holds(
    held: Book,
) -> None:
    # A storage adapter loads the transfers a command names (its id and pending_id),
    # not the hold the existing record resolved; the answer must not depend on that.
    move(held, "hold-2", "a", "b", 100, pending=True)
    post(held, "capture", "hold", amount=40)
    loaded = make_book(
        now_us=NOW_US + 1,
        last_sequence=held.last_sequence,
        accounts=held.accounts.values(),
        transfers=[held.transfers["capture"], held.transfers["hold-2"]],
    )

    for book in (at(held, NOW_US + 1), loaded):
        outcome = book.apply(PostPending("capture", "hold-2"))

        assert_fails(outcome, Code.EXISTS_WITH_DIFFERENT_FIELDS)
        assert outcome.fields == ("pending_id", "amount")


def test_rejects_void_reusing_the_id_of_a_post(held: Book) -> None:
    post(held, "capture", "hold")

    outcome = held.apply(VoidPending("capture", "hold"))

    assert_fails(outcome, Code.EXISTS_WITH_DIFFERENT_FIELDS)
    assert outcome.fields == ("action",)


def test_rejects_post_reusing_the_id_of_a_void(held: Book) -> None:
    void(held, "cancel", "hold")

    outcome = held.apply(PostPending("cancel", "hold"))

    assert_fails(outcome, Code.EXISTS_WITH_DIFFERENT_FIELDS)
    assert outcome.fields == ("action",)


def test_rejects_post_reusing_the_id_of_a_plain_transfer(held: Book) -> None:
    move(held, "direct", "a", "b", 5)

    outcome = held.apply(PostPending("direct", "hold"))

    assert_fails(outcome, Code.EXISTS_WITH_DIFFERENT_FIELDS)
    assert "pending_id" in outcome.fields
    assert held.transfers["hold"].status is TransferStatus.PENDING


def test_rejects_post_whose_id_is_the_pending_transfer_itself(held: Book) -> None:
    outcome = held.apply(PostPending("hold", "hold"))

    assert_fails(outcome, Code.EXISTS_WITH_DIFFERENT_FIELDS)
    assert held.transfers["hold"].status is TransferStatus.PENDING


def test_resolution_sees_a_pending_transfer_loaded_from_storage() -> None:
    book = make_book()
    open_account(book, "a")
    open_account(book, "b")
    move(book, "hold", "a", "b", 100, pending=True)
    loaded = at(book, NOW_US + 1)

    post(loaded, "capture", "hold", amount=10)

    changes = loaded.changes()
    assert [t.id for t in changes.transfers_created] == ["capture"]
    assert [t.id for t in changes.transfers_updated] == ["hold"]
    assert sorted(a.id for a in changes.accounts_updated) == ["a", "b"]
    assert changes.accounts_created == []

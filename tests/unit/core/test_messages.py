"""The words of the core's refusals: each names the ids and amounts involved and says
what to do next (``tally.core.messages``). Codes are the stable part; these tests
pin what a person needs from the detail, not its exact wording."""

from __future__ import annotations

from tally.core import Book, Code, CreateTransfer, PostPending
from tests.unit.core.builders import (
    EUR,
    assert_fails,
    close,
    fund,
    move,
    open_account,
)


def test_exceeds_credits_says_what_is_available_counting_holds(book: Book) -> None:
    open_account(book, "wallet", debits_must_not_exceed_credits=True)
    open_account(book, "shop")
    fund(book, "wallet", 100)
    move(book, "hold", "wallet", "shop", 30, pending=True)

    outcome = book.apply(CreateTransfer("t", "wallet", "shop", 80))

    assert_fails(outcome, Code.EXCEEDS_CREDITS)
    assert "'wallet' has 70 available" in outcome.detail
    assert "needs 80" in outcome.detail
    assert "at most 70" in outcome.detail


def test_exceeds_credits_on_an_empty_account_says_to_move_money_in(book: Book) -> None:
    open_account(book, "wallet", debits_must_not_exceed_credits=True)
    open_account(book, "shop")

    outcome = book.apply(CreateTransfer("t", "wallet", "shop", 1))

    assert_fails(outcome, Code.EXCEEDS_CREDITS)
    assert "has 0 available" in outcome.detail
    assert "Move money in first" in outcome.detail


def test_exceeds_debits_says_how_much_more_the_account_can_take(book: Book) -> None:
    open_account(book, "capped", credits_must_not_exceed_debits=True)
    open_account(book, "other")
    move(book, "in", "capped", "other", 50)

    outcome = book.apply(CreateTransfer("t", "other", "capped", 60))

    assert_fails(outcome, Code.EXCEEDS_DEBITS)
    assert "can take 50 more" in outcome.detail and "add 60" in outcome.detail


def test_an_atomic_batch_names_the_failing_item_in_every_other_item(book: Book) -> None:
    open_account(book, "wallet", debits_must_not_exceed_credits=True)
    open_account(book, "shop")
    fund(book, "wallet", 10)
    commands = [
        CreateTransfer("a", "wallet", "shop", 1),
        CreateTransfer("b", "wallet", "shop", 1),
        CreateTransfer("c", "wallet", "shop", 100),
        CreateTransfer("d", "wallet", "shop", 1),
    ]

    outcomes = book.execute(commands, atomic=True)

    assert_fails(outcomes[2], Code.EXCEEDS_CREDITS)
    for index in (0, 1, 3):
        assert_fails(outcomes[index], Code.LINKED_EVENT_FAILED)
        assert "item 2 of this atomic batch failed" in outcomes[index].detail


def test_refusals_name_the_side_and_the_id(book: Book) -> None:
    open_account(book, "usd")
    open_account(book, "eur", EUR)
    open_account(book, "shut")
    close(book, "shut")

    missing = book.apply(CreateTransfer("t1", "usd", "nowhere", 1))
    differ = book.apply(CreateTransfer("t2", "usd", "eur", 1))
    closed = book.apply(CreateTransfer("t3", "usd", "shut", 1))

    assert "credit account with id 'nowhere'" in missing.detail
    assert "POST /v1/accounts" in missing.detail
    assert "'usd' is in USD" in differ.detail and "'eur' in EUR" in differ.detail
    assert "credit account 'shut' is closed" in closed.detail


def test_a_post_over_the_held_amount_says_how_much_is_held(book: Book) -> None:
    open_account(book, "a")
    open_account(book, "b")
    move(book, "hold", "a", "b", 30, pending=True)

    outcome = book.apply(PostPending("p", "hold", 31))

    assert_fails(outcome, Code.EXCEEDS_PENDING_TRANSFER_AMOUNT)
    assert "amount 31" in outcome.detail and "post at most 30" in outcome.detail


def test_no_refusal_reads_like_code(book: Book) -> None:
    # The words are for people: no Python reprs of objects, no enum or class names.
    open_account(book, "wallet", debits_must_not_exceed_credits=True)
    open_account(book, "shop")
    outcomes = [
        book.apply(CreateTransfer("t1", "wallet", "shop", 5)),
        book.apply(CreateTransfer("t2", "wallet", "wallet", 5)),
        book.apply(CreateTransfer("t3", "wallet", "shop", 5, timeout_seconds=5)),
        book.apply(PostPending("p", "none")),
    ]
    for outcome in outcomes:
        assert not outcome.ok
        for internal in ("Account(", "Transfer(", "Code.", "Status.", "None", "_us"):
            assert internal not in outcome.detail, outcome.detail

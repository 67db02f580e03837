"""Events: one per change, numbered without gaps, written in commit order."""

from __future__ import annotations

from tally.core import (
    Book,
    CreateAccount,
    CreateTransfer,
    ExpirePending,
    PostPending,
    UpdateAccount,
    VoidPending,
)
from tests.unit.core.builders import (
    MICROSECONDS_PER_SECOND,
    NOW_US,
    USD,
    make_book,
    move,
    open_account,
    reload,
)

LAST_SEQUENCE = 41


def test_events_follow_the_last_sequence_one_per_change_without_gaps() -> None:
    book = make_book(last_sequence=LAST_SEQUENCE)

    book.execute(
        [
            CreateAccount("a", USD),
            CreateAccount("b", USD),
            CreateTransfer("hold", "a", "b", 10, pending=True),
            PostPending("capture", "hold", 4),
            CreateTransfer("hold-2", "a", "b", 3, pending=True),
            VoidPending("cancel", "hold-2"),
            UpdateAccount("a", metadata={"k": "v"}),
            UpdateAccount("b", close=True),
        ]
    )

    events = book.changes().events
    assert [(e.sequence, e.type) for e in events] == [
        (42, "account.created"),
        (43, "account.created"),
        (44, "transfer.created"),
        (45, "transfer.created"),
        (46, "transfer.created"),
        (47, "transfer.created"),
        (48, "account.updated"),
        (49, "account.closed"),
    ]
    assert book.last_sequence == 49
    assert all(e.created_at_us == NOW_US for e in events)


def test_creation_events_share_their_sequence_with_the_created_object() -> None:
    book = make_book(last_sequence=LAST_SEQUENCE)
    open_account(book, "a")
    open_account(book, "b")
    move(book, "hold", "a", "b", 10, pending=True)
    book.apply(PostPending("capture", "hold"))

    events = book.changes().events
    assert [e.data.id for e in events] == ["a", "b", "hold", "capture"]
    for event in events:
        current = book.accounts.get(event.data.id) or book.transfers[event.data.id]
        assert event.sequence == event.data.sequence == current.sequence


def test_event_data_is_the_object_right_after_its_change(book: Book) -> None:
    open_account(book, "a")
    open_account(book, "b")
    created = book.accounts["a"]
    book.apply(UpdateAccount("a", metadata={"k": "v"}))
    updated = book.accounts["a"]
    book.apply(UpdateAccount("a", close=True))
    closed = book.accounts["a"]

    events = [e for e in book.changes().events if e.data.id == "a"]

    assert [e.data for e in events] == [created, updated, closed]
    assert events[0].data.metadata == {}
    assert events[1].data.metadata == {"k": "v"}


def test_post_and_void_records_are_announced_as_created_transfers(book: Book) -> None:
    open_account(book, "a")
    open_account(book, "b")
    move(book, "hold-1", "a", "b", 10, pending=True)
    move(book, "hold-2", "a", "b", 10, pending=True)
    start = len(book.changes().events)

    book.execute([PostPending("capture", "hold-1"), VoidPending("cancel", "hold-2")])

    events = book.changes().events[start:]
    assert [(e.type, e.data.id) for e in events] == [
        ("transfer.created", "capture"),
        ("transfer.created", "cancel"),
    ]


def test_expiry_event_takes_the_next_sequence_and_carries_the_expired_transfer() -> None:
    setup = make_book(last_sequence=LAST_SEQUENCE)
    open_account(setup, "a")
    open_account(setup, "b")
    move(setup, "hold", "a", "b", 10, pending=True, timeout_seconds=1)
    due = reload(setup, now_us=NOW_US + MICROSECONDS_PER_SECOND)

    due.apply(ExpirePending("hold"))

    [event] = due.changes().events
    assert event.sequence == setup.last_sequence + 1
    assert event.type == "transfer.expired"
    assert event.data is due.transfers["hold"]
    assert event.data.sequence == LAST_SEQUENCE + 3
    assert event.created_at_us == NOW_US + MICROSECONDS_PER_SECOND


def test_failed_and_no_op_commands_write_no_event_and_take_no_sequence(book: Book) -> None:
    open_account(book, "a", metadata={"k": "v"})
    open_account(book, "b")
    move(book, "t1", "a", "b", 1)
    last_sequence = book.last_sequence
    events_before = book.changes().events

    book.execute(
        [
            CreateAccount("a", USD, metadata={"k": "v"}),
            CreateAccount("a", "EUR"),
            CreateAccount(
                "c", USD, debits_must_not_exceed_credits=True, credits_must_not_exceed_debits=True
            ),
            UpdateAccount("a", metadata={"k": "v"}),
            UpdateAccount("ghost", close=True),
            CreateTransfer("t1", "a", "b", 1),
            CreateTransfer("t2", "a", "ghost", 1),
            PostPending("p", "t1"),
            ExpirePending("t1"),
        ]
    )

    assert book.last_sequence == last_sequence
    assert book.changes().events == events_before


def test_sequences_continue_across_books_from_the_loaded_last_sequence() -> None:
    first = make_book(last_sequence=LAST_SEQUENCE)
    open_account(first, "a")
    second = reload(first, now_us=NOW_US + 1)

    account = open_account(second, "b")

    assert account.sequence == LAST_SEQUENCE + 2
    assert [e.sequence for e in second.changes().events] == [LAST_SEQUENCE + 2]

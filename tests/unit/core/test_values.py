"""The core's values and commands are not tracked by Python's cycle collector.

They hold only text, numbers, enum members, other values and metadata dicts of
text, and are frozen: no reference cycle can pass through one, so reference
counting frees each, and the collector need not traverse the thousands a batch
keeps alive (``tally.core.model``; docs/performance.md measured a tenth of the
batch path's CPU in the collector before). These tests hold that declaration
for every kind a batch makes, metadata included (msgspec tracks a Struct with a
dict field unless told not to).
"""

from __future__ import annotations

import gc

from tally.core import (
    Book,
    CreateAccount,
    CreateTransfer,
    ExpirePending,
    PostPending,
    UpdateAccount,
    VoidPending,
)
from tests.unit.core.builders import MICROSECONDS_PER_SECOND, NOW_US, USD, make_book

META = {"order": "A-17", "note": "lunch"}


def a_batch() -> tuple[Book, list[object]]:
    book = make_book()
    commands: list[object] = [
        CreateAccount("a", USD, metadata=dict(META)),
        CreateAccount("b", USD, metadata=dict(META)),
        CreateTransfer("t1", "a", "b", 10, metadata=dict(META)),
        CreateTransfer("h1", "a", "b", 5, pending=True, metadata=dict(META)),
        CreateTransfer("h2", "a", "b", 5, pending=True, timeout_seconds=1),
        PostPending("p1", "h1", metadata=dict(META)),
        VoidPending("v1", "h2", metadata=dict(META)),
        UpdateAccount("a", metadata={"order": None, "new": "x"}),
    ]
    outcomes = book.execute(commands, atomic=False)
    assert all(o.ok for o in outcomes), outcomes
    later = make_book(
        now_us=NOW_US + 2 * MICROSECONDS_PER_SECOND,
        accounts=book.accounts.values(),
        transfers=[*book.transfers.values()],
    )
    expiry = [ExpirePending("h2")]
    return book, [*commands, *expiry, *outcomes, *later.execute(expiry, atomic=False)]


def test_every_value_and_command_a_batch_makes_is_left_to_reference_counting() -> None:
    book, made = a_batch()
    changes = book.changes()
    values = [
        *made,
        *changes.accounts_created,
        *changes.accounts_updated,
        *changes.transfers_created,
        *changes.transfers_updated,
        *changes.balance_changes,
        *changes.events,
        *(o.object for o in made if getattr(o, "object", None) is not None),
    ]
    kinds = {type(v).__name__ for v in values}
    assert kinds >= {
        "Account", "Transfer", "Event", "BalanceChange", "Outcome", "CreateAccount",
        "UpdateAccount", "CreateTransfer", "PostPending", "VoidPending", "ExpirePending",
    }  # fmt: skip
    assert [type(v).__name__ for v in values if gc.is_tracked(v)] == []
    # Their metadata dicts are ordinary dicts, collected as ever.
    assert changes.transfers_created[0].metadata == META

"""The ledger invariants of api.md §1, checked after every step of random command streams.

Each step is one write transaction: a fresh ``Book`` loaded from what the previous
steps persisted (through ``changes()``, as a storage adapter would), at a later time,
running a small batch. After it: debits equal credits per currency, limits hold, every
account's totals equal what its transfers add up to, and no total leaves 0 … 2^63-1.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tally.core import (
    AMOUNT_MAX,
    Account,
    Book,
    Code,
    Command,
    CreateAccount,
    CreateTransfer,
    Event,
    ExpirePending,
    NormalBalance,
    Outcome,
    PostPending,
    Status,
    Transfer,
    TransferStatus,
    UpdateAccount,
    VoidPending,
)
from tests.unit.core.builders import EUR, MICROSECONDS_PER_SECOND, NOW_US, USD

ACCOUNTS = (
    CreateAccount("bank", USD, NormalBalance.DEBIT),
    CreateAccount("fees", USD),
    CreateAccount("alice", USD, debits_must_not_exceed_credits=True),
    CreateAccount("bob", USD, debits_must_not_exceed_credits=True),
    CreateAccount("loan", USD, NormalBalance.DEBIT, credits_must_not_exceed_debits=True),
    CreateAccount("eur-bank", EUR, NormalBalance.DEBIT),
    CreateAccount("eur-wallet", EUR, debits_must_not_exceed_credits=True),
)
ACCOUNT_IDS = [c.id for c in ACCOUNTS]
CURRENCY_OF = {c.id: c.currency for c in ACCOUNTS}
# A small pool of ids, so that repeats (idempotent or conflicting) happen often.
TRANSFER_IDS = [f"t{i}" for i in range(16)]
# Post and void records take their own ids, and sometimes a transfer's by mistake.
RECORD_IDS = [f"r{i}" for i in range(6)] + TRANSFER_IDS[:2]
TOTAL_NAMES = ("debits_pending", "debits_posted", "credits_pending", "credits_posted")

account_ids = st.sampled_from(ACCOUNT_IDS)
transfer_ids = st.sampled_from(TRANSFER_IDS)
record_ids = st.sampled_from(RECORD_IDS)
# Small amounts move freely; amounts near 2^63-1 reach the overflow checks.
amounts = st.one_of(
    st.integers(1, 200), st.integers(1, 200), st.integers(AMOUNT_MAX - 200, AMOUNT_MAX)
)
# Timeouts are whole seconds, so whole-second steps land exactly on deadlines and the
# odd microsecond lands just before or after them (listed twice to weigh them more);
# the rest fall anywhere.
advances_us = st.one_of(
    st.sampled_from([0, 1, MICROSECONDS_PER_SECOND - 1, MICROSECONDS_PER_SECOND]),
    st.sampled_from([0, 1, MICROSECONDS_PER_SECOND - 1, MICROSECONDS_PER_SECOND]),
    st.integers(0, 3 * MICROSECONDS_PER_SECOND),
)
atomics = st.sampled_from([False, False, False, True])


@st.composite
def create_transfers(draw: st.DrawFn) -> CreateTransfer:
    debit_id = draw(account_ids)
    # Mostly another account in the same currency, so that most transfers reach the
    # limit and overflow checks rather than stopping at the first validation.
    if draw(st.integers(0, 9)) == 0:
        credit_id = draw(account_ids)
    else:
        partners = [a for a in ACCOUNT_IDS if CURRENCY_OF[a] == CURRENCY_OF[debit_id]]
        credit_id = draw(st.sampled_from([a for a in partners if a != debit_id]))
    pending = draw(st.booleans())
    timeout_seconds = draw(st.one_of(st.none(), st.integers(1, 3))) if pending else None
    if draw(st.integers(0, 19)) == 0:
        timeout_seconds = 1  # now and then the mistake: a timeout without pending
    return CreateTransfer(
        id=draw(transfer_ids),
        debit_account_id=debit_id,
        credit_account_id=credit_id,
        amount=draw(amounts),
        pending=pending,
        timeout_seconds=timeout_seconds,
    )


def resolutions(pending_ids: list[str]) -> st.SearchStrategy[Command]:
    """Post, void or expire, mostly of a transfer that was created pending."""
    targets = st.one_of(st.sampled_from(pending_ids), transfer_ids) if pending_ids else transfer_ids
    return st.one_of(
        st.builds(
            PostPending,
            id=record_ids,
            pending_id=targets,
            amount=st.one_of(st.none(), st.integers(1, 200), amounts),
        ),
        st.builds(VoidPending, id=record_ids, pending_id=targets),
        st.builds(ExpirePending, pending_id=targets),
    )


@st.composite
def commands(draw: st.DrawFn, pending_ids: list[str]) -> Command:
    # Weighted by hand: closing is rare, since a closed account takes no more transfers.
    kind = draw(st.integers(0, 39))
    if kind == 0:
        return UpdateAccount(draw(account_ids), close=True)
    if kind < 22:
        return draw(create_transfers())
    return draw(resolutions(pending_ids))


@dataclass
class Store:
    """What a storage adapter would hold: everything persisted from ``changes()``."""

    accounts: dict[str, Account] = field(default_factory=dict)
    transfers: dict[str, Transfer] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    last_sequence: int = 0

    def load(self, now_us: int) -> Book:
        return Book(
            self.accounts.values(),
            self.transfers.values(),
            now_us=now_us,
            last_sequence=self.last_sequence,
        )

    def persist(self, book: Book) -> None:
        changes = book.changes()
        for account in changes.accounts_created:
            assert account.id not in self.accounts
            self.accounts[account.id] = account
        for account in changes.accounts_updated:
            assert account.id in self.accounts
            self.accounts[account.id] = account
        for transfer in changes.transfers_created:
            assert transfer.id not in self.transfers
            self.transfers[transfer.id] = transfer
        for transfer in changes.transfers_updated:
            assert transfer.id in self.transfers
            self.transfers[transfer.id] = transfer
        sequences = [e.sequence for e in changes.events]
        assert sequences == list(range(self.last_sequence + 1, book.last_sequence + 1))
        last_rows = {row.account.id: row.account for row in changes.balance_changes}
        for account_id, row_account in last_rows.items():
            assert _totals(row_account) == _totals(self.accounts[account_id])
        self.events.extend(changes.events)
        self.last_sequence = book.last_sequence
        # What changes() reported is the whole of the book's new state.
        assert self.accounts == book.accounts
        assert self.transfers == book.transfers


def _totals(account: Account) -> tuple[int, ...]:
    return tuple(getattr(account, name) for name in TOTAL_NAMES)


def recomputed_totals(transfers: dict[str, Transfer]) -> dict[str, Counter[str]]:
    """Every account's four totals, as the sum of the transfers that touched it."""
    expected: dict[str, Counter[str]] = defaultdict(Counter)
    for transfer in transfers.values():
        if transfer.pending:
            # A resolved reservation is released; its post record carries any movement.
            if transfer.status is TransferStatus.PENDING:
                expected[transfer.debit_account_id]["debits_pending"] += transfer.amount
                expected[transfer.credit_account_id]["credits_pending"] += transfer.amount
        elif transfer.status is TransferStatus.POSTED:
            # A single-phase transfer or a post record; a void record moves nothing.
            expected[transfer.debit_account_id]["debits_posted"] += transfer.amount
            expected[transfer.credit_account_id]["credits_posted"] += transfer.amount
    return expected


def check_balanced_per_currency(accounts: dict[str, Account]) -> None:
    sums: dict[str, Counter[str]] = defaultdict(Counter)
    for account in accounts.values():
        for name in TOTAL_NAMES:
            sums[account.currency][name] += getattr(account, name)
    for currency, total in sums.items():
        assert total["debits_posted"] == total["credits_posted"], currency
        assert total["debits_pending"] == total["credits_pending"], currency


def check_limits_and_ranges(accounts: dict[str, Account]) -> None:
    for account in accounts.values():
        for name in TOTAL_NAMES:
            assert 0 <= getattr(account, name) <= AMOUNT_MAX, (account.id, name)
        if account.debits_must_not_exceed_credits:
            assert account.debits_posted + account.debits_pending <= account.credits_posted
        if account.credits_must_not_exceed_debits:
            assert account.credits_posted + account.credits_pending <= account.debits_posted


def check_totals_match_transfers(store: Store) -> None:
    expected = recomputed_totals(store.transfers)
    for account in store.accounts.values():
        assert {n: getattr(account, n) for n in TOTAL_NAMES} == {
            n: expected[account.id][n] for n in TOTAL_NAMES
        }, account.id
    assert set(expected) <= set(store.accounts)


def check_each_reservation_resolved_at_most_once(transfers: dict[str, Transfer]) -> None:
    records: dict[str, list[Transfer]] = defaultdict(list)
    for transfer in transfers.values():
        if transfer.pending_id is not None:
            records[transfer.pending_id].append(transfer)
    for transfer in transfers.values():
        if not transfer.pending:
            assert records[transfer.id] == [], transfer.id
            continue
        if transfer.status in (TransferStatus.PENDING, TransferStatus.EXPIRED):
            assert records[transfer.id] == [], transfer.id
        else:
            [record] = records[transfer.id]
            assert record.status is transfer.status
            assert record.amount <= transfer.amount
            assert record.created_at_us == transfer.resolved_at_us
        if transfer.expires_at_us is not None and transfer.resolved_at_us is not None:
            expired = transfer.status is TransferStatus.EXPIRED
            assert expired == (transfer.resolved_at_us >= transfer.expires_at_us), transfer.id


def check_outcomes(
    batch: list[Command], outcomes: list[Outcome], atomic: bool, book: Book, store: Store
) -> None:
    assert len(outcomes) == len(batch)
    changes = book.changes()
    failed = [o for o in outcomes if o.status is Status.FAILED]
    if atomic and failed:
        assert len(failed) == len(outcomes)
        own = [o for o in outcomes if o.code is not Code.LINKED_EVENT_FAILED]
        assert len(own) == 1
        assert book.last_sequence == store.last_sequence
        assert changes.events == []
        assert changes.balance_changes == []
        assert changes.accounts_updated == []
        assert changes.transfers_created == []
        assert changes.transfers_updated == []
    for outcome in outcomes:
        assert (outcome.code is None) == outcome.ok
        if outcome.code is Code.EXISTS_WITH_DIFFERENT_FIELDS:
            assert outcome.fields
    # One event per new transfer record and per expiry, none for anything refused.
    created = sum(o.status is Status.CREATED for o in outcomes)
    expired = sum(
        isinstance(c, ExpirePending) and o.status is Status.UPDATED
        for c, o in zip(batch, outcomes, strict=True)
    )
    types = Counter(e.type for e in changes.events)
    assert types["transfer.created"] == created
    assert types["transfer.expired"] == expired


@pytest.mark.slow  # about 20 s: make test runs it, make check leaves it out
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_ledger_invariants_hold_after_every_step(data: st.DataObject) -> None:
    store = Store()
    setup = store.load(NOW_US)
    assert all(o.status is Status.CREATED for o in setup.execute(ACCOUNTS, atomic=True))
    store.persist(setup)
    now_us = NOW_US

    for _ in range(data.draw(st.integers(3, 30), label="steps")):
        now_us += data.draw(advances_us, label="advance_us")
        pending_ids = sorted(t.id for t in store.transfers.values() if t.pending)
        batch = data.draw(st.lists(commands(pending_ids), min_size=1, max_size=4), label="batch")
        atomic = data.draw(atomics, label="atomic")
        book = store.load(now_us)
        outcomes = book.execute(batch, atomic=atomic)

        check_outcomes(batch, outcomes, atomic, book, store)
        store.persist(book)
        check_balanced_per_currency(store.accounts)
        check_limits_and_ranges(store.accounts)
        check_totals_match_transfers(store)
        check_each_reservation_resolved_at_most_once(store.transfers)

    assert [e.sequence for e in store.events] == list(range(1, store.last_sequence + 1))

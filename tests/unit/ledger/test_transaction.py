"""The ledger's write transaction, step by step, with no database.

``write_transaction`` is written once for both databases as a generator of
storage steps; here each step is answered by hand, so these tests show the
order of the steps and what the logic between them decides. The adapters'
SQL for each step is tested on the real databases (tests/integration).
"""

from __future__ import annotations

from typing import Any

import pytest

from tally.core import (
    Account,
    AccountStatus,
    CreateAccount,
    CreateTransfer,
    ExpirePending,
    NormalBalance,
    PostPending,
    Status,
    Transfer,
    TransferStatus,
    UpdateAccount,
    VoidPending,
)
from tally.core.commands import account_ids, transfer_ids
from tally.ledger.idempotency import Claim
from tally.ledger.transaction import Job, JobResult, Reads, StaleRead, write_transaction
from tally.storage.records import StoredKey, StoredResponse
from tally.storage.unit_of_work import (
    FindKeys,
    LockAccounts,
    LockAndRead,
    ReadCounters,
    ReadTransfers,
    Step,
    Write,
    drive,
)

NOW_US = 1_800_000_000_000_000


def account(
    id: str, credits: int = 0, *, debits_pending: int = 0, credits_pending: int = 0
) -> Account:
    return Account(
        id=id,
        currency="USD",
        normal_balance=NormalBalance.CREDIT,
        debits_must_not_exceed_credits=False,
        credits_must_not_exceed_debits=False,
        metadata={},
        status=AccountStatus.OPEN,
        created_at_us=0,
        updated_at_us=0,
        sequence=1,
        credits_posted=credits,
        debits_pending=debits_pending,
        credits_pending=credits_pending,
    )


def hold(id: str, debit: str, credit: str) -> Transfer:
    return Transfer(
        id=id,
        debit_account_id=debit,
        credit_account_id=credit,
        amount=5,
        currency="USD",
        pending=True,
        status=TransferStatus.PENDING,
        metadata={},
        created_at_us=0,
        sequence=2,
    )


class Database:
    """Answers each step from a few rows, and remembers the steps in order."""

    def __init__(
        self,
        accounts: dict[tuple[str, str], Account],
        transfers: list[list[tuple[str, Transfer]]] | None = None,
        keys: dict[tuple[str, str], StoredKey] | None = None,
    ) -> None:
        self.accounts = accounts
        self.transfer_reads = list(transfers or [])
        self.keys = keys or {}
        self.steps: list[Step] = []

    def perform(self, step: Step) -> Any:
        self.steps.append(step)
        if isinstance(step, FindKeys):
            return {k: self.keys[k] for k in step.keys if k in self.keys}
        if isinstance(step, ReadTransfers):
            return self.transfer_reads.pop(0) if self.transfer_reads else []
        if isinstance(step, LockAccounts):
            return [(k[0], self.accounts[k]) for k in step.keys if k in self.accounts]
        if isinstance(step, LockAndRead):
            found = [(k[0], self.accounts[k]) for k in step.lock if k in self.accounts]
            return found, self.transfer_reads.pop(0) if self.transfer_reads else []
        if isinstance(step, ReadCounters):
            return dict.fromkeys(step.tenant_ids, 10)
        return None

    def kinds(self) -> list[str]:
        return [type(s).__name__ for s in self.steps]


def run(db: Database, jobs: list[Job]) -> list[JobResult]:
    return drive(write_transaction(jobs, NOW_US), db.perform)


def test_locks_every_account_once_in_the_global_order() -> None:
    db = Database({("t1", i): account(i, 100) for i in "abc"} | {("t0", "z"): account("z", 9)})
    jobs = [
        Job("t1", [CreateTransfer("x1", "c", "a", 1), CreateTransfer("x2", "b", "a", 1)]),
        Job("t0", [CreateTransfer("x3", "z", "y", 1)]),
    ]
    run(db, jobs)
    (lock,) = [s for s in db.steps if isinstance(s, LockAndRead)]
    assert lock.lock == [("t0", "y"), ("t0", "z"), ("t1", "a"), ("t1", "b"), ("t1", "c")]
    # Creates only: the locks and the read of their ids go in one round trip.
    assert db.kinds() == ["FindKeys", "LockAndRead", "ReadCounters", "Write"]


def test_a_batch_names_what_each_kind_of_command_names_found_in_one_pass() -> None:
    jobs = [
        Job(
            "t1",
            [
                CreateTransfer("x1", "c", "a", 1),
                PostPending("p1", "h1"),
                VoidPending("v1", "h2"),
                CreateAccount("n", "USD"),
                UpdateAccount("m"),
                CreateTransfer("x1", "a", "c", 1),  # a repeat: named once
            ],
        ),
        Job("t0", [ExpirePending("h3"), CreateTransfer("x2", "z", "y", 1)]),
    ]
    reads = Reads.of(jobs)
    # What the commands' own definitions say (tally.core.commands), gathered by hand.
    named = [(j.tenant_id, c) for j in jobs for c in j.commands]
    assert reads.transfers == sorted({(t, i) for t, c in named for i in transfer_ids(c)})
    assert reads.accounts == {(t, i) for t, c in named for i in account_ids(c)}
    assert reads.resolving == [("t0", "h3"), ("t1", "h1"), ("t1", "h2")]
    # The resolved holds' accounts join the locks, all in the global order.
    held = [("t1", hold("h1", "b", "d")), ("t0", hold("h3", "w", "z"))]
    assert reads.locks(held) == sorted(reads.accounts | {("t1", "b"), ("t1", "d"), ("t0", "w")})
    assert reads.locks(held)[:3] == [("t0", "w"), ("t0", "y"), ("t0", "z")]


def test_a_post_reads_its_hold_first_to_know_which_accounts_to_lock() -> None:
    pending = hold("h1", "a", "b")
    db = Database(
        {("t", "a"): account("a", debits_pending=5), ("t", "b"): account("b", credits_pending=5)},
        transfers=[[("t", pending)], [("t", pending)]],
    )
    (result,) = run(db, [Job("t", [PostPending("p1", "h1")])])
    assert db.kinds()[:3] == ["FindKeys", "ReadTransfers", "LockAccounts"]
    assert db.steps[1] == ReadTransfers([("t", "h1")])
    assert db.steps[2] == LockAccounts([("t", "a"), ("t", "b")])
    assert result.outcomes[0].status is Status.CREATED


def test_a_hold_that_appeared_after_the_unlocked_read_makes_it_run_again() -> None:
    # The first read saw no hold, so nothing was locked; under the locks it exists,
    # naming accounts this transaction does not hold: it must not decide.
    db = Database({}, transfers=[[], [("t", hold("h1", "a", "b"))]])
    with pytest.raises(StaleRead):
        run(db, [Job("t", [PostPending("p1", "h1")])])


def test_a_stored_key_is_answered_without_running_anything() -> None:
    stored = StoredResponse(201, b'{"id":"x1"}', ())
    db = Database({}, keys={("t", "k1"): StoredKey("fp", stored)})
    job = Job("t", [CreateTransfer("x1", "a", "b", 1)], claim=Claim("k1", "fp"))
    (result,) = run(db, [job])
    assert db.kinds() == ["FindKeys", "Write"]
    assert result.replayed and result.response == stored


def test_the_write_carries_the_changes_the_answer_and_its_key() -> None:
    db = Database({("t", "a"): account("a", 100), ("t", "b"): account("b")})

    def answer(outcomes: list[Any]) -> StoredResponse:
        return StoredResponse(201, outcomes[0].object.id.encode(), ())

    job = Job("t", [CreateTransfer("x1", "a", "b", 7)], claim=Claim("k1", "fp"), answer=answer)
    (result,) = run(db, [job])
    write = db.steps[-1]
    assert isinstance(write, Write)
    (tenant,) = write.tenants
    assert [t.id for t in tenant.changes.transfers_created] == ["x1"]
    assert tenant.sequences_used == 1  # one event, numbered after the counter (10)
    assert tenant.changes.events[0].sequence == 11
    assert tenant.event_data == [None]  # a transfer event references its transfer (0005)
    assert [(k.key, k.response.body) for k in tenant.keys] == [("k1", b"x1")]
    assert result.response is not None and result.response.body == b"x1"

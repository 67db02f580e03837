"""When the writer may answer a batch's read from memory (decisions/0011): only
all of one tenant's accounts, only while reads keep finding memory right."""

from __future__ import annotations

from tally.core import Account, AccountStatus, NormalBalance
from tally.storage.known_accounts import CLEAN_READS_MAX, KnownAccounts


def _account(account_id: str, version: int = 1) -> Account:
    return Account(
        id=account_id,
        currency="USD",
        normal_balance=NormalBalance.CREDIT,
        debits_must_not_exceed_credits=False,
        credits_must_not_exceed_debits=False,
        metadata={},
        status=AccountStatus.OPEN,
        created_at_us=1,
        updated_at_us=1,
        sequence=1,
        version=version,
    )


def _known(*pairs: tuple[str, Account]) -> KnownAccounts:
    known = KnownAccounts()
    known.remember({(tenant_id, a.id): a for tenant_id, a in pairs})
    return known


def test_every_account_of_one_tenant_remembered_is_recalled_in_the_order_asked() -> None:
    a, b = _account("a"), _account("b")
    known = _known(("t1", a), ("t1", b))
    assert known.recall([("t1", "b"), ("t1", "a")]) == [("t1", b), ("t1", a)]


def test_nothing_is_recalled_when_one_account_is_missing_or_of_another_tenant() -> None:
    known = _known(("t1", _account("a")), ("t2", _account("b")))
    assert known.recall([("t1", "a"), ("t1", "c")]) is None
    assert known.recall([("t1", "a"), ("t2", "b")]) is None
    assert known.recall([]) is None


def test_a_changed_account_stops_recall_until_a_read_finds_all_as_remembered() -> None:
    a, b = _account("a"), _account("b")
    known = _known(("t1", a), ("t1", b))
    assert known.trusted  # one process: nothing says otherwise
    known.compare([("t1", _account("a", version=2)), ("t1", b)])
    assert not known.trusted
    assert known.recall([("t1", "a")]) is None
    # Accounts never remembered say nothing either way.
    known.compare([("t1", _account("z", version=9))])
    assert not known.trusted
    known.remember({("t1", "a"): _account("a", version=2)})
    known.compare([("t1", _account("a", version=2)), ("t1", b)])
    assert known.trusted
    assert known.recall([("t1", "a"), ("t1", "b")]) == [("t1", _account("a", version=2)), ("t1", b)]


def test_each_failure_from_memory_asks_twice_the_clean_reads_and_each_success_half() -> None:
    a = _account("a")
    known = _known(("t1", a))

    def clean_reads_needed() -> int:
        for n in range(1, 1000):
            known.remember({("t1", "a"): a})
            known.compare([("t1", a)])
            if known.trusted:
                return n
        raise AssertionError("never trusted")

    needed = []
    for _ in range(3):
        known.forget()
        needed.append(clean_reads_needed())
    assert needed == [1, 2, 4]
    known.committed()
    known.compare([("t1", _account("a", version=5))])  # a change: start counting again
    assert clean_reads_needed() == 2
    for _ in range(20):
        known.forget()
    assert clean_reads_needed() == CLEAN_READS_MAX


def test_forgetting_drops_everything_and_trust() -> None:
    known = _known(("t1", _account("a")))
    known.forget()
    assert len(known) == 0 and not known.trusted


def test_memory_past_its_bound_starts_again() -> None:
    known = KnownAccounts(entries_max=3)
    known.remember({("t", str(i)): _account(str(i)) for i in range(3)})
    assert len(known) == 3
    known.remember({("t", "new"): _account("new")})
    assert len(known) == 1 and known.recall([("t", "new")]) is not None

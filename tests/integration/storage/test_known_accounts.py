"""PostgreSQL: a batch whose accounts the writer remembers skips its read, and the
write checks them instead (decisions/0011). Memory may be wrong (another
process wrote); these tests make it wrong on purpose, with a second store on the
same database standing for the other process, and check that no decision made
on it survives: not a movement, not a refusal, not a repeated id."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tally.config import Settings
from tally.core import Account, Code, CreateAccount, CreateTransfer, NormalBalance, Outcome, Status
from tally.ledger.transaction import Job, execute
from tally.storage import make_store
from tally.storage import postgres as pg
from tally.storage.known_accounts import KnownAccounts
from tests.conftest import create_tenant

Scenario = Callable[[pg.PostgresStore, pg.PostgresStore, str], Awaitable[Any]]


class Reads:
    """How many batches read their accounts (a count of the real statement)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        self.forgotten = 0
        read = pg.PostgresStore._lock_and_read
        forget = KnownAccounts.forget

        async def counting(conn: Any, step: Any) -> Any:
            self.count += 1
            return await read(conn, step)

        def forgetting(known: KnownAccounts) -> None:
            self.forgotten += 1
            forget(known)

        monkeypatch.setattr(pg.PostgresStore, "_lock_and_read", staticmethod(counting))
        monkeypatch.setattr(KnownAccounts, "forget", forgetting)


def _run(postgres_url: str, scenario: Scenario) -> Any:
    tenant_id, _ = create_tenant(postgres_url)

    async def both() -> Any:
        this = make_store(Settings(database_url=postgres_url))
        other = make_store(Settings(database_url=postgres_url))
        await this.open()
        await other.open()
        try:
            return await scenario(this, other, tenant_id)  # type: ignore[arg-type]
        finally:
            await this.close()
            await other.close()

    return asyncio.run(both())


async def _one(store: pg.PostgresStore, tenant_id: str, *commands: Any) -> list[Outcome]:
    (result,) = await execute(store, [Job(tenant_id, list(commands))], 0, retry_after_seconds=1)
    return result.outcomes


async def _balance(store: pg.PostgresStore, tenant_id: str, account_id: str) -> int:
    account = await store.get_account(tenant_id, account_id)
    assert isinstance(account, Account)
    return account.credits_posted - account.debits_posted


async def _accounts(store: pg.PostgresStore, tenant_id: str) -> None:
    """A source without limits, and a wallet that cannot go below zero."""
    await _one(
        store,
        tenant_id,
        CreateAccount("source", "USD", normal_balance=NormalBalance.DEBIT),
        CreateAccount("wallet", "USD", debits_must_not_exceed_credits=True),
    )


def test_a_batch_whose_accounts_are_remembered_skips_its_read(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = Reads(monkeypatch)

    async def scenario(this: pg.PostgresStore, _: pg.PostgresStore, tenant_id: str) -> Any:
        await _accounts(this, tenant_id)  # created here: remembered as created
        before = reads.count
        for i in range(3):
            await _one(this, tenant_id, CreateTransfer(f"t{i}", "source", "wallet", 10))
        return reads.count - before, await _balance(this, tenant_id, "wallet")

    read, wallet = _run(postgres_url, scenario)
    assert read == 0
    assert wallet == 30
    assert reads.forgotten == 0


def test_a_large_batch_is_neither_answered_from_memory_nor_kept_in_it(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Memory is for small batches; a large one empties it, so that nothing it
    changed is remembered as it was, and the next small batch reads."""
    reads = Reads(monkeypatch)
    many = [CreateAccount(f"m{i}", "USD") for i in range(pg.KNOWN_ACCOUNTS_MAX + 1)]
    moves = [CreateTransfer(f"mt{i}", f"m{i}", "source", 1) for i in range(len(many))]

    async def scenario(this: pg.PostgresStore, _: pg.PostgresStore, tenant_id: str) -> Any:
        await _accounts(this, tenant_id)
        await _one(this, tenant_id, *many)
        before = reads.count
        await _one(this, tenant_id, CreateTransfer("small1", "source", "wallet", 1))
        (moved, *_) = await _one(this, tenant_id, *moves)
        assert moved.status is Status.CREATED
        await _one(this, tenant_id, CreateTransfer("small2", "source", "wallet", 1))
        return reads.count - before, len(this._known)  # type: ignore[attr-defined]

    read, remembered = _run(postgres_url, scenario)
    # The first small transfer reads (the large batch of accounts emptied
    # memory), the large batch of transfers reads, and so does the second
    # small one after it; then only its two accounts are remembered.
    assert read == 3
    assert remembered == 2
    assert reads.forgotten == 0


def test_a_movement_decided_on_a_balance_another_process_spent_is_refused(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wallet holds 100 in this process's memory, and the other process
    spends it: spending it again here must be refused, not overdraw."""
    reads = Reads(monkeypatch)

    async def scenario(this: pg.PostgresStore, other: pg.PostgresStore, tenant_id: str) -> Any:
        await _accounts(this, tenant_id)
        await _one(this, tenant_id, CreateTransfer("fund", "source", "wallet", 100))
        (spent,) = await _one(other, tenant_id, CreateTransfer("spend1", "wallet", "source", 100))
        assert spent.status is Status.CREATED
        (again,) = await _one(this, tenant_id, CreateTransfer("spend2", "wallet", "source", 100))
        return again, await _balance(this, tenant_id, "wallet")

    again, wallet = _run(postgres_url, scenario)
    assert again.status is Status.FAILED and again.code is Code.EXCEEDS_CREDITS
    assert wallet == 0
    assert reads.forgotten == 1  # memory was tried, failed its check, and dropped


def test_a_refusal_decided_on_a_balance_another_process_raised_is_made_again(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wallet is empty in memory, and the other process funds it. Refused
    on memory, the transfer writes nothing at all (no audit row here): the
    check still runs, fails, and the transfer is decided again, on the read."""
    reads = Reads(monkeypatch)

    async def scenario(this: pg.PostgresStore, other: pg.PostgresStore, tenant_id: str) -> Any:
        await _accounts(this, tenant_id)
        await _one(other, tenant_id, CreateTransfer("fund", "source", "wallet", 100))
        (spent,) = await _one(this, tenant_id, CreateTransfer("spend", "wallet", "source", 60))
        return spent, await _balance(this, tenant_id, "wallet")

    spent, wallet = _run(postgres_url, scenario)
    assert spent.status is Status.CREATED, spent
    assert wallet == 40
    assert reads.forgotten == 1


@pytest.mark.parametrize(
    "funds",
    [
        pytest.param(20, id="the repeat collides with the stored transfer"),
        pytest.param(10, id="the repeat, refused for want of funds, writes nothing"),
    ],
)
def test_a_create_repeating_a_stored_id_answers_the_stored_transfer(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, funds: int
) -> None:
    """From memory no transfer is taken to exist. A repeat decided as new either
    collides with the stored transfer as it is inserted, or, if the wallet it
    emptied makes it a refusal, writes nothing that could collide: then the
    check itself finds the stored transfer. Either way the batch runs again
    with its read, which finds it."""
    reads = Reads(monkeypatch)

    async def scenario(this: pg.PostgresStore, _: pg.PostgresStore, tenant_id: str) -> Any:
        await _accounts(this, tenant_id)
        await _one(this, tenant_id, CreateTransfer("fund", "source", "wallet", funds))
        await _one(this, tenant_id, CreateTransfer("once", "wallet", "source", 10))
        (repeat,) = await _one(this, tenant_id, CreateTransfer("once", "wallet", "source", 10))
        return repeat, await _balance(this, tenant_id, "wallet")

    repeat, wallet = _run(postgres_url, scenario)
    assert repeat.status is Status.EXISTS, repeat
    assert wallet == funds - 10
    assert reads.forgotten == 1


def test_two_processes_on_the_same_accounts_lose_nothing_and_never_wait_in_a_cycle(
    postgres_url: str,
) -> None:
    """Both stores move money back and forth between the same three accounts at
    once, each sometimes from memory and sometimes read. Every transfer that was
    answered created is in the balances, and the total is still zero."""
    names = ("a", "b", "c")
    rounds = 60
    offsets = {"x": 1, "y": 2}  # each process its own pattern of pairs

    async def scenario(this: pg.PostgresStore, other: pg.PostgresStore, tenant_id: str) -> Any:
        await _one(this, tenant_id, *(CreateAccount(n, "USD") for n in names))

        async def mover(store: pg.PostgresStore, who: str) -> int:
            moved = 0
            for i in range(rounds):
                debit, credit = names[i % 3], names[(i + offsets[who]) % 3]
                (done,) = await _one(
                    store, tenant_id, CreateTransfer(f"{who}{i}", debit, credit, i + 1)
                )
                assert done.status is Status.CREATED, done
                moved += 1
            return moved

        moved = await asyncio.wait_for(
            asyncio.gather(mover(this, "x"), mover(other, "y")), timeout=60
        )
        balances = {n: await _balance(this, tenant_id, n) for n in names}
        expected = dict.fromkeys(names, 0)
        for offset in offsets.values():
            for i in range(rounds):
                expected[names[i % 3]] -= i + 1
                expected[names[(i + offset) % 3]] += i + 1
        return moved, balances, expected

    moved, balances, expected = _run(postgres_url, scenario)
    assert moved == [rounds, rounds]
    assert balances == expected
    assert sum(balances.values()) == 0

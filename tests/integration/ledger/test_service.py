"""The ledger's use cases driven directly, with no HTTP, on SQLite and PostgreSQL.

What REST, gRPC, GraphQL and the CLI all call: commands in, domain results
out. The HTTP behaviour of the same rules is in tests/api.
"""

from __future__ import annotations

import pytest

from tally.core import Account, Code, Status, Transfer, TransferStatus, UpdateAccount
from tally.errors import IdempotencyKeyReused, NotFound
from tally.ledger import WriteContext, commands
from tally.ledger.idempotency import Claim
from tally.services import Services
from tally.storage import TransferFilter
from tally.storage.records import StoredResponse
from tests.conftest import create_tenant
from tests.integration.conftest import run_services


async def _fund(services: Services, tenant: str, amount: int) -> None:
    """A debit-normal bank account and a wallet that may not overdraw, funded."""
    ledger = services.ledger
    await ledger.create_account(
        tenant, commands.create_account(id="bank", currency="USD", normal_balance="debit")
    )
    await ledger.create_account(
        tenant,
        commands.create_account(id="alice", currency="USD", debits_must_not_exceed_credits=True),
    )
    await ledger.create_account(tenant, commands.create_account(id="bob", currency="USD"))
    funded = await ledger.create_transfer(
        tenant,
        commands.create_transfer(debit_account_id="bank", credit_account_id="alice", amount=amount),
    )
    assert funded.outcomes[0].status is Status.CREATED


def test_a_transfer_moves_money_and_its_events_say_so(database_url: str) -> None:
    tenant, _ = create_tenant(database_url)

    async def scenario(services: Services) -> None:
        await _fund(services, tenant, 1_000)
        alice = await services.ledger.get_account(tenant, "alice")
        assert isinstance(alice, Account)
        assert (alice.credits_posted, alice.balance.available) == (1_000, 1_000)
        page = await services.ledger.list_events(tenant, after=0, limit=10, cursor=None)
        assert [e.type for e in page.items] == [
            "account.created",
            "account.created",
            "account.created",
            "transfer.created",
        ]
        assert [e.sequence for e in page.items] == [1, 2, 3, 4]

    run_services(database_url, scenario)


def test_an_overdraft_is_refused_and_changes_nothing(database_url: str) -> None:
    tenant, _ = create_tenant(database_url)

    async def scenario(services: Services) -> None:
        await _fund(services, tenant, 100)
        spend = commands.create_transfer(
            debit_account_id="alice", credit_account_id="bob", amount=101
        )
        written = await services.ledger.create_transfer(tenant, spend)
        (outcome,) = written.outcomes
        assert outcome.code is Code.EXCEEDS_CREDITS
        assert "alice" in outcome.detail
        alice = await services.ledger.get_account(tenant, "alice")
        assert alice.debits_posted == 0
        with pytest.raises(NotFound):
            await services.ledger.get_transfer(tenant, spend.id)

    run_services(database_url, scenario)


def test_a_hold_is_posted_in_part_and_then_cannot_be_voided(database_url: str) -> None:
    tenant, _ = create_tenant(database_url)

    async def scenario(services: Services) -> None:
        ledger = services.ledger
        await _fund(services, tenant, 100)
        hold = commands.create_transfer(
            debit_account_id="alice", credit_account_id="bob", amount=60, pending=True
        )
        await ledger.create_transfer(tenant, hold)
        assert (await ledger.get_account(tenant, "alice")).balance.available == 40
        posted = await ledger.post_pending(tenant, commands.post_pending(hold.id, amount=25))
        assert posted.outcomes[0].status is Status.CREATED
        voided = await ledger.void_pending(tenant, commands.void_pending(hold.id))
        assert voided.outcomes[0].code is Code.PENDING_TRANSFER_ALREADY_POSTED
        alice = await ledger.get_account(tenant, "alice")
        assert (alice.debits_pending, alice.debits_posted, alice.balance.available) == (0, 25, 75)
        original = await ledger.get_transfer(tenant, hold.id)
        assert isinstance(original, Transfer) and original.status is TransferStatus.POSTED

    run_services(database_url, scenario)


def test_an_atomic_batch_applies_all_of_it_or_none(database_url: str) -> None:
    tenant, _ = create_tenant(database_url)

    async def scenario(services: Services) -> None:
        ledger = services.ledger
        await _fund(services, tenant, 50)

        def pay(amount: int) -> object:
            return commands.create_transfer(
                debit_account_id="alice", credit_account_id="bob", amount=amount
            )

        failed = await ledger.create_batch(tenant, [pay(30), pay(30)], atomic=True)  # type: ignore[list-item]
        assert [o.code for o in failed.outcomes] == [Code.LINKED_EVENT_FAILED, Code.EXCEEDS_CREDITS]
        assert (await ledger.get_account(tenant, "bob")).credits_posted == 0
        done = await ledger.create_batch(tenant, [pay(20), pay(30)], atomic=True)  # type: ignore[list-item]
        assert all(o.ok for o in done.outcomes)
        assert (await ledger.get_account(tenant, "bob")).credits_posted == 50

    run_services(database_url, scenario)


def test_a_keyed_write_runs_once_and_its_answer_is_replayed(database_url: str) -> None:
    tenant, _ = create_tenant(database_url)
    runs: list[int] = []

    def answer(outcomes: list[object]) -> StoredResponse:
        runs.append(1)
        return StoredResponse(201, b"first answer", ())

    async def scenario(services: Services) -> None:
        ledger = services.ledger
        await _fund(services, tenant, 10)
        ctx = WriteContext(answer=answer, claim=Claim("pay-1", "fingerprint-1"))
        pay = commands.create_transfer(debit_account_id="alice", credit_account_id="bob", amount=4)
        first = await ledger.create_transfer(tenant, pay, ctx)
        # A retry builds its command anew (a new server id): the key decides.
        again = commands.create_transfer(
            debit_account_id="alice", credit_account_id="bob", amount=4
        )
        second = await ledger.create_transfer(tenant, again, ctx)
        assert (first.replayed, second.replayed) == (False, True)
        assert first.answer == second.answer and second.outcomes == []
        assert (await ledger.get_account(tenant, "bob")).credits_posted == 4
        other = WriteContext(answer=answer, claim=Claim("pay-1", "another request"))
        with pytest.raises(IdempotencyKeyReused):
            await ledger.create_transfer(tenant, again, other)

    run_services(database_url, scenario)
    assert runs == [1]


def test_pages_walk_every_transfer_once_and_a_closed_account_takes_none(
    database_url: str,
) -> None:
    tenant, _ = create_tenant(database_url)

    async def scenario(services: Services) -> None:
        ledger = services.ledger
        await _fund(services, tenant, 100)
        for _ in range(5):
            await ledger.create_transfer(
                tenant,
                commands.create_transfer(
                    debit_account_id="alice", credit_account_id="bob", amount=1
                ),
            )
        seen, cursor = [], None
        while True:
            page = await ledger.list_transfers(
                tenant, TransferFilter(account_id="bob"), limit=2, cursor=cursor
            )
            seen += [t.id for t in page.items]
            if not page.has_more:
                break
            cursor = page.next_cursor
        assert len(seen) == len(set(seen)) == 5
        await ledger.update_account(tenant, UpdateAccount("bob", close=True))
        refused = await ledger.create_transfer(
            tenant,
            commands.create_transfer(debit_account_id="alice", credit_account_id="bob", amount=1),
        )
        assert refused.outcomes[0].code is Code.CREDIT_ACCOUNT_CLOSED

    run_services(database_url, scenario)


def test_the_batched_reads_answer_per_account_and_never_across_tenants(database_url: str) -> None:
    """What GraphQL's dataloaders call: many accounts' objects, newest transfers and
    first balance pages, each in one statement, each within the one tenant."""
    tenant, _ = create_tenant(database_url)
    other, _ = create_tenant(database_url, "other")

    async def scenario(services: Services) -> None:
        await _fund(services, tenant, 1_000)
        await _fund(services, other, 50)
        ledger = services.ledger
        for amount in (1, 2, 3):
            await ledger.create_transfer(
                tenant,
                commands.create_transfer(
                    debit_account_id="alice", credit_account_id="bob", amount=amount
                ),
            )
        found = await ledger.get_accounts(tenant, ["alice", "bob", "nowhere", "alice"])
        assert sorted(found) == ["alice", "bob"]
        assert found["alice"].credits_posted == 1_000  # tenant's, not other's 50
        last = await ledger.last_transfers(tenant, ["alice", "bob", "bank", "nowhere"], 2)
        assert [t.amount for t in last["alice"]] == [3, 2]
        assert [t.amount for t in last["bob"]] == [3, 2]
        assert [t.amount for t in last["bank"]] == [1_000]
        assert last["nowhere"] == []
        rest = await ledger.list_transfers(
            tenant, TransferFilter(account_id="alice", descending=True), limit=2, cursor=None
        )
        assert [t.id for t in last["alice"]] == [t.id for t in rest.items]
        for size in (2, 10):
            pages = await ledger.first_balances(tenant, ["alice", "bob"], size)
            for name in ("alice", "bob"):
                account = await ledger.get_account(tenant, name)
                history = await ledger.balance_history(tenant, account, limit=size, cursor=None)
                assert pages[name] == history
                assert pages[name].has_more is (size == 2)
        theirs = await ledger.last_transfers(other, ["alice", "bob"], 10)
        assert [t.amount for t in theirs["alice"]] == [50]
        assert theirs["bob"] == []

    run_services(database_url, scenario)

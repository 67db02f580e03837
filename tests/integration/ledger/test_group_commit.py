"""Group commit: after a transaction that answered several requests, the writer
waits a bounded moment for their clients' next ones (ledger/writer.py).

The wait is bounded by how long the last transaction took, a few milliseconds
on a test database: ``SlowStore`` (the real store, each transaction held a
little longer first) makes that long enough to observe."""

from __future__ import annotations

import asyncio
import time

from tally.core import CreateAccount, Status
from tally.ledger.transaction import JobResult
from tally.ledger.writer import GATHER_FROM_REQUESTS, IDLE_SECONDS, Writer
from tally.storage.unit_of_work import Steps, T
from tests.conftest import create_tenant
from tests.integration.ledger.test_writer import CountingStore, run

SEVERAL = GATHER_FROM_REQUESTS + 1
# How long each of SlowStore's transactions takes, at least.
TRANSACTION_SECONDS = 0.3


class SlowStore(CountingStore):
    """The real store, counting its transactions, each held TRANSACTION_SECONDS
    before it starts (a spy with a delay, not a stand-in), and recording when
    each began and ended on the loop's clock, the writer's own."""

    def __init__(self, database_url: str) -> None:
        super().__init__(database_url)
        self.spans: list[tuple[float, float]] = []

    async def transact(self, steps: Steps[T]) -> T:
        loop = asyncio.get_running_loop()
        began = loop.time()
        await asyncio.sleep(TRANSACTION_SECONDS)
        try:
            return await super().transact(steps)
        finally:
            self.spans.append((began, loop.time()))


async def _first_batch(writer: Writer, tenant_id: str, prefix: str) -> None:
    """SEVERAL requests queued before the writer starts: one transaction answers all."""
    pending = [
        asyncio.ensure_future(writer.submit(tenant_id, [CreateAccount(f"{prefix}{i}", "USD")]))
        for i in range(SEVERAL)
    ]
    await asyncio.sleep(0)
    writer.start()
    await asyncio.gather(*pending)


def _created(results: list[JobResult]) -> bool:
    return all(r.outcomes[0].status is Status.CREATED for r in results)


def test_the_next_requests_after_a_shared_transaction_are_gathered_into_one(
    database_url: str,
) -> None:
    tenant_id, _ = create_tenant(database_url)

    async def scenario() -> tuple[int, float, list[JobResult]]:
        store = SlowStore(database_url)
        await store.inner.open()
        writer = Writer(store, queue_commands_max=100, batch_commands_max=100, gather_seconds=5.0)  # type: ignore[arg-type]
        await _first_batch(writer, tenant_id, "first")
        # The clients come back one after another, as they would over the network:
        # without the wait the first would go alone and the rest wait for it.
        started = time.monotonic()
        pending = []
        for i in range(SEVERAL):
            pending.append(
                asyncio.ensure_future(writer.submit(tenant_id, [CreateAccount(f"next{i}", "USD")]))
            )
            await asyncio.sleep(0.01)
        results = await asyncio.gather(*pending)
        elapsed = time.monotonic() - started
        await writer.stop()
        await store.inner.close()
        return store.transactions, elapsed, results

    transactions, elapsed, results = run(scenario())  # type: ignore[misc]
    assert transactions == 2
    assert _created(results)
    # Woken by the last of them, then one transaction.
    assert elapsed < TRANSACTION_SECONDS + 2.0


def test_a_lone_client_never_waits(database_url: str) -> None:
    tenant_id, _ = create_tenant(database_url)

    async def scenario() -> tuple[int, float]:
        store = CountingStore(database_url)
        await store.inner.open()
        writer = Writer(store, queue_commands_max=100, batch_commands_max=100, gather_seconds=5.0)  # type: ignore[arg-type]
        writer.start()
        started = time.monotonic()
        for i in range(3):
            (outcome,) = (
                await writer.submit(tenant_id, [CreateAccount(f"lone{i}", "USD")])
            ).outcomes
            assert outcome.status is Status.CREATED
        elapsed = time.monotonic() - started
        await writer.stop()
        await store.inner.close()
        return store.transactions, elapsed

    transactions, elapsed = run(scenario())  # type: ignore[misc]
    assert transactions == 3
    assert elapsed < 4.0  # one gather window would be 5 s


def test_the_wait_lasts_no_longer_than_the_last_transaction_took(database_url: str) -> None:
    """Fewer clients come back than were answered: the writer waits as long as
    the last transaction took (not its five-second ceiling), then goes; and a
    request after the writer has gone idle is taken at once."""
    tenant_id, _ = create_tenant(database_url)

    async def scenario() -> tuple[SlowStore, Status, Status]:
        store = SlowStore(database_url)
        await store.inner.open()
        writer = Writer(store, queue_commands_max=100, batch_commands_max=100, gather_seconds=5.0)  # type: ignore[arg-type]
        await _first_batch(writer, tenant_id, "before")
        (alone,) = (await writer.submit(tenant_id, [CreateAccount("alone", "USD")])).outcomes
        await asyncio.sleep(IDLE_SECONDS + 0.2)  # the writer waits for work, idle
        later = writer.submit(tenant_id, [CreateAccount("later", "USD")])
        (after,) = (await asyncio.wait_for(later, TRANSACTION_SECONDS + 3.0)).outcomes
        await writer.stop()
        await store.inner.close()
        return store, alone.status, after.status

    store, alone, after = run(scenario())  # type: ignore[misc]
    assert alone is Status.CREATED and after is Status.CREATED
    assert store.transactions == 3
    (first_began, first_ended), (alone_began, _), _ = store.spans
    # Its own transaction, after a wait about as long as the last one took
    # (counted from its commit); far from the 5 s ceiling.
    took = first_ended - first_began
    assert 0.9 * took <= alone_began - first_ended < took + 3.0


def test_stopping_ends_a_wait_and_commits_what_is_queued(database_url: str) -> None:
    tenant_id, _ = create_tenant(database_url)

    async def scenario() -> tuple[float, Status]:
        store = SlowStore(database_url)
        await store.inner.open()
        writer = Writer(store, queue_commands_max=100, batch_commands_max=100, gather_seconds=30.0)  # type: ignore[arg-type]
        await _first_batch(writer, tenant_id, "early")
        queued = asyncio.ensure_future(writer.submit(tenant_id, [CreateAccount("late", "USD")]))
        await asyncio.sleep(0.05)  # the writer is gathering now
        started = time.monotonic()
        await writer.stop()
        (outcome,) = (await queued).outcomes
        elapsed = time.monotonic() - started
        await store.inner.close()
        return elapsed, outcome.status

    elapsed, status = run(scenario())  # type: ignore[misc]
    assert status is Status.CREATED
    assert elapsed < TRANSACTION_SECONDS + 4.0  # not the 30 s ceiling

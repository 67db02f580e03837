"""A tenant's commits wake the other processes only while one of them holds a
lease on its event wakeups (storage.wakeup_leases, migration 0009).

On PostgreSQL alone: SQLite runs in one process, whose writer wakes its own
streams. The wakeup is the write statement's NOTIFY, heard here by a session of
our own, as another process's listener would hear it. The two races the design
rests on are played out with a session that holds the tenant's row.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from tally.config import Settings
from tally.ledger import commands
from tally.services import Services
from tally.storage.notifications import EVENTS_CHANNEL
from tally.storage.wakeup_leases import LEASE_SECONDS, WakeupLeases
from tests.conftest import create_tenant
from tests.integration.conftest import audit_context, run_services

# Long enough for a NOTIFY to arrive on loopback many times over.
QUIET_SECONDS = 0.5
FOREVER_US = 2**62
FORGET = "UPDATE tenants SET events_listened_until_us = 0 WHERE id = $1"


class Listener:
    """A session LISTENing on the events channel: the wakeups of one tenant."""

    def __init__(self, tenant_id: str) -> None:
        self.tenant_id = tenant_id
        self.heard: asyncio.Queue[str] = asyncio.Queue()

    def on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        tenant_id, _, sequence = payload.rpartition(":")
        if tenant_id == self.tenant_id:  # other tests share the database
            self.heard.put_nowait(sequence)

    async def next(self) -> str:
        return await asyncio.wait_for(self.heard.get(), timeout=5.0)

    async def quiet(self) -> bool:
        await asyncio.sleep(QUIET_SECONDS)
        return self.heard.empty()


@pytest.fixture
def tenant(postgres_url: str) -> str:
    return create_tenant(postgres_url)[0]


async def _listening(url: str, listener: Listener) -> AsyncIterator[None]:
    conn = await asyncpg.connect(url)
    try:
        await conn.add_listener(EVENTS_CHANNEL, listener.on_notify)
        yield
    finally:
        await conn.close()


async def _account(services: Services, tenant: str, account_id: str) -> None:
    await services.ledger.create_account(
        tenant, commands.create_account(id=account_id, currency="USD")
    )


async def _lease_left(services: Services, tenant: str) -> float:
    """Seconds from now (PostgreSQL's clock) to the end of the tenant's lease."""
    rows = await services.store.fetch(
        "SELECT events_listened_until_us"
        " - (extract(epoch FROM statement_timestamp()) * 1000000)::bigint"
        " FROM tenants WHERE id = $1",
        tenant,
    )
    return int(rows[0][0]) / 1_000_000


async def _still_waiting(task: asyncio.Task[object]) -> bool:
    await asyncio.sleep(QUIET_SECONDS)
    return not task.done()


def test_commits_are_announced_only_while_a_lease_runs(postgres_url: str, tenant: str) -> None:
    async def scenario(services: Services) -> None:
        listener = Listener(tenant)
        async for _ in _listening(postgres_url, listener):
            await _account(services, tenant, "quiet")
            assert await listener.quiet(), "no process listens: nothing to wake"

            await services.leases.take(tenant)
            assert LEASE_SECONDS - 5 < await _lease_left(services, tenant) <= LEASE_SECONDS
            await _account(services, tenant, "heard")
            assert await listener.next() == "2"  # the tenant's last sequence

            # The lease runs out (here: is made to): the commits are quiet again.
            await services.store.fetch(FORGET, tenant)
            await _account(services, tenant, "quiet-again")
            assert await listener.quiet()

    run_services(postgres_url, scenario)


def test_a_write_waiting_on_a_lease_being_taken_sees_it_and_announces(
    postgres_url: str, tenant: str
) -> None:
    """The lease commits first: the write, which waited for the tenant's row,
    reads the lease as committed (READ COMMITTED) and notifies."""

    async def scenario(services: Services) -> None:
        listener = Listener(tenant)
        async for _ in _listening(postgres_url, listener):
            other = await asyncpg.connect(postgres_url)
            try:
                lease = other.transaction()
                await lease.start()
                await other.execute(
                    "UPDATE tenants SET events_listened_until_us = $2 WHERE id = $1",
                    tenant,
                    FOREVER_US,
                )
                write = asyncio.create_task(_account(services, tenant, "a"))
                assert await _still_waiting(write), "the write waits for the tenant's row"
                await lease.commit()
                await write
                assert await listener.next() == "1"
            finally:
                await other.close()

    run_services(postgres_url, scenario)


def test_a_stream_opened_while_a_write_holds_the_row_reads_that_write(
    postgres_url: str, tenant: str
) -> None:
    """The write holds the tenant's row first: the new feed's lease waits for it
    to commit, and only then reads where the events stand, so the write that
    did not announce itself is already counted."""

    async def scenario(services: Services) -> None:
        other = await asyncpg.connect(postgres_url)
        try:
            write = other.transaction()
            await write.start()
            await other.execute(
                "UPDATE tenants SET event_sequence = event_sequence + 1 WHERE id = $1", tenant
            )
            subscribing = asyncio.create_task(services.events.subscribe(tenant))
            assert await _still_waiting(subscribing), "the lease waits for the write"
            await write.commit()
            subscriber = await subscribing
            assert subscriber.live_from == 1
            assert await _lease_left(services, tenant) > LEASE_SECONDS - 5
            services.events.unsubscribe(subscriber)
        finally:
            await other.close()

    run_services(postgres_url, scenario)


def test_a_lease_is_renewed_once_a_third_of_it_has_passed(postgres_url: str, tenant: str) -> None:
    now = [1000.0]

    async def scenario(services: Services) -> None:
        leases = WakeupLeases(services.store, lease_seconds=30.0, clock=lambda: now[0])
        leases.follow(lambda: [tenant])
        await leases.renew()
        assert await _lease_left(services, tenant) > 25

        # Wiped in the database behind the process's back: a round within the
        # first third sends nothing (the value stays wiped); one after renews.
        await services.store.fetch(FORGET, tenant)
        now[0] += 9.9
        await leases.renew()
        assert await _lease_left(services, tenant) < 0
        now[0] += 0.2
        await leases.renew()
        assert await _lease_left(services, tenant) > 25

    run_services(postgres_url, scenario)


def test_a_lease_another_process_holds_is_read_not_rewritten(
    postgres_url: str, tenant: str
) -> None:
    async def scenario(services: Services) -> None:
        # Another process's lease, with most of it left.
        await services.store.fetch(
            "UPDATE tenants SET events_listened_until_us = $2 WHERE id = $1", tenant, FOREVER_US
        )
        left = await services.store.lease_event_wakeups(tenant, 30.0, 20.0)
        assert left > 1e9  # FOREVER_US, read back: not shortened to 30 s
        assert await _lease_left(services, tenant) > 1e9

    run_services(postgres_url, scenario)


def test_concurrent_takes_of_one_tenant_share_one_statement(postgres_url: str, tenant: str) -> None:
    async def scenario(services: Services) -> None:
        calls = 0
        lease = services.store.lease_event_wakeups

        async def counted(*args: object) -> float:
            nonlocal calls
            calls += 1
            return await lease(*args)  # type: ignore[arg-type]

        services.store.lease_event_wakeups = counted  # type: ignore[method-assign]
        leases = WakeupLeases(services.store)
        await asyncio.gather(*(leases.take(tenant) for _ in range(20)))
        assert calls == 1
        await leases.take(tenant)  # fresh: no statement at all
        assert calls == 1

    run_services(postgres_url, scenario)


def test_a_webhook_endpoint_leases_its_tenants_wakeups(postgres_url: str, tenant: str) -> None:
    async def main() -> None:
        services = Services(Settings(database_url=postgres_url, webhooks_deliver=True))
        await services.start()
        try:
            assert await _lease_left(services, tenant) < 0
            # Never called: no event is made after it.
            await services.webhooks.create(
                tenant, "https://1.1.1.1/hooks", ["*"], "", audit_context("createWebhookEndpoint")
            )
            # The dispatcher reads the new endpoint at once; the next renewal round
            # (every second) leases its tenant.
            async with asyncio.timeout(5):
                while await _lease_left(services, tenant) < 0:  # noqa: ASYNC110 (a row)
                    await asyncio.sleep(0.05)
        finally:
            await services.stop()

    asyncio.run(main())


def test_no_lease_is_taken_where_redis_carries_the_wakeups(postgres_url: str, tenant: str) -> None:
    async def main() -> None:
        settings = Settings(database_url=postgres_url, redis_url="redis://127.0.0.1:6379/0")
        services = Services(settings)
        await services.start()
        try:
            listener = Listener(tenant)
            async for _ in _listening(postgres_url, listener):
                subscriber = await services.events.subscribe(tenant)
                await _account(services, tenant, "a")
                assert await listener.quiet(), "Redis, not NOTIFY, carries this wakeup"
                assert await _lease_left(services, tenant) < 0
                services.events.unsubscribe(subscriber)
        finally:
            await services.stop()

    asyncio.run(main())

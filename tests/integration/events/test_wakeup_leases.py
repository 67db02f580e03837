"""A tenant's commits wake the other processes only while one of them holds a
lease on its event wakeups (storage.wakeup_leases, migration 0009).

On PostgreSQL alone: SQLite runs in one process, whose writer wakes its own
streams. The wakeup is the write statement's NOTIFY, heard here by a session of
our own, as another process's listener would hear it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from tally.config import Settings
from tally.events import Subscriber
from tally.ledger import commands
from tally.services import Services
from tally.storage.notifications import EVENTS_CHANNEL
from tally.storage.wakeup_leases import LEASE_SECONDS, WakeupLeases
from tests.conftest import create_tenant
from tests.integration.conftest import audit_context, run_services

# Long enough for a NOTIFY to arrive on loopback many times over.
QUIET_SECONDS = 0.5


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


async def _lease_ends_in(services: Services, tenant: str) -> float:
    """Seconds from now (PostgreSQL's clock) to the end of the tenant's lease."""
    rows = await services.store.fetch(
        "SELECT events_listened_until_us"
        " - (extract(epoch FROM statement_timestamp()) * 1000000)::bigint"
        " FROM tenants WHERE id = $1",
        tenant,
    )
    return int(rows[0][0]) / 1_000_000


def test_commits_are_announced_only_while_a_lease_runs(postgres_url: str, tenant: str) -> None:
    async def scenario(services: Services) -> None:
        listener = Listener(tenant)
        async for _ in _listening(postgres_url, listener):
            await _account(services, tenant, "quiet")
            assert await listener.quiet(), "no process listens: nothing to wake"

            await services.leases.hold([tenant])
            await _account(services, tenant, "heard")
            assert await listener.next() == "2"  # the tenant's last sequence

            # The lease runs out (here: is made to): the commits are quiet again.
            await services.store.fetch(
                "UPDATE tenants SET events_listened_until_us = 0 WHERE id = $1", tenant
            )
            await _account(services, tenant, "quiet-again")
            assert await listener.quiet()

    run_services(postgres_url, scenario)


def test_a_stream_takes_the_lease_before_it_reads_where_events_stand(
    postgres_url: str, tenant: str
) -> None:
    async def scenario(services: Services) -> None:
        listener = Listener(tenant)
        async for _ in _listening(postgres_url, listener):
            assert await _lease_ends_in(services, tenant) < 0
            subscriber: Subscriber = await services.events.subscribe(tenant)
            assert LEASE_SECONDS - 5 < await _lease_ends_in(services, tenant) <= LEASE_SECONDS
            await _account(services, tenant, "a")
            assert await listener.next() == "1"
            services.events.unsubscribe(subscriber)

    run_services(postgres_url, scenario)


def test_a_lease_is_renewed_once_a_third_of_it_has_passed_and_not_before(
    postgres_url: str, tenant: str
) -> None:
    now = [1000.0]
    forget = "UPDATE tenants SET events_listened_until_us = 0 WHERE id = $1"

    async def scenario(services: Services) -> None:
        leases = WakeupLeases(services.store, lease_seconds=30.0, clock=lambda: now[0])
        await leases.hold([tenant])
        assert await _lease_ends_in(services, tenant) > 25
        assert leases.held(tenant)

        # Wiped in the database behind the process's back: a hold within the
        # first third sends nothing (the value stays wiped), a hold after it renews.
        await services.store.fetch(forget, tenant)
        now[0] += 9.9
        await leases.hold([tenant])
        assert await _lease_ends_in(services, tenant) < 0
        now[0] += 0.2
        await leases.hold([tenant])
        assert await _lease_ends_in(services, tenant) > 25

        now[0] += 31
        assert not leases.held(tenant)

    run_services(postgres_url, scenario)


def test_a_webhook_endpoint_leases_its_tenants_wakeups_for_its_dispatcher(
    postgres_url: str, tenant: str
) -> None:
    async def main() -> None:
        services = Services(Settings(database_url=postgres_url, webhooks_deliver=True))
        await services.start()
        try:
            assert await _lease_ends_in(services, tenant) < 0
            # Never called: no event is made after it.
            await services.webhooks.create(
                tenant, "https://1.1.1.1/hooks", ["*"], "", audit_context("createWebhookEndpoint")
            )
            # The dispatcher reads the new endpoint at once and leases its tenant.
            async with asyncio.timeout(5):
                while await _lease_ends_in(services, tenant) < 0:  # noqa: ASYNC110 (a row)
                    await asyncio.sleep(0.05)
        finally:
            await services.stop()

    asyncio.run(main())

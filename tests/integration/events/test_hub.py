"""The events hub on the real databases, with no HTTP: one reader per tenant, shared
encoded events, bounded buffers, and a lost wakeup caught by the poll."""

from __future__ import annotations

import asyncio

from tally.events import EventHub, Subscriber
from tally.ledger import commands
from tally.services import Services
from tests.conftest import create_tenant
from tests.integration.conftest import run_services

WAIT_SECONDS = 5.0


async def _accounts(services: Services, tenant: str, *ids: str) -> None:
    for account_id in ids:
        await services.ledger.create_account(
            tenant, commands.create_account(id=account_id, currency="USD")
        )


def _own_hub(services: Services, *, buffer_events_max: int, poll_seconds: float) -> EventHub:
    """A hub of the test's own, which no writer wakes: only its poll reads."""
    return EventHub(
        services.ledger,
        buffer_events_max=buffer_events_max,
        heartbeat_seconds=60,
        poll_seconds=poll_seconds,
        leases=services.leases,
    )


async def _until(subscriber: Subscriber, count: int) -> list[int]:
    seen: list[int] = []
    async with asyncio.timeout(WAIT_SECONDS):
        while len(seen) < count:
            await subscriber.wait()
            subscriber.heartbeat = False
            seen += [e.sequence for e in subscriber.take()]
    return seen


def test_every_subscriber_of_a_tenant_shares_one_reader_and_one_encoding(
    database_url: str,
) -> None:
    tenant, _ = create_tenant(database_url)

    async def scenario(services: Services) -> None:
        hub = services.events
        subscribers = [await hub.subscribe(tenant) for _ in range(50)]
        reads = 0
        read_events = services.ledger.read_events

        async def counted(*args: object, **kwargs: object) -> object:
            nonlocal reads
            reads += 1
            return await read_events(*args, **kwargs)  # type: ignore[arg-type]

        services.ledger.read_events = counted  # type: ignore[method-assign]
        await _accounts(services, tenant, "a", "b")
        got = [await _until(s, 2) for s in subscribers]
        assert got == [[1, 2]] * 50
        assert reads <= 4  # one or two per commit for the process, not one per subscriber
        for s in subscribers:
            hub.unsubscribe(s)
        assert hub.subscribers == 0

    run_services(database_url, scenario)


def test_the_same_event_bytes_reach_every_subscriber(database_url: str) -> None:
    tenant, _ = create_tenant(database_url)

    async def scenario(services: Services) -> None:
        first = await services.events.subscribe(tenant)
        second = await services.events.subscribe(tenant, frozenset({"account.created"}))
        await _accounts(services, tenant, "a")
        await _until(first, 1)
        await _until(second, 1)

    # The subscribers' buffers hold the one SharedEvent object the feed encoded.
    async def shared(services: Services) -> None:
        a = await services.events.subscribe(tenant)
        b = await services.events.subscribe(tenant)
        await _accounts(services, tenant, "b")
        async with asyncio.timeout(WAIT_SECONDS):
            await a.wait()
            await b.wait()
        assert a.buffer[0] is b.buffer[0]
        assert a.buffer[0].sse.startswith(b"id: 2\nevent: account.created\ndata: {")

    run_services(database_url, scenario)
    run_services(database_url, shared)


def test_a_full_buffer_marks_the_subscriber_overflowed_and_takes_no_more(
    database_url: str,
) -> None:
    tenant, _ = create_tenant(database_url)

    async def scenario(services: Services) -> None:
        hub = _own_hub(services, buffer_events_max=2, poll_seconds=0.1)
        await hub.start()
        try:
            subscriber = await hub.subscribe(tenant)
            await _accounts(services, tenant, "a", "b", "c", "d")
            async with asyncio.timeout(WAIT_SECONDS):
                while not subscriber.overflowed:  # noqa: ASYNC110 (a flag the hub sets)
                    await asyncio.sleep(0.02)
            assert [e.sequence for e in subscriber.take()] == [1, 2]
        finally:
            await hub.stop()

    run_services(database_url, scenario)


def test_a_lost_wakeup_delays_an_event_but_the_poll_finds_it(database_url: str) -> None:
    tenant, _ = create_tenant(database_url)

    async def scenario(services: Services) -> None:
        # This hub is told of no commit at all: only its poll (0.2 s) finds them.
        hub = _own_hub(services, buffer_events_max=10, poll_seconds=0.2)
        await hub.start()
        try:
            subscriber = await hub.subscribe(tenant)
            await _accounts(services, tenant, "a", "b")
            assert await _until(subscriber, 2) == [1, 2]
        finally:
            await hub.stop()

    run_services(database_url, scenario)


def test_a_long_wait_answers_when_an_event_commits_and_not_before(database_url: str) -> None:
    tenant, _ = create_tenant(database_url)

    async def scenario(services: Services) -> None:
        hub = services.events
        assert await hub.wait_for_event(tenant, 0, 0.2) is False
        waiting = asyncio.create_task(hub.wait_for_event(tenant, 0, WAIT_SECONDS))
        await asyncio.sleep(0.1)
        assert not waiting.done()
        await _accounts(services, tenant, "a")
        assert await waiting is True
        assert await hub.wait_for_event(tenant, 0, WAIT_SECONDS) is True  # one exists now
        assert hub.subscribers == 0

    run_services(database_url, scenario)

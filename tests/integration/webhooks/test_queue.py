"""The delivery queue on the real databases: claims lease one head per endpoint
(two workers racing take it once), rows are made once per (endpoint, event)
under one id, a lease that expires is taken over, and only its owner records."""

from __future__ import annotations

import asyncio

from tally.config import Settings
from tally.ledger import commands
from tally.services import Services
from tally.webhooks import queue
from tally.webhooks.queue import Result
from tally.webhooks.repository import delivery_id
from tests.conftest import FakeClock, create_tenant
from tests.integration.conftest import audit_context, run_services
from tests.security.conftest import new_database

US = 1_000_000


async def arrange(s: Services, tenant_id: str, accounts: int) -> str:
    """An endpoint (never called: nothing runs the dispatcher here) and events."""
    created = await s.webhooks.create(
        tenant_id, "https://1.1.1.1/hooks", ["*"], "", audit_context("createWebhookEndpoint")
    )
    for _ in range(accounts):
        await s.ledger.create_account(tenant_id, commands.create_account(currency="USD"))
    return created.record.id


def test_two_workers_racing_lease_the_head_once_and_make_each_row_once(
    database_url: str,
) -> None:
    with new_database(database_url) as url:
        tenant_id, _ = create_tenant(url)

        async def scenario(s: Services) -> None:
            endpoint_id = await arrange(s, tenant_id, 3)
            now = s.clock()
            claims = await asyncio.gather(
                *(
                    queue.claim(s.store, [endpoint_id], f"w{i}", now, now + 60 * US,
                                fill_max=100, claims_max=10)
                    for i in range(4)
                )
            )  # fmt: skip
            taken = [c for found in claims for c in found]
            assert len(taken) == 1
            rows = await s.store.fetch(
                "SELECT id, event_sequence FROM webhook_deliveries WHERE endpoint_id = $1"
                " ORDER BY event_sequence",
                endpoint_id,
            )
            assert [r[0] for r in rows] == [delivery_id(endpoint_id, r[1]) for r in rows]
            assert len(rows) == 3
            assert taken[0].delivery.event_sequence == rows[0][1]  # the oldest: the head

            # Leased: nobody takes it, nor anything behind it, until the lease ends.
            later = now + 30 * US
            assert await queue.claim(s.store, [endpoint_id], "w9", later, later + US,
                                     fill_max=100, claims_max=10) == []  # fmt: skip
            expired = now + 61 * US
            (again,) = await queue.claim(
                s.store, [endpoint_id], "w9", expired, expired + 60 * US, fill_max=100,
                claims_max=10,
            )  # fmt: skip
            assert again.delivery.id == taken[0].delivery.id  # the same webhook-id

            # The first worker's late result is dropped; the owner's is written.
            done = Result("succeeded", expired, 204, None)
            late_owner = f"w{[len(c) for c in claims].index(1)}"
            assert not await queue.record(s.store, taken[0], late_owner, done, expired)
            assert await queue.record(s.store, again, "w9", done, expired)
            (next_,) = await queue.claim(s.store, [endpoint_id], "w9", expired, expired + US,
                                         fill_max=100, claims_max=10)  # fmt: skip
            assert next_.delivery.event_sequence == rows[1][1]

        run_services(url, scenario)


def test_a_worker_that_stops_heartbeating_drops_out(database_url: str) -> None:
    with new_database(database_url) as url:

        async def main() -> None:
            s = Services(Settings(database_url=url), clock=FakeClock())
            await s.store.open()
            try:
                await queue.heartbeat(s.store, "a", 100 * US)
                await queue.heartbeat(s.store, "b", 105 * US)
                assert await queue.live_workers(s.store, 95 * US) == ["a", "b"]
                assert await queue.live_workers(s.store, 101 * US) == ["b"]
                await queue.heartbeat(s.store, "a", 110 * US)  # back: the same row
                assert await queue.live_workers(s.store, 101 * US) == ["a", "b"]
                await queue.leave(s.store, "b")
                assert await queue.live_workers(s.store, 0) == ["a"]
                await queue.forget_workers(s.store, 200 * US)
                assert await queue.live_workers(s.store, 0) == []
            finally:
                await s.store.close()

        asyncio.run(main())

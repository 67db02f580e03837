"""Leases on a tenant's event wakeups: commits announce themselves only while
some process listens.

A commit with events can wake the other server processes (PostgreSQL
``NOTIFY``), so that their live streams and webhook dispatchers read at once
rather than at their next poll. The message goes to every process's listener
connection, and waking each of them, and its database backend, for every
commit of every tenant cost more than anything else a lone transfer did
(docs/performance.md). So a tenant's commits announce themselves only while a
process holds a lease on the tenant's wakeups (``tenants.events_listened_until_us``,
migration 0009): a process with a live stream of the tenant, or with a webhook
endpoint of it to deliver to.

No wakeup is lost by a lease taken while a write is in flight: the write
statement reads the lease from the tenant's row, which it updates and keeps
locked until it commits. A process taking a lease either waits for that commit
(and then reads the events it wrote) or is seen by it. A stream reads its
tenant's last event only after its lease is taken (``EventHub.subscribe``).

``WakeupLeases`` keeps one process's leases. A new feed takes its tenant's at
once (``take``); a round every second (``renew``, run by ``Services``) renews,
once a third of ``LEASE_SECONDS`` has passed, the lease of every tenant its
holders name (``follow``: the hub's feeds, the dispatcher's endpoints), one
tenant a statement. A lease any process holds wakes every process, so a lease
found long enough is left as it is. One that is not renewed runs out on its own:
the commits after it are quiet again, and a process that died leaves nothing
behind.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

from tally.errors import TallyError
from tally.storage.store import Store

log = logging.getLogger(__name__)

LEASE_SECONDS = 30.0
# How often the renewal round runs (Services starts it).
RENEW_INTERVAL_SECONDS = 1.0

Holder = Callable[[], Iterable[str]]


class WakeupLeases:
    """This process's leases on tenants' event wakeups (see the module)."""

    def __init__(
        self,
        store: Store,
        *,
        lease_seconds: float = LEASE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._lease_seconds = lease_seconds
        # A lease is renewed when less than this is left of it.
        self._renew_within = lease_seconds * 2 / 3
        self._clock = clock
        self._holders: list[Holder] = []
        # tenant -> until when (this process's monotonic clock) its lease surely
        # runs: measured from before the statement that read it, so never later
        # than the database's own end of it.
        self._until: dict[str, float] = {}
        self._taking: dict[str, asyncio.Future[None]] = {}
        self._failing = False

    def follow(self, holder: Holder) -> None:
        """Keep leased the tenants ``holder`` names each time the round asks."""
        self._holders.append(holder)

    async def take(self, tenant_id: str) -> None:
        """Make sure the tenant's commits wake this process from now on (a new
        feed, before it reads where the tenant's events stand). Those who ask
        for the same tenant at once share one statement."""
        if not self._store.announces_events or self._fresh(tenant_id, self._clock()):
            return
        taking = self._taking.get(tenant_id)
        if taking is None:
            taking = asyncio.ensure_future(self._lease(tenant_id))
            self._taking[tenant_id] = taking
            taking.add_done_callback(self._taken)
        # Shielded: a caller that gives up does not cancel the others' statement.
        await asyncio.shield(taking)

    async def renew(self) -> int:
        """One round: renew the leases of the tenants the holders name that are
        due. A tenant that fails is logged (once, until a round succeeds again);
        the others are still renewed. Returns 0: a round is never "full"."""
        if not self._store.announces_events:
            return 0
        now = self._clock()
        wanted: set[str] = set()
        for holder in self._holders:
            wanted.update(holder())
        failed: TallyError | None = None
        for tenant_id in sorted(t for t in wanted if not self._fresh(t, now)):
            try:
                await self.take(tenant_id)
            except TallyError as exc:
                failed = exc
        if failed is not None and not self._failing:
            log.warning("event wakeup leases not renewed: %s", failed.detail or failed.code)
        elif failed is None and self._failing:
            log.info("event wakeup leases renewed again")
        self._failing = failed is not None
        # What no holder names any more is forgotten (it runs out on its own).
        self._until = {t: until for t, until in self._until.items() if t in wanted}
        return 0

    def _taken(self, taking: asyncio.Future[None]) -> None:
        for tenant_id, pending in list(self._taking.items()):
            if pending is taking:
                del self._taking[tenant_id]
        if not taking.cancelled():
            taking.exception()  # retrieved: every caller that still waits has it raised

    def _fresh(self, tenant_id: str, now: float) -> bool:
        return self._until.get(tenant_id, now) - now > self._renew_within

    async def _lease(self, tenant_id: str) -> None:
        started = self._clock()
        left = await self._store.lease_event_wakeups(
            tenant_id, self._lease_seconds, self._renew_within
        )
        self._until[tenant_id] = started + left

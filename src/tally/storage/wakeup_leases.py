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

``WakeupLeases`` keeps one process's leases. It takes a lease for
``LEASE_SECONDS`` and renews it once a third of that has passed, from the loops
that need it (a feed's, the dispatcher's), which come round far more often. A
lease that is not renewed runs out on its own: the commits after it are quiet
again, and a process that died leaves nothing behind.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from tally.storage.store import Store

LEASE_SECONDS = 30.0


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
        self._renew_within = lease_seconds * 2 / 3
        self._clock = clock
        # tenant -> until when (this process's monotonic clock) its lease surely
        # runs: measured from before the statement that took it, so never later
        # than the database's own end of it.
        self._until: dict[str, float] = {}
        self._swept_at = clock()

    async def hold(self, tenant_ids: Iterable[str]) -> None:
        """Make sure each tenant's commits wake this process for a while yet: take
        or renew the leases that are missing or running out. Cheap when none is:
        call it as often as the loop that needs them comes round."""
        now = self._clock()
        for tenant_id in sorted(set(tenant_ids)):
            if self._until.get(tenant_id, now) - now > self._renew_within:
                continue
            await self._store.lease_event_wakeups(tenant_id, self._lease_seconds)
            self._until[tenant_id] = now + self._lease_seconds
        if now - self._swept_at > self._lease_seconds:
            # Forget the leases that have run out, once a lease's length.
            self._swept_at = now
            self._until = {t: until for t, until in self._until.items() if until > now}

    def held(self, tenant_id: str) -> bool:
        return self._until.get(tenant_id, 0.0) > self._clock()

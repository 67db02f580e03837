"""The delivery loop of one server process.

Each round (every ``webhooks_poll_interval_seconds``, at once after a full one,
and after a commit in any process by a tenant with an enabled endpoint):

1. heartbeat into ``webhook_workers`` (every ``webhooks_heartbeat_seconds``) and
   read the live workers: those heard from within ``webhooks_worker_ttl_seconds``;
2. take this worker's share of the enabled endpoints (tally.webhooks.ring), read
   at most once a poll interval, or at once after a change in this process;
3. claim the due head delivery of each of them that has none in flight here
   (tally.webhooks.queue: the lease is in the database);
4. attempt each claimed delivery in a task of its own, at most
   ``webhooks_concurrency_max`` at a time, and record the result.

An endpoint has at most one attempt in flight anywhere, and its next delivery
waits until the previous one succeeded or was dead-lettered: per-endpoint order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec
from prometheus_client import Counter, Histogram

from tally.ledger import Ledger
from tally.storage import Store
from tally.storage.wakeup_leases import WakeupLeases
from tally.support.clock import Clock, format_time
from tally.support.loops import start_rounds
from tally.webhooks import queue, ring
from tally.webhooks.queue import Claim, Result
from tally.webhooks.schedule import Backoff, parse_retry_after
from tally.webhooks.signing import signed_headers

if TYPE_CHECKING:
    # httpx (and the rich and click its package imports) is loaded by the first
    # attempt, not with the server: about 20 MiB a process with no webhook to
    # deliver need not carry (docs/events.md, C10k).
    import httpx

    from tally.webhooks.delivery import Attempt

log = logging.getLogger(__name__)
US = 1_000_000
ATTEMPTS = Counter(
    "tally_webhook_attempts",
    "Webhook delivery attempts: the attempt's outcome, and the delivery's state after it.",
    ("outcome", "delivery_status"),
)
ATTEMPT_SECONDS = Histogram(
    "tally_webhook_attempt_seconds",
    "Time of one webhook delivery attempt.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


class EventBody(msgspec.Struct):
    """An event as ``GET /v1/events`` lists it (the same fields, in the same order)."""

    sequence: int
    type: str
    created_at: str
    data: msgspec.Raw


@dataclass(frozen=True, slots=True)
class DispatchSettings:
    allow_loopback: bool
    poll_interval_seconds: float
    attempt_timeout_seconds: float
    lease_margin_seconds: float
    concurrency_max: int
    fill_batch_max: int
    heartbeat_seconds: float
    worker_ttl_seconds: float
    backoff: Backoff


def new_worker_id() -> str:
    """Host and pid, so an operator (or a test) can tell which process it is."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class Dispatcher:
    def __init__(
        self,
        store: Store,
        ledger: Ledger,
        s: DispatchSettings,
        *,
        clock: Clock,
        leases: WakeupLeases,
    ) -> None:
        self._store = store
        self._ledger = ledger
        self._s = s
        self._clock = clock
        self.worker_id = new_worker_id()
        self.workers: list[str] = [self.worker_id]
        self._next_heartbeat_us = 0
        self._in_flight: dict[str, asyncio.Task[None]] = {}  # by endpoint id
        self._endpoint_ids: list[str] = []
        self._endpoint_tenants: dict[str, str] = {}  # endpoint -> its tenant
        self._tenants: frozenset[str] = frozenset()  # those endpoints' tenants
        # The commits of every tenant with an enabled endpoint wake the
        # dispatchers, from any process (tally.storage.wakeup_leases).
        leases.follow(lambda: self._endpoint_tenants.values())
        self._endpoints_read_until_us = 0  # read them again from then on
        self._client: httpx.AsyncClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def start(self) -> None:
        self._task = start_rounds(
            "webhooks",
            self.round,
            interval_seconds=self._s.poll_interval_seconds,
            batch_max=self._s.concurrency_max,
            wake=self._wake,
        )

    def wake(self) -> None:
        """Run the next round now rather than at the end of the poll interval: an
        event committed (the events hub can call this), or an attempt finished, so
        that the endpoint's next delivery need not wait for the poll."""
        self._wake.set()

    def wake_for(self, tenant_ids: Iterable[str]) -> None:
        """These tenants committed (here, or in another process that said so): run
        the next round now if one of them has an enabled endpoint, as the list was
        last read. A round for any other tenant's commit would find nothing new to
        deliver, and waking for every commit cost each lone write a round and its
        timer (docs/performance.md). The list is the one the round itself uses, at
        most a poll interval old: an endpoint another process has just created is
        seen by the next poll, as it was when every commit woke the round."""
        if not self._tenants.isdisjoint(tenant_ids):
            self.wake()

    def endpoints_changed(self) -> None:
        """An endpoint was created, enabled or disabled here: read them afresh
        next round, and run it now. (Another process's change is seen within a
        poll interval.)"""
        self._endpoints_read_until_us = 0
        self.wake()

    async def stop(self) -> None:
        """Stop attempting; an attempt cut short keeps its lease, which expires,
        and is made again (same webhook-id) by whichever worker then owns it."""
        tasks = [t for t in (self._task, *self._in_flight.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._in_flight.clear()
        with contextlib.suppress(Exception):
            await queue.leave(self._store, self.worker_id)
        if self._client is not None:
            await self._client.aclose()

    async def round(self) -> int:
        """One round; returns how many deliveries it started."""
        now_us = self._clock()
        if now_us >= self._next_heartbeat_us:
            await self._heartbeat(now_us)
        room = self._s.concurrency_max - len(self._in_flight)
        if room <= 0:
            return 0
        endpoint_ids = await self._enabled_endpoints(now_us)
        mine = [
            e
            for e in ring.share(endpoint_ids, self.workers, self.worker_id)
            if e not in self._in_flight
        ]
        if not mine:
            return 0
        lease_us = int((self._s.attempt_timeout_seconds + self._s.lease_margin_seconds) * US)
        claims = await queue.claim(
            self._store, mine, self.worker_id, now_us, now_us + lease_us,
            fill_max=self._s.fill_batch_max, claims_max=room,
        )  # fmt: skip
        for c in claims:
            self._in_flight[c.endpoint.id] = asyncio.create_task(
                self._deliver(c), name=f"tally-webhook-{c.delivery.id}"
            )
        return len(claims)

    async def _enabled_endpoints(self, now_us: int) -> list[str]:
        """The enabled endpoints, as read at most one poll interval ago.

        A round runs after every commit in any process, and on a busy ledger
        that read was a query per commit, in every process, even with no
        endpoint at all (3 % of a server's CPU under load: docs/performance.md).
        A disabled endpoint still in this list costs nothing: ``queue.claim``
        takes only enabled ones."""
        if now_us >= self._endpoints_read_until_us:
            endpoints = await queue.enabled_endpoints(self._store)
            self._endpoint_ids = [e for e, _ in endpoints]
            self._endpoint_tenants = dict(endpoints)
            self._tenants = frozenset(self._endpoint_tenants.values())
            self._endpoints_read_until_us = now_us + int(self._s.poll_interval_seconds * US)
        return self._endpoint_ids

    async def _heartbeat(self, now_us: int) -> None:
        await queue.heartbeat(self._store, self.worker_id, now_us)
        ttl_us = int(self._s.worker_ttl_seconds * US)
        live = await queue.live_workers(self._store, now_us - ttl_us)
        self.workers = sorted({*live, self.worker_id})
        # Rows of workers gone for long are only clutter: the TTL already ignores them.
        await queue.forget_workers(self._store, now_us - 10 * ttl_us)
        self._next_heartbeat_us = now_us + int(self._s.heartbeat_seconds * US)

    async def _deliver(self, c: Claim) -> None:
        try:
            result = await self._attempt(c)
            await queue.record(self._store, c, self.worker_id, result, self._clock())
        except asyncio.CancelledError:
            raise
        except Exception:
            # The lease expires and the delivery is attempted again.
            log.exception("webhook delivery %s failed", c.delivery.id)
        finally:
            self._in_flight.pop(c.endpoint.id, None)
            self.wake()

    async def _attempt(self, c: Claim) -> Result:
        body = await self._body(c)
        now_us = self._clock()
        if body is None:  # cannot happen while events are never deleted
            return Result("failed", now_us, None, "the event no longer exists")
        headers = signed_headers(c.endpoint.secrets_at(now_us), c.delivery.id, now_us // US, body)
        from tally.webhooks.delivery import attempt, new_client

        if self._client is None:
            self._client = new_client()
        started = time.perf_counter()
        done = await attempt(
            self._client, c.endpoint.url, body, headers,
            allow_loopback=self._s.allow_loopback,
            timeout_seconds=self._s.attempt_timeout_seconds,
        )  # fmt: skip
        ATTEMPT_SECONDS.observe(time.perf_counter() - started)
        result = decide(done, c.delivery.attempts + 1, self._clock(), self._s.backoff)
        ATTEMPTS.labels("succeeded" if done.succeeded else "failed", result.status).inc()
        return result

    async def _body(self, c: Claim) -> bytes | None:
        sequence = c.delivery.event_sequence
        page = await self._ledger.list_events(
            c.delivery.tenant_id, after=sequence - 1, limit=1, cursor=None
        )
        if not page.items or page.items[0].sequence != sequence:
            return None
        e = page.items[0]
        data = msgspec.Raw(e.data.encode())
        return msgspec.json.encode(
            EventBody(e.sequence, e.type, format_time(e.created_at_us), data)
        )


def decide(done: Attempt, attempts: int, now_us: int, backoff: Backoff) -> Result:
    """The delivery's next state after its ``attempts``-th attempt."""
    if done.succeeded:
        return Result("succeeded", now_us, done.status_code, None)
    if done.status_code == 410:
        error = "HTTP 410: the receiver is gone; the endpoint was disabled"
        return Result("failed", now_us, 410, error, disable_endpoint=True)
    if backoff.gives_up(attempts):
        return Result("failed", now_us, done.status_code, done.error)
    retry_after = parse_retry_after(done.retry_after, now_us / US)
    if retry_after is not None:
        delay = backoff.retry_after_seconds(retry_after)
    else:
        delay = backoff.delay_seconds(attempts)
    return Result("pending", now_us + int(delay * US), done.status_code, done.error)

"""Wakeups between processes through Redis pub/sub, when ``TALLY_REDIS_URL`` is set.

Each process publishes, after a commit, the tenants whose requests changed
something, on ``CHANNEL``; each process subscribes and wakes its feeds. Redis
carries only the wakeup: the events table stays the source of truth, so a
message lost to a Redis outage delays events until the feeds' next poll, and a
resubscription wakes every feed at once (``on_reset``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger(__name__)

CHANNEL = "tally:events"
RECONNECT_SECONDS_MAX = 5.0
# Tenants waiting to be published, at most; beyond it the publisher sends what it
# has and starts again (a wakeup too many is harmless, one too few is late).
PENDING_TENANTS_MAX = 10_000


class RedisWakeups:
    def __init__(
        self,
        redis_url: str,
        *,
        timeout_seconds: float,
        on_message: Callable[[str], None],
        on_reset: Callable[[], None],
    ) -> None:
        import redis.asyncio as redis

        self._client: Any = redis.Redis.from_url(
            redis_url, socket_timeout=None, socket_connect_timeout=timeout_seconds
        )
        self._timeout = timeout_seconds
        self._on_message = on_message
        self._on_reset = on_reset
        self._pending: set[str] = set()
        self._ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._listen(), name="tally-events-redis-listener"),
            asyncio.create_task(self._publish(), name="tally-events-redis-publisher"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self._client.aclose()

    def publish(self, tenant_ids: Iterable[str]) -> None:
        """Announce these tenants (soon, from the publisher task: never blocks)."""
        if len(self._pending) < PENDING_TENANTS_MAX:
            self._pending.update(tenant_ids)
        self._ready.set()

    async def _publish(self) -> None:
        import redis.exceptions

        while True:
            await self._ready.wait()
            self._ready.clear()
            tenants, self._pending = self._pending, set()
            try:
                async with asyncio.timeout(self._timeout):
                    for tenant_id in sorted(tenants):
                        await self._client.publish(CHANNEL, tenant_id)
            except (redis.exceptions.RedisError, OSError, TimeoutError) as exc:
                # The feeds' poll finds the events anyway, a little later.
                log.warning("events wakeup not published to redis: %s", exc)

    async def _listen(self) -> None:
        import redis.exceptions

        delay = 0.1
        while True:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(CHANNEL)
                self._on_reset()  # subscribed again: what was missed is read now
                delay = 0.1
                async for message in pubsub.listen():
                    data = message.get("data")
                    if isinstance(data, bytes):
                        self._on_message(data.decode())
            except (redis.exceptions.RedisError, OSError) as exc:
                log.warning("events wakeups from redis lost: %s", exc)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_SECONDS_MAX)

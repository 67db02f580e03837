"""Token buckets, in Redis when several processes must share them.

A bucket holds up to ``burst`` tokens and refills at ``per_second``; a request
takes one, and with none left it is answered 429 with ``Retry-After`` (when the
next token arrives). Every limited response says where the caller stands, in
the IETF draft's structured fields (draft-ietf-httpapi-ratelimit-headers):
``RateLimit-Policy: "api";q=2000;w=2`` (the burst, and the seconds an empty
bucket takes to fill) and ``RateLimit: "api";r=1999;t=0`` (tokens left, and
seconds until one is available).

With ``TALLY_REDIS_URL`` the bucket is one Redis hash, updated by a Lua script
(atomic, on Redis's clock), so the limit holds across every process and
machine. A Redis round trip per request cost about as much CPU as the rest of a
request (docs/performance.md), so a busy bucket is **leased**: a process takes a
block of tokens at once (``lease_size``: 50 ms of the bucket's refill, at most a
twentieth of its burst) and spends them locally for at most ``LEASE_SECONDS``,
one Redis call per block; requests that find the lease empty while it is being
renewed wait for that one call. Tokens a lease did not spend in time are lost,
never given twice: the limit can only come out stricter, by at most a block per
process. A bucket too small or too slow for a block of two (the login limits)
takes one token per request, exactly as before.

Without Redis, or while Redis does not answer, each process keeps its own
buckets: the limit then holds per process, which is documented rather than
hidden, and Redis trouble never takes the ledger down with it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from tally.errors import RateLimited

log = logging.getLogger(__name__)

MEMORY_BUCKETS_MAX = 100_000  # least recently used buckets go first
KEY_PREFIX = "tally:rl:"

LEASE_SECONDS = 0.05
LEASE_SHARE_MAX = 20  # a lease holds at most 1/20 of the bucket's burst
LEASES_MAX = 100_000

# KEYS[1] the bucket; ARGV burst, per_second, tokens wanted. Takes as many of the
# tokens wanted as there are whole tokens. Returns {taken, tokens left * 1000}.
_LUA = """
local burst = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local wanted = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1]) or burst
local ts = tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local taken = math.min(wanted, math.floor(tokens))
tokens = tokens - taken
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {taken, math.floor(tokens * 1000)}
"""


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    burst: int
    per_second: float

    def header(self) -> str:
        return f'"{self.name}";q={self.burst};w={math.ceil(self.burst / self.per_second)}'

    @property
    def lease_size(self) -> int:
        """Tokens a process takes from the shared bucket at once (1: no lease)."""
        return max(1, min(int(self.per_second * LEASE_SECONDS), self.burst // LEASE_SHARE_MAX))


@dataclass(slots=True)
class _Lease:
    tokens: int  # still to spend here
    expires_at: float  # monotonic
    shared_left: float  # what the shared bucket had left when it was granted


@dataclass(frozen=True, slots=True)
class Take:
    policy: Policy
    allowed: bool
    tokens: float
    taken: int = 1  # tokens taken from the bucket (a lease takes several)

    @property
    def wait_seconds(self) -> int:
        """Seconds until the next token: what Retry-After and ``t`` say."""
        if self.tokens >= 1:
            return 0
        return max(1, math.ceil((1 - self.tokens) / self.policy.per_second))

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Policy": self.policy.header(),
            "RateLimit": f'"{self.policy.name}";r={int(self.tokens)};t={self.wait_seconds}',
        }

    def check(self, what: str) -> dict[str, str]:
        """The headers to add, or RateLimited when no token was left."""
        headers = self.headers()
        if not self.allowed:
            raise RateLimited(
                f"Too many requests {what}; retry in {self.wait_seconds} s.",
                retry_after_seconds=self.wait_seconds,
                metadata=headers,
            )
        return headers


class MemoryBuckets:
    """One process's buckets, on the monotonic clock."""

    def __init__(self, buckets_max: int = MEMORY_BUCKETS_MAX) -> None:
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._buckets_max = buckets_max

    def take(self, key: str, policy: Policy) -> Take:
        now = time.monotonic()
        tokens, updated = self._buckets.get(key, (float(policy.burst), now))
        tokens = min(float(policy.burst), tokens + (now - updated) * policy.per_second)
        allowed = tokens >= 1
        if allowed:
            tokens -= 1
        self._buckets[key] = (tokens, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self._buckets_max:
            self._buckets.popitem(last=False)
        return Take(policy, allowed, tokens)


class Limiter:
    def __init__(self, redis_url: str | None, *, timeout_seconds: float) -> None:
        self._memory = MemoryBuckets()
        self._redis: Any = None
        self._script: Any = None
        if redis_url:
            import redis.asyncio as redis

            self._redis = redis.Redis.from_url(
                redis_url,
                socket_timeout=timeout_seconds,
                socket_connect_timeout=timeout_seconds,
            )
            self._script = self._redis.register_script(_LUA)
        self._redis_failing_since: float | None = None
        self._leases: OrderedDict[str, _Lease] = OrderedDict()
        self._renewing: dict[str, asyncio.Future[None]] = {}

    @property
    def shared(self) -> bool:
        return self._redis is not None

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()

    async def take(self, key: str, policy: Policy) -> Take:
        if self._script is None:
            return self._memory.take(key, policy)
        name = f"{KEY_PREFIX}{policy.name}:{key}"
        size = policy.lease_size
        if size == 1:
            return await self._take_shared(name, key, policy, 1)
        while True:
            lease = self._leases.get(name)
            if lease is not None and lease.tokens >= 1 and lease.expires_at > time.monotonic():
                lease.tokens -= 1
                return Take(policy, True, lease.tokens + lease.shared_left)
            renewing = self._renewing.get(name)
            if renewing is None:
                return await self._renew(name, key, policy, size)
            # One Redis call renews the lease for every request waiting on it; each
            # renewal serves some, or is refused, so this ends.
            await asyncio.shield(renewing)

    async def _renew(self, name: str, key: str, policy: Policy, size: int) -> Take:
        done = self._renewing[name] = asyncio.get_running_loop().create_future()
        try:
            take = await self._take_shared(name, key, policy, size)
        finally:
            if self._renewing.get(name) is done:
                del self._renewing[name]
            done.set_result(None)
        if take.allowed:
            granted = take.taken - 1  # one is this request's
            self._leases[name] = _Lease(granted, time.monotonic() + LEASE_SECONDS, take.tokens)
            self._leases.move_to_end(name)
            while len(self._leases) > LEASES_MAX:
                self._leases.popitem(last=False)
            return Take(policy, True, granted + take.tokens)
        return take

    async def _take_shared(self, name: str, key: str, policy: Policy, wanted: int) -> Take:
        import redis.exceptions

        try:
            taken, tokens_milli = await self._script(
                keys=[name], args=[policy.burst, policy.per_second, wanted]
            )
        except (redis.exceptions.RedisError, OSError) as exc:
            if self._redis_failing_since is None:
                self._redis_failing_since = time.monotonic()
                log.warning("redis unavailable, rate limits are per process: %s", exc)
            return self._memory.take(key, policy)
        if self._redis_failing_since is not None:
            self._redis_failing_since = None
            log.warning("redis is back, rate limits are shared again")
        return Take(policy, int(taken) >= 1, int(tokens_milli) / 1000, taken=int(taken))

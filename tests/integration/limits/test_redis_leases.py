"""Rate-limit leases against the real Redis (limits.buckets): a busy bucket costs
one Redis call per block of tokens, never gives a token twice, and a bucket too
small for a block still takes one token per request."""

from __future__ import annotations

import asyncio
import secrets
import time

import redis

from tally.limits.buckets import KEY_PREFIX, Limiter, Policy

REDIS_URL = "redis://127.0.0.1:6379/0"


def shared_tokens(policy: Policy, key: str) -> float:
    value = redis.Redis.from_url(REDIS_URL).hget(f"{KEY_PREFIX}{policy.name}:{key}", "tokens")
    assert value is not None
    return float(value)


async def take_many(limiters: list[Limiter], key: str, policy: Policy, count: int) -> list[bool]:
    takes = await asyncio.gather(
        *(limiters[i % len(limiters)].take(key, policy) for i in range(count))
    )
    return [t.allowed for t in takes]


def test_a_busy_bucket_is_taken_in_blocks_by_one_call_at_a_time() -> None:
    policy = Policy(f"lease-{secrets.token_hex(4)}", burst=10_000, per_second=1_000)
    assert policy.lease_size == 50

    async def main() -> None:
        limiter = Limiter(REDIS_URL, timeout_seconds=1.0)
        try:
            # 120 requests at once: the first renews the lease, the others wait for
            # that one call instead of each taking a block of their own.
            allowed = await take_many([limiter], "k", policy, 120)
        finally:
            await limiter.close()
        assert all(allowed)
        spent = 10_000 - shared_tokens(policy, "k")
        # Three blocks of 50 (not 120 blocks, not 120 single tokens), give or take
        # the refill of the test's own milliseconds.
        assert 120 <= spent <= 150

    asyncio.run(main())


def test_two_processes_never_spend_more_than_the_bucket_holds() -> None:
    policy = Policy(f"lease-{secrets.token_hex(4)}", burst=200, per_second=200)
    assert policy.lease_size == 10

    async def main() -> None:
        limiters = [Limiter(REDIS_URL, timeout_seconds=1.0) for _ in range(2)]
        started = time.monotonic()
        try:
            allowed = await take_many(limiters, "k", policy, 400)
        finally:
            for limiter in limiters:
                await limiter.close()
        refilled = (time.monotonic() - started) * policy.per_second
        assert sum(allowed) <= policy.burst + refilled + 1
        assert sum(allowed) >= policy.burst - 2 * policy.lease_size  # at most a block each lost

    asyncio.run(main())


def test_a_bucket_too_small_for_a_block_takes_one_token_per_request() -> None:
    policy = Policy(f"lease-{secrets.token_hex(4)}", burst=5, per_second=5 / 60)
    assert policy.lease_size == 1

    async def main() -> None:
        limiters = [Limiter(REDIS_URL, timeout_seconds=1.0) for _ in range(2)]
        try:
            allowed = [(await limiters[i % 2].take("k", policy)).allowed for i in range(7)]
        finally:
            for limiter in limiters:
                await limiter.close()
        assert allowed == [True] * 5 + [False] * 2

    asyncio.run(main())

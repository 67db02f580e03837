"""Rate-limit leases against the real Redis (limits.buckets): a busy bucket costs
one Redis call per block of tokens, never gives a token twice, and a bucket too
small for a block still takes one token per request."""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis

from tally.limits import buckets
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


def test_a_busy_bucket_is_taken_in_blocks_by_one_call_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Leases last 5 s here rather than 50 ms, so a loaded machine's pause between
    # two takes can neither expire a lease nor refill the bucket by more than a
    # few tokens: the count of calls below is then exact.
    monkeypatch.setattr(buckets, "LEASE_SECONDS", 5.0)
    policy = Policy(f"lease-{secrets.token_hex(4)}", burst=10_000, per_second=10)
    assert policy.lease_size == 50

    async def main() -> None:
        limiter = Limiter(REDIS_URL, timeout_seconds=1.0)
        calls = count_calls(limiter)
        started = time.monotonic()
        try:
            # 120 requests at once: the first renews the lease, the others wait for
            # that one call instead of each taking a block of their own.
            allowed = await take_many([limiter], "k", policy, 120)
        finally:
            await limiter.close()
        assert all(allowed)
        # Three blocks of 50, one Redis call each and never two at once (not 120
        # calls for a block each, not 120 calls for a token each).
        assert calls.wanted == [50, 50, 50]
        assert calls.most_at_once == 1
        refilled = (time.monotonic() - started) * policy.per_second
        spent = 10_000 - shared_tokens(policy, "k")
        assert 150 - refilled - 1 <= spent <= 150

    asyncio.run(main())


@dataclass
class Calls:
    wanted: list[int] = field(default_factory=list)
    at_once: int = 0
    most_at_once: int = 0


def count_calls(limiter: Limiter) -> Calls:
    """Wrap the limiter's one Redis call (its Lua script) to count what it asks."""
    calls = Calls()
    script = limiter._script

    async def counted(*, keys: list[str], args: list[float]) -> Any:
        calls.wanted.append(int(args[2]))
        calls.at_once += 1
        calls.most_at_once = max(calls.most_at_once, calls.at_once)
        try:
            return await script(keys=keys, args=args)
        finally:
            calls.at_once -= 1

    limiter._script = counted
    return calls


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

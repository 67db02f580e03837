"""Token buckets: what a caller may send, and what the headers tell it."""

from __future__ import annotations

import pytest

from tally.api.problems import status_of
from tally.errors import RateLimited
from tally.limits.buckets import MemoryBuckets, Policy, Take

POLICY = Policy("api", burst=3, per_second=1.0)


def test_a_full_bucket_allows_a_burst_then_refuses() -> None:
    buckets = MemoryBuckets()
    allowed = [buckets.take("key", POLICY).allowed for _ in range(4)]
    assert allowed == [True, True, True, False]


def test_buckets_are_per_key() -> None:
    buckets = MemoryBuckets()
    for _ in range(3):
        buckets.take("a", POLICY)
    assert not buckets.take("a", POLICY).allowed
    assert buckets.take("b", POLICY).allowed


def test_a_refusal_says_when_to_come_back() -> None:
    decision = Take(POLICY, allowed=False, tokens=0.25)
    with pytest.raises(RateLimited) as refused:
        decision.check("for this key")
    headers = refused.value.metadata
    assert refused.value.retry_after_seconds == 1
    assert headers["RateLimit-Policy"] == '"api";q=3;w=3'
    assert headers["RateLimit"] == '"api";r=0;t=1'
    assert status_of(refused.value) == 429


def test_an_allowed_request_reports_what_is_left() -> None:
    assert Take(POLICY, allowed=True, tokens=2.0).check("x") == {
        "RateLimit-Policy": '"api";q=3;w=3',
        "RateLimit": '"api";r=2;t=0',
    }


def test_the_least_recently_used_buckets_go_first() -> None:
    buckets = MemoryBuckets(buckets_max=2)
    for _ in range(3):
        buckets.take("a", POLICY)
    buckets.take("b", POLICY)
    buckets.take("c", POLICY)  # evicts "a", whose bucket was empty
    assert buckets.take("a", POLICY).tokens == 2

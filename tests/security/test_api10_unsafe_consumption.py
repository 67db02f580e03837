"""API10:2023 Unsafe Consumption of APIs.

Does not apply as OWASP describes it: Tally calls no third-party API, follows no
redirect and trusts no answer from a partner service (test_api7_ssrf proves it
makes no outbound request from client input). Its only peers are its own
PostgreSQL and Redis, at addresses the operator configures, spoken to with
parameterised queries and one fixed Lua script.

The part that does apply is how Tally treats what one of those peers gives back
when it is not what Tally expects. This module proves, for Redis (the peer
whose failure Tally promises to survive):

- Redis that does not answer costs no request: limits fall back to each
  process's own buckets, which still limit;
- a bucket key that holds something other than Tally's hash (another program's
  value, or a tampered one) is not a 500: the request is served, and limited.
"""

from __future__ import annotations

import secrets

import redis
from starlette.testclient import TestClient

from tests.conftest import create_tenant
from tests.security.conftest import assert_problem, serve

REDIS_URL = "redis://127.0.0.1:6379/0"
LIMITS = {"rate_limit_burst": 3, "rate_limit_per_second": 0.05, "redis_timeout_seconds": 0.2}


def flood(c: TestClient, key: str, times: int) -> list[int]:
    headers = {"Authorization": f"Bearer {key}"}
    return [c.get("/v1/accounts", headers=headers).status_code for _ in range(times)]


def test_redis_that_does_not_answer_costs_no_request_and_limits_still_hold(
    database_url: str,
) -> None:
    _, key = create_tenant(database_url, "redis-down")
    with serve(database_url, redis_url="redis://127.0.0.1:1/0", **LIMITS) as c:
        statuses = flood(c, key, 4)
    assert statuses == [200, 200, 200, 429]


def test_a_bucket_that_holds_something_unexpected_is_not_a_500(database_url: str) -> None:
    _, key = create_tenant(database_url, "redis-garbage")
    key_id = key[len("tly_") : len("tly_") + 16]
    peer = redis.Redis.from_url(REDIS_URL)
    bucket = f"tally:rl:api:api_key:{key_id}"
    try:
        peer.set(bucket, f"not a bucket {secrets.token_hex(4)}", ex=120)
        with serve(database_url, redis_url=REDIS_URL, **LIMITS) as c:
            statuses = flood(c, key, 4)
        assert statuses == [200, 200, 200, 429], statuses
        peer.delete(bucket)
        peer.hset(bucket, mapping={"tokens": "NaN", "ts": "yesterday"})
        peer.expire(bucket, 120)
        with serve(database_url, redis_url=REDIS_URL, **LIMITS) as c:
            r = c.get("/v1/accounts", headers={"Authorization": f"Bearer {key}"})
            assert r.status_code in (200, 429), r.text
            if r.status_code == 429:
                assert_problem(r, 429, "rate_limited")
    finally:
        peer.delete(bucket)
        peer.close()


def test_redis_that_does_not_answer_costs_no_graphql_request_and_limits_still_hold(
    database_url: str,
) -> None:
    # /graphql is admitted by the same code as /v1: the same fallback.
    _, key = create_tenant(database_url, "redis-down-gql")
    headers = {"Authorization": f"Bearer {key}"}
    body = {"query": "{ accounts { nodes { id } } }"}
    with serve(database_url, redis_url="redis://127.0.0.1:1/0", **LIMITS) as c:
        statuses = [c.post("/graphql", json=body, headers=headers).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]

"""API4:2023 Unrestricted Resource Consumption.

What this module proves, over the route table (``tally.api.openapi.ROUTES``):

- a body over ``body_bytes_max`` answers 413 ``payload_too_large`` on every route
  that takes one, whether it declares its length or streams it in chunks, and
  a declared length over the limit is refused before the body is read;
- hostile JSON (nesting tens of thousands deep, objects and arrays too wide,
  strings too long) answers 400 or 422, never a 500;
- every list answers 422 to a ``limit`` outside 1-1000 (and serves 1000), and
  refuses over-long cursors;
- a flood answers 429 ``rate_limited`` with ``Retry-After``, ``RateLimit`` and
  ``RateLimit-Policy``: per credential (another credential keeps going), per
  client address on the unauthenticated routes (another address keeps going;
  ``X-Forwarded-For`` does not buy a new bucket), and for requests whose
  credentials are wrong; a refused request changes nothing;
- with ``redis_url`` the limit is one bucket shared by two app instances; without
  it each instance keeps its own.

The login limits (per email, per address) are brute-force defences of a business
flow, proved in test_api6_sensitive_business_flows.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from starlette.testclient import TestClient

from tally.api.endpoint import RouteSpec
from tally.api.openapi import ROUTES
from tally.config import Settings
from tally.console import CONSOLE_ROUTES
from tally.console.web import FORM_BYTES_MAX, FORM_FIELDS_MAX, ConsoleRoute
from tests.conftest import create_tenant
from tests.console_client import Browser, hidden
from tests.security.conftest import (
    FROM_ADDRESS,
    PASSWORD,
    Caller,
    Tenant,
    assert_problem,
    console_path,
    graphql,
    graphql_codes,
    serve,
    ws_messages,
)

REDIS_URL = "redis://127.0.0.1:6379/0"
BODY_ROUTES = [pytest.param(s, id=f"{s.method} {s.path}") for s in ROUTES if s.request]
LIST_ROUTES = [
    pytest.param(s, id=f"{s.method} {s.path}")
    for s in ROUTES
    if any(p.name == "limit" for p in s.params)
]


def path_of(spec: RouteSpec) -> str:
    return spec.path.replace("{id}", "hold" if spec.path.startswith("/v1/transfers") else "src")


def send(caller: Caller, client: TestClient, spec: RouteSpec, **kwargs: Any) -> httpx.Response:
    """The request as the owner when the route needs a credential, anonymously when
    not; the caller has every scope, so only the body can be refused."""
    headers = {"Content-Type": "application/json", **kwargs.pop("headers", {})}
    if spec.auth:
        headers.update(caller.headers)
    return client.request(spec.method, path_of(spec), headers=headers, **kwargs)


# -- bodies ---------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", BODY_ROUTES)
def test_a_body_over_the_limit_is_refused_on_every_route_that_takes_one(
    tenant: Tenant, client: TestClient, spec: RouteSpec
) -> None:
    limit = Settings().body_bytes_max
    body = b'{"name": "' + b"a" * limit + b'"}'
    r = send(tenant.owner, client, spec, content=body)
    assert_problem(r, 413, "payload_too_large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the server must count
        yield b'{"name": "'
        for _ in range(limit // 65536 + 1):
            yield b"a" * 65536
        yield b'"}'

    r = send(tenant.owner, client, spec, content=chunks())
    assert_problem(r, 413, "payload_too_large")


@pytest.mark.parametrize("declared", [str(2**40), "9" * 200])
def test_a_declared_length_over_the_limit_is_refused_before_reading(
    tenant: Tenant, client: TestClient, declared: str
) -> None:
    r = tenant.owner.post(
        "/v1/accounts",
        content=b'{"currency": "USD"}',
        headers={"Content-Type": "application/json", "Content-Length": declared},
    )
    assert r.status_code in (400, 413), r.text


def nested(depth: int, opener: str, closer: str, inner: str = "1") -> bytes:
    return (opener * depth + inner + closer * depth).encode()


HOSTILE_BODIES: dict[str, bytes] = {
    "arrays_100k_deep": nested(100_000, "[", "]"),
    "objects_50k_deep": nested(50_000, '{"a":', "}"),
    "unclosed_100k_deep": b"[" * 100_000,
    "deep_in_metadata": b'{"metadata": {"k": ' + nested(50_000, "[", "]") + b"}}",
    "deep_in_a_string_field": b'{"email": ' + nested(50_000, '{"a":', "}") + b"}",
    "deep_in_batch_items": b'{"transfers": ' + nested(50_000, "[", "]") + b"}",
    "metadata_with_10k_keys": (
        '{"metadata": {' + ",".join(f'"k{i}": "v"' for i in range(10_000)) + "}}"
    ).encode(),
    "array_of_200k_numbers": b'{"transfers": [' + b",".join([b"1"] * 200_000) + b"]}",
    "string_of_500k_characters": b'{"id": "' + b"a" * 500_000 + b'"}',
    "number_of_100k_digits": b'{"amount": ' + b"9" * 100_000 + b"}",
}


@pytest.mark.parametrize("name", sorted(HOSTILE_BODIES))
@pytest.mark.parametrize("spec", BODY_ROUTES)
def test_hostile_json_is_refused_never_a_500(
    tenant: Tenant, client: TestClient, spec: RouteSpec, name: str
) -> None:
    r = send(tenant.owner, client, spec, content=HOSTILE_BODIES[name])
    assert r.status_code in (400, 413, 422), r.text[:500]
    assert r.headers["content-type"] == "application/problem+json"


def test_an_amount_of_thousands_of_digits_is_a_422(tenant: Tenant) -> None:
    """Python will not turn more than 4300 digits into an int; that must stay the
    client's error (a 422 naming the field), not become a 500."""
    for digits in (20, 4300, 4301, 10_000):
        body = (
            '{"debit_account_id": "src", "credit_account_id": "dst", "amount": '
            + "9" * digits
            + "}"
        )
        r = tenant.keys["all"].post(
            "/v1/transfers", content=body, headers={"Content-Type": "application/json"}
        )
        problem = assert_problem(r, 422, "validation_error")
        assert [e["field"] for e in problem["errors"]] == ["amount"], (digits, problem)


def test_a_batch_over_1000_items_is_refused(tenant: Tenant) -> None:
    item = {"debit_account_id": "src", "credit_account_id": "dst", "amount": 1}
    r = tenant.keys["all"].post("/v1/transfers/batch", {"transfers": [item] * 1001})
    problem = assert_problem(r, 422, "validation_error")
    assert problem["errors"][0]["field"] == "transfers", problem


# -- pages ----------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", ["0", "-1", "1001", "100000", str(10**30), "1e3", "abc", ""])
@pytest.mark.parametrize("spec", LIST_ROUTES)
def test_every_list_refuses_a_limit_outside_1_to_1000(
    tenant: Tenant, spec: RouteSpec, limit: str
) -> None:
    r = tenant.owner.get(path_of(spec), params={"limit": limit})
    problem = assert_problem(r, 422, "validation_error")
    assert [e["field"] for e in problem["errors"]] == ["limit"], problem


@pytest.mark.parametrize("spec", LIST_ROUTES)
def test_every_list_serves_a_page_of_1000_and_refuses_a_huge_cursor(
    tenant: Tenant, spec: RouteSpec
) -> None:
    path = path_of(spec).replace(
        "/webhook-endpoints/src/", f"/webhook-endpoints/{tenant.webhook_id}/"
    )
    r = tenant.owner.get(path, params={"limit": "1000"})
    assert r.status_code == 200, r.text
    assert len(r.json()["data"]) <= 1000
    r = tenant.owner.get(path, params={"cursor": "x" * 20_000})
    assert_problem(r, 422, "validation_error")


# -- floods ---------------------------------------------------------------------------------

BURST = 5
# One token per 20 s: no refill can happen while a test floods.
SLOW_REFILL: dict[str, Any] = {"rate_limit_burst": BURST, "rate_limit_per_second": 0.05}


def assert_rate_limited(r: httpx.Response) -> None:
    assert_problem(r, 429, "rate_limited")
    assert int(r.headers["retry-after"]) >= 1
    assert re.fullmatch(r'"[\w-]+";q=\d+;w=\d+', r.headers["ratelimit-policy"]), r.headers
    match = re.fullmatch(r'"([\w-]+)";r=(\d+);t=(\d+)', r.headers["ratelimit"])
    assert match is not None, r.headers
    assert match.group(2) == "0", r.headers["ratelimit"]  # no token left: that is why
    assert int(match.group(3)) >= 1
    assert r.headers["ratelimit-policy"].startswith(f'"{match.group(1)}"')


def flood(send_one: Any, times: int) -> list[httpx.Response]:
    return [send_one() for _ in range(times)]


@pytest.fixture
def keys(database_url: str) -> tuple[str, str]:
    """Two API keys (two tenants) that no other test has spent from a bucket."""
    return create_tenant(database_url, "flood-a")[1], create_tenant(database_url, "flood-b")[1]


def test_a_credential_that_floods_gets_429_and_another_keeps_going(
    database_url: str, keys: tuple[str, str]
) -> None:
    with serve(database_url, **SLOW_REFILL) as c:
        first, second = ({"Authorization": f"Bearer {k}"} for k in keys)
        answers = flood(lambda: c.get("/v1/accounts", headers=first), BURST)
        assert [r.status_code for r in answers] == [200] * BURST
        assert answers[0].headers["ratelimit-policy"] == '"api";q=5;w=100'
        assert answers[-1].headers["ratelimit"].startswith('"api";r=0;')
        assert_rate_limited(c.get("/v1/accounts", headers=first))
        r = c.post("/v1/accounts", json={"id": "flooded", "currency": "USD"}, headers=first)
        assert_rate_limited(r)
        assert c.get("/v1/accounts/flooded", headers=second).status_code == 404
        assert c.get("/v1/accounts", headers=second).status_code == 200


def test_an_address_that_floods_an_unauthenticated_route_gets_429(database_url: str) -> None:
    with serve(database_url, **SLOW_REFILL) as c:
        address = f"198.51.100.{secrets.randbelow(250) + 1}"

        def signup(address: str, **headers: str) -> httpx.Response:
            # A password the policy refuses: the bucket is spent before any hashing.
            body = {"email": "flood@example.com", "password": "short", "tenant_name": "f"}
            return c.post("/v1/signup", json=body, headers={FROM_ADDRESS: address, **headers})

        answers = flood(lambda: signup(address), BURST)
        assert [r.status_code for r in answers] == [422] * BURST
        assert_rate_limited(signup(address))
        # A forwarded-for header is the client's to write: it buys no new bucket.
        assert_rate_limited(signup(address, **{"X-Forwarded-For": "203.0.113.9"}))
        for route in ("/v1/auth/login", "/v1/auth/refresh", "/v1/auth/accept-invitation"):
            r = c.post(route, json={}, headers={FROM_ADDRESS: address})
            assert_rate_limited(r)
        assert signup("192.0.2.200").status_code == 422  # another address


def test_a_flood_of_bad_credentials_from_one_address_gets_429(database_url: str) -> None:
    """Requests whose credentials are wrong spend no credential's bucket; without a
    limit per address they cost a key lookup (and, for writes, an audit row)
    each, without end. (Which bucket refuses them is the server's choice: both the
    address's API bucket and its login bucket are small here.)"""
    with serve(database_url, login_limit_per_address_burst=BURST, **SLOW_REFILL) as c:
        address = f"198.51.100.{secrets.randbelow(250) + 1}"
        answers = [
            c.post(
                "/v1/accounts",
                json={"currency": "USD"},
                headers={
                    "Authorization": f"Bearer tly_{'a' * 16}_{secrets.token_urlsafe(32)}",
                    FROM_ADDRESS: address,
                },
            )
            for _ in range(4 * BURST)
        ]
        statuses = [r.status_code for r in answers]
        assert 429 in statuses, statuses
        assert_rate_limited(answers[-1])


def test_the_limit_is_shared_through_redis_by_two_instances(
    database_url: str, keys: tuple[str, str]
) -> None:
    key = keys[0]
    headers = {"Authorization": f"Bearer {key}"}
    with (
        serve(database_url, redis_url=REDIS_URL, **SLOW_REFILL) as one,
        serve(database_url, redis_url=REDIS_URL, **SLOW_REFILL) as two,
    ):
        answers = [(one if i % 2 else two).get("/v1/me", headers=headers) for i in range(BURST)]
        assert [r.status_code for r in answers] == [200] * BURST
        assert_rate_limited(one.get("/v1/me", headers=headers))
        assert_rate_limited(two.get("/v1/me", headers=headers))
    key_id = key[len("tly_") : len("tly_") + 16]
    bucket = redis.Redis.from_url(REDIS_URL).exists(f"tally:rl:api:api_key:{key_id}")
    assert bucket == 1


def test_without_redis_each_instance_keeps_its_own_bucket(
    database_url: str, keys: tuple[str, str]
) -> None:
    headers = {"Authorization": f"Bearer {keys[1]}"}
    with serve(database_url, **SLOW_REFILL) as one, serve(database_url, **SLOW_REFILL) as two:
        for instance in (one, two):
            answers = flood(lambda i=instance: i.get("/v1/me", headers=headers), BURST)
            assert [r.status_code for r in answers] == [200] * BURST
            assert_rate_limited(instance.get("/v1/me", headers=headers))


def test_every_v1_response_says_where_the_caller_stands(tenant: Tenant, client: TestClient) -> None:
    for r in (
        tenant.keys["all"].get("/v1/accounts"),
        tenant.people["viewer"].get("/v1/me"),
        client.post("/v1/auth/login", json={"email": "x@example.com", "password": PASSWORD}),
    ):
        assert re.fullmatch(r'"[\w-]+";r=\d+;t=\d+', r.headers["ratelimit"]), r.headers
        assert "ratelimit-policy" in r.headers


# -- /graphql: the same buckets, and a document measured before it runs --------------------


def test_graphql_spends_the_callers_bucket_and_a_flood_gets_429(
    database_url: str, keys: tuple[str, str]
) -> None:
    query = {"query": "{ accounts(first: 1) { nodes { id } } }"}
    with serve(database_url, **SLOW_REFILL) as c:
        first, second = ({"Authorization": f"Bearer {k}"} for k in keys)
        answers = flood(lambda: c.post("/graphql", json=query, headers=first), BURST)
        assert [r.status_code for r in answers] == [200] * BURST
        r = c.post("/graphql", json=query, headers=first)
        assert r.status_code == 429, r.text
        assert int(r.headers["retry-after"]) >= 1
        assert r.json()["errors"][0]["extensions"]["code"] == "rate_limited"
        # REST and GraphQL draw on one bucket per credential.
        assert_rate_limited(c.get("/v1/accounts", headers=first))
        assert c.post("/graphql", json=query, headers=second).status_code == 200


@pytest.mark.parametrize(
    ("query", "limit"),
    [
        (
            "{ accounts(first: 1000) { nodes { lastTransfers(first: 100)"
            " { debitAccount { id } } } } }",
            "cost",
        ),
        (
            '{ account(id: "src") { '
            + "lastTransfers(first: 1) { debitAccount { " * 6
            + "id"
            + " } }" * 6
            + " } }",
            "depth",
        ),
        (
            "{ " + " ".join(f'a{i}: account(id: "src") {{ id }}' for i in range(50)) + " }",
            "aliases",
        ),
        (
            "query A { accounts { nodes { id } } } query B { accounts { nodes { id } } }",
            "operations",
        ),
    ],
    ids=["cost", "depth", "aliases", "operations"],
)
def test_graphql_refuses_a_costly_document_before_it_runs(
    tenant: Tenant, query: str, limit: str
) -> None:
    out = graphql(tenant.keys["all"], query)
    assert "data" not in out, out
    (error,) = out["errors"]
    assert error["extensions"] == {"code": "validation_error", "limit": limit}


def test_graphql_refuses_batches_pages_over_1000_and_oversized_bodies(tenant: Tenant) -> None:
    caller = tenant.keys["all"]
    r = caller.post("/graphql", [{"query": "{ accounts { nodes { id } } }"}] * 100)
    assert r.status_code == 422, r.text
    out = graphql(caller, "{ transfers(first: 1001) { nodes { id } } }")
    assert graphql_codes(out) == ["validation_error"]
    r = caller.post("/graphql", {"query": "{ accounts { nodes { id } } }", "v": "x" * (1 << 20)})
    assert r.status_code == 413, r.text
    out = graphql(caller, "{ accounts { nodes { " + "id " * 5000 + "} } }")
    assert graphql_codes(out) == ["malformed_request"]


# -- the console's forms ------------------------------------------------------------------

CONSOLE_FORM_ROUTES = [
    pytest.param(r, id=f"{r.method} {r.path}") for r in CONSOLE_ROUTES if r.method == "POST"
]


@pytest.mark.parametrize("route", CONSOLE_FORM_ROUTES)
def test_a_console_form_over_its_limit_is_refused_and_never_parsed(
    consoles: dict[str, Browser], route: ConsoleRoute
) -> None:
    owner = consoles["owner"]
    page = owner.get("/console/accounts")
    fields = {**hidden(page.text), "metadata": "k=" + "v" * FORM_BYTES_MAX}
    r = owner.post(console_path(route), fields)
    assert r.status_code == 413, (route.path, r.status_code)
    many = {**hidden(page.text), **{f"f{i}": "x" for i in range(FORM_FIELDS_MAX + 1)}}
    r = owner.post(console_path(route), many)
    assert r.status_code == 400, (route.path, r.status_code)
    assert owner.get("/console/accounts").status_code == 200  # the session is unharmed


# -- the event streams: every wait, buffer and list is bounded --------------------------------

STREAM_LIMITS = [
    ("/v1/events", {"wait_seconds": "31"}, "wait_seconds"),
    ("/v1/events", {"wait_seconds": str(10**30)}, "wait_seconds"),
    ("/v1/events/stream", {"types": ",".join(["account.created"] * 40)}, "types"),
    ("/v1/events/stream", {"after": str(2**63)}, "after"),
]


@pytest.mark.parametrize(("path", "params", "field"), STREAM_LIMITS)
def test_every_event_route_refuses_a_wait_or_a_filter_beyond_its_limit(
    tenant: Tenant, path: str, params: dict[str, str], field: str
) -> None:
    problem = assert_problem(tenant.owner.get(path, params=params), 422, "validation_error")
    assert [e["field"] for e in problem["errors"]] == [field]


def test_an_event_stream_ends_on_its_own_and_holds_no_subscription_after(
    tenant: Tenant, client: TestClient
) -> None:
    # In process TALLY_EVENTS_STREAM_SECONDS_MAX is 0.5 s (tests/conftest.py): the
    # stream ends, and the process's hub keeps nothing of it.
    hub = client.app.state.services.events  # type: ignore[attr-defined]
    started = time.monotonic()
    r = tenant.owner.get("/v1/events/stream", params={"after": "0"})
    assert r.status_code == 200
    assert time.monotonic() - started < 5
    with client.websocket_connect("/v1/events/ws", headers=tenant.owner.headers) as ws:
        assert ws_messages(ws)[1] == 1000
    deadline = time.monotonic() + 2  # the stream lets go right after its last write
    while hub.subscribers and time.monotonic() < deadline:
        time.sleep(0.05)
    assert hub.subscribers == 0


def test_the_event_websocket_reads_no_large_message(tenant: Tenant, client: TestClient) -> None:
    with client.websocket_connect("/v1/events/ws") as ws:
        ws.send_text(json.dumps({"type": "auth", "token": "x" * 100_000}))
        assert ws.receive_json()["code"] == "unauthenticated"

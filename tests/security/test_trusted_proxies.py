"""Behind a load balancer (TALLY_TRUSTED_PROXIES): rate limits and audit rows name
the client the proxy forwarded for, and only a proxy the operator named is believed.

The requests come "from" the address in ``X-Test-Client-Address`` (the socket peer,
here the proxy); ``X-Forwarded-For`` is what that peer says about its client.
"""

from __future__ import annotations

import secrets

import httpx
from starlette.testclient import TestClient

from tests.security.conftest import FROM_ADDRESS, assert_problem, serve, signup
from tests.security.test_audit_log import events_until

PROXY = "10.20.0.5"
PROXIES = "10.20.0.0/16"
BURST = 3
SLOW = {"login_limit_per_address_burst": BURST, "login_limit_per_address_per_minute": 0.01}


def sign_up(c: TestClient, peer: str, forwarded_for: str | None = None) -> httpx.Response:
    """A sign-up the password policy refuses: it spends the address's login bucket
    before any hashing, so the bucket is all it measures."""
    headers = {FROM_ADDRESS: peer}
    if forwarded_for is not None:
        headers["X-Forwarded-For"] = forwarded_for
    body = {"email": "proxied@example.com", "password": "short", "tenant_name": "p"}
    return c.post("/v1/signup", json=body, headers=headers)


def client_address() -> str:
    return f"198.51.100.{secrets.randbelow(250) + 1}"


def test_each_client_behind_a_trusted_proxy_has_its_own_bucket(database_url: str) -> None:
    with serve(database_url, trusted_proxies=[PROXIES], **SLOW) as c:
        flooder, other = client_address(), "192.0.2.77"
        assert [sign_up(c, PROXY, flooder).status_code for _ in range(BURST)] == [422] * BURST
        assert_problem(sign_up(c, PROXY, flooder), 429, "rate_limited")
        # The proxy's own address is not what ran out: its other clients go on.
        assert sign_up(c, PROXY, other).status_code == 422
        # A flooder cannot escape by writing another address before its own.
        assert_problem(sign_up(c, PROXY, f"203.0.113.1, {flooder}"), 429, "rate_limited")


def test_a_peer_that_is_not_a_trusted_proxy_cannot_choose_its_address(database_url: str) -> None:
    with serve(database_url, trusted_proxies=[PROXIES], **SLOW) as c:
        peer = client_address()
        for _ in range(BURST):
            assert sign_up(c, peer, client_address()).status_code == 422
        assert_problem(sign_up(c, peer, client_address()), 429, "rate_limited")


def test_without_trusted_proxies_forwarded_for_is_ignored(database_url: str) -> None:
    with serve(database_url, **SLOW) as c:
        for _ in range(BURST):
            assert sign_up(c, PROXY, client_address()).status_code == 422
        assert_problem(sign_up(c, PROXY, client_address()), 429, "rate_limited")


def test_the_audit_row_names_the_forwarded_client(database_url: str) -> None:
    with serve(database_url, trusted_proxies=[PROXIES]) as c:
        owner = signup(c, "proxied")
        real = client_address()
        request_id = f"proxied-{secrets.token_hex(4)}"
        headers = {FROM_ADDRESS: PROXY, "X-Forwarded-For": real, "Request-Id": request_id}
        r = owner.post("/v1/accounts", {"currency": "USD"}, headers=headers)
        assert r.status_code == 201, r.text
        event = events_until(owner, {request_id}, sealed=False)[request_id]
        assert event["client_address"] == real, event


def test_a_trusted_proxy_that_terminated_tls_gets_hsts(database_url: str) -> None:
    with serve(database_url, trusted_proxies=[PROXIES]) as c:
        headers = {FROM_ADDRESS: PROXY, "X-Forwarded-Proto": "https"}
        assert "strict-transport-security" in c.get("/healthz", headers=headers).headers
        spoofed = {FROM_ADDRESS: client_address(), "X-Forwarded-Proto": "https"}
        assert "strict-transport-security" not in c.get("/healthz", headers=spoofed).headers

"""API6:2023 Unrestricted Access to Sensitive Business Flows.

Applies in part. Tally's ledger flows (transfers, holds) are the customer's own
business, guarded per credential by the limits of test_api4; it sells nothing,
books nothing and has no referral or reward an automated client could harvest.
What an attacker can automate here is getting in: guessing passwords, finding
out which emails have accounts, and making tenants in bulk. So this module
proves that:

- login attempts are limited per email (a correct password after the budget is
  spent still gets 429, and case or white space in the email buy no new bucket)
  and per client address (many emails from one place), each answered 429 with
  ``Retry-After`` and ``RateLimit`` headers that describe the limit that was hit,
  and cheaply (a refused attempt runs no Argon2);
- sign-up, which answers 409 to an email that is registered, is held to the same
  per-address budget as login, or it would be the faster way to learn which
  emails have accounts; and so is inviting a member, which answers the same 409
  to an email registered in any tenant, to anyone who signs up to be an admin;
- checking the current password to change it is held to the same per-email
  budget as login, or a stolen access token would be a way to guess it.
"""

from __future__ import annotations

import itertools
import re
import statistics
import time
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from tests.security.conftest import (
    FROM_ADDRESS,
    OTHER_PASSWORD,
    PASSWORD,
    Person,
    Tenant,
    assert_problem,
    serve,
    signup,
    unique_email,
)

# A budget of three, refilled once a minute: no refill happens during a test.
LOGIN_EMAIL_LIMIT: dict[str, Any] = {
    "login_limit_per_email_burst": 3,
    "login_limit_per_email_per_minute": 1,
    "login_limit_per_address_burst": 1000,
}
LOGIN_ADDRESS_LIMIT: dict[str, Any] = {
    "login_limit_per_address_burst": 3,
    "login_limit_per_address_per_minute": 1,
    "login_limit_per_email_burst": 1000,
}


# Each call a different address than the last 249 (found in CI: two random picks
# of 250 collided, and the "other" address was already limited).
_HOSTS = itertools.cycle(range(1, 251))


def address() -> str:
    return f"198.51.100.{next(_HOSTS)}"


def login(c: TestClient, email: str, password: str, origin: str) -> httpx.Response:
    return c.post(
        "/v1/auth/login",
        json={"email": email, "password": password},
        headers={FROM_ADDRESS: origin},
    )


def assert_login_limited(r: httpx.Response, policy_prefix: str = "login") -> None:
    """A 429 whose headers describe the limit that refused it: no token left, and
    the wait that ``Retry-After`` gives."""
    assert_problem(r, 429, "rate_limited")
    retry_after = int(r.headers["retry-after"])
    assert retry_after >= 1
    match = re.fullmatch(r'"([\w-]+)";r=(\d+);t=(\d+)', r.headers["ratelimit"])
    assert match is not None, r.headers
    name, remaining, wait = match.group(1), int(match.group(2)), int(match.group(3))
    assert name.startswith(policy_prefix), r.headers
    assert remaining == 0, r.headers
    assert wait == retry_after, r.headers
    assert r.headers["ratelimit-policy"].startswith(f'"{name}";'), r.headers


@pytest.fixture
def person(client: TestClient) -> Person:
    """A user of the shared database, for apps of their own over it."""
    return signup(client, "brute")


def test_login_attempts_are_limited_per_email(database_url: str, person: Person) -> None:
    with serve(database_url, **LOGIN_EMAIL_LIMIT) as c:
        here = address()
        for _ in range(3):
            assert login(c, person.email, OTHER_PASSWORD, here).status_code == 401
        assert_problem(login(c, person.email, PASSWORD, here), 429, "rate_limited")
        variant = f"  {person.email.upper()} "
        assert_problem(login(c, variant, PASSWORD, address()), 429, "rate_limited")
        # Another account, from the same address, is not locked by this one.
        assert login(c, unique_email("other"), PASSWORD, here).status_code == 401


def test_login_attempts_are_limited_per_address(database_url: str) -> None:
    with serve(database_url, **LOGIN_ADDRESS_LIMIT) as c:
        here = address()
        for _ in range(3):
            assert login(c, unique_email("spray"), PASSWORD, here).status_code == 401
        assert_problem(login(c, unique_email("spray"), PASSWORD, here), 429, "rate_limited")
        assert login(c, unique_email("spray"), PASSWORD, address()).status_code == 401


def test_a_refused_login_says_which_limit_refused_it(database_url: str, person: Person) -> None:
    with serve(database_url, **LOGIN_EMAIL_LIMIT) as c:
        here = address()
        for _ in range(3):
            login(c, person.email, OTHER_PASSWORD, here)
        assert_login_limited(login(c, person.email, PASSWORD, here))
    with serve(database_url, **LOGIN_ADDRESS_LIMIT) as c:
        here = address()
        for _ in range(3):
            login(c, unique_email("spray"), PASSWORD, here)
        assert_login_limited(login(c, unique_email("spray"), PASSWORD, here))


def test_a_refused_login_runs_no_argon2(database_url: str) -> None:
    with serve(database_url, **LOGIN_ADDRESS_LIMIT) as c:
        here = address()
        tried, refused = [], []
        for _ in range(3):
            started = time.perf_counter()
            assert login(c, unique_email("cost"), PASSWORD, here).status_code == 401
            tried.append(time.perf_counter() - started)
        for _ in range(5):
            started = time.perf_counter()
            assert login(c, unique_email("cost"), PASSWORD, here).status_code == 429
            refused.append(time.perf_counter() - started)
        assert statistics.median(refused) * 3 < statistics.median(tried), (tried, refused)


def test_signup_is_held_to_the_login_budget_per_address(database_url: str, person: Person) -> None:
    """Sign-up answers 409 to a registered email: it tells what a failed login is
    careful not to tell, so it must not tell it faster."""
    with serve(database_url, **LOGIN_ADDRESS_LIMIT) as c:
        here = address()
        answers = []
        for _ in range(4):
            body = {"email": person.email, "password": PASSWORD, "tenant_name": "probe"}
            answers.append(c.post("/v1/signup", json=body, headers={FROM_ADDRESS: here}))
        assert [r.status_code for r in answers[:3]] == [409, 409, 409], answers[0].text
        assert_problem(answers[3], 429, "rate_limited")


def test_checking_the_current_password_is_held_to_the_login_budget_per_email(
    database_url: str, person: Person
) -> None:
    """With a stolen access token, the password-change route must not become a
    way to guess the password that login protects. (Per email or per address is
    the server's choice: both budgets are three here.)"""
    limits = {**LOGIN_EMAIL_LIMIT, "login_limit_per_address_burst": 3}
    with serve(database_url, **limits) as c:
        headers = {**person.headers, FROM_ADDRESS: address()}
        answers = [
            c.post(
                "/v1/users/me/password",
                json={"current_password": f"guess-{i}-Wrong-pw", "new_password": OTHER_PASSWORD},
                headers=headers,
            )
            for i in range(4)
        ]
        assert [r.status_code for r in answers[:3]] == [422, 422, 422], answers[0].text
        assert_problem(answers[3], 429, "rate_limited")


def test_invitations_do_not_tell_which_emails_have_accounts_faster_than_login(
    database_url: str, person: Person, tenant: Tenant
) -> None:
    """Emails are unique across tenants, so an invitation of an email registered in
    another tenant is refused with 409: whoever signs up (and so is an admin of a
    tenant of their own) can ask about any email. Either the answer must not tell,
    or asking must run dry as fast as login attempts do."""
    limits = {**LOGIN_EMAIL_LIMIT, "login_limit_per_address_burst": 3}
    with serve(database_url, **limits) as c:
        headers = {**person.headers, FROM_ADDRESS: address()}
        statuses = [
            c.post(
                "/v1/members", json={"email": p.email, "role": "viewer"}, headers=headers
            ).status_code
            for p in tenant.people.values()
        ]
    assert len(statuses) == 4
    assert 409 not in statuses or statuses[3] == 429, statuses

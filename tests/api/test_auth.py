"""Authentication and tenant isolation over HTTP (api.md §1, §2, §5).

Every ``/v1`` route answers a request without a valid API key with 401
``unauthenticated`` and ``WWW-Authenticate: Bearer``. A tenant never sees or
touches another tenant's objects: they answer 404, exactly as an id that exists
nowhere, so not even their existence leaks.

The route list is ``tally.api.routes.LEDGER_ROUTES`` itself, so a route added later is
covered without editing this file.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from tally.api.endpoint import RouteSpec
from tally.api.routes import LEDGER_ROUTES as ROUTES
from tally.identity.api_keys import split_api_key
from tests.api.conftest import Api
from tests.conftest import create_tenant

PROBLEM = "application/problem+json"
ITEM = {"debit_account_id": "src", "credit_account_id": "dst", "amount": 1}
# A well-formed request for each write route, so that only the credentials are wrong.
BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/v1/accounts"): {"currency": "USD"},
    ("PATCH", "/v1/accounts/{id}"): {"status": "closed"},
    ("POST", "/v1/transfers"): ITEM,
    ("POST", "/v1/transfers/batch"): {"transfers": [ITEM]},
    ("POST", "/v1/transfers/{id}/post"): {},
    ("POST", "/v1/transfers/{id}/void"): {},
}


def path_of(spec: RouteSpec) -> str:
    """The route's path naming one of the owner's real objects."""
    return spec.path.replace("{id}", "hold" if spec.path.startswith("/v1/transfers") else "src")


def body_of(spec: RouteSpec) -> Any:
    return BODIES.get((spec.method, spec.path))


ROUTE_PARAMS = [pytest.param(spec, id=f"{spec.method} {spec.path}") for spec in ROUTES]


def assert_problem(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code < 500, r.text
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    assert r.headers.get("request-id")
    problem: dict[str, Any] = r.json()
    assert problem["status"] == status
    assert problem["code"] == code
    return problem


def snapshot(api: Api) -> dict[str, Any]:
    state = {}
    for path in ("/v1/accounts", "/v1/transfers", "/v1/events"):
        r = api.get(path, params={"limit": "1000"})
        assert r.status_code == 200, r.text
        state[path] = r.json()["data"]
    return state


def arrange_books(api: Api) -> Api:
    """Two USD accounts, a posted transfer ``paid`` and an open hold ``hold``."""
    api.account("src")
    api.account("dst")
    api.transfer("src", "dst", 100, id="paid")
    api.transfer("src", "dst", 40, id="hold", pending=True)
    return api


@pytest.fixture(scope="module")
def owner(client: TestClient, database_url: str) -> Api:
    """A tenant whose books the credential tests aim at. A refused request must not
    change them; the last test of the module checks that they did not."""
    tenant_id, api_key = create_tenant(database_url, "owner")
    return arrange_books(Api(client, api_key, tenant_id))


@pytest.fixture
def books(api: Api) -> Api:
    return arrange_books(api)


# -- credentials ----------------------------------------------------------------------------


def altered(key: str) -> str:
    """The same key with the last character of its secret changed."""
    return key[:-1] + ("A" if key[-1] != "A" else "B")


def key_id_and_secret(key: str) -> tuple[str, str]:
    parts = split_api_key(key)
    assert parts is not None, key
    return parts


def unknown_key() -> str:
    key_id = "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz234567") for _ in range(16))
    return f"tly_{key_id}_{secrets.token_urlsafe(32)}"


# Each maps the owner's real key to an Authorization header (None: no header at all).
BAD_CREDENTIALS: dict[str, Callable[[str], str | None]] = {
    "missing": lambda key: None,
    "empty": lambda key: "",
    "basic_scheme": lambda key: "Basic dXNlcjpwYXNzd29yZA==",
    "token_scheme_with_the_real_key": lambda key: f"Token {key}",
    "the_real_key_without_a_scheme": lambda key: key,
    "bearer_without_a_token": lambda key: "Bearer ",
    "bearer_garbage": lambda key: "Bearer garbage",
    "well_formed_unknown_key": lambda key: f"Bearer {unknown_key()}",
    "real_key_with_altered_secret": lambda key: f"Bearer {altered(key)}",
    "real_key_with_truncated_secret": lambda key: f"Bearer {key[:-1]}",
    "real_key_id_without_secret": lambda key: f"Bearer tly_{key_id_and_secret(key)[0]}_",
    "real_key_with_extra_text": lambda key: f"Bearer {key} {key}",
    "real_key_in_upper_case": lambda key: f"Bearer {key.upper()}",
    "very_long_token": lambda key: "Bearer tly_" + "a" * 10_000,
}


@pytest.mark.parametrize("credentials", sorted(BAD_CREDENTIALS))
@pytest.mark.parametrize("spec", ROUTE_PARAMS)
def test_every_v1_route_refuses_bad_credentials(
    owner: Api, spec: RouteSpec, credentials: str
) -> None:
    header = BAD_CREDENTIALS[credentials](owner.api_key)
    headers = {} if header is None else {"Authorization": header}
    r = owner.client.request(spec.method, path_of(spec), json=body_of(spec), headers=headers)
    assert_problem(r, 401, "unauthenticated")
    assert r.headers["www-authenticate"].startswith("Bearer")
    # Not rpartition("_"): a secret is URL-safe base64, which may hold "_" itself
    # (found in CI: a secret ending "_9X" made this check look for "9").
    secret = key_id_and_secret(owner.api_key)[1]
    assert secret not in r.text
    assert secret[:-1] not in r.text


@pytest.mark.parametrize("spec", ROUTE_PARAMS)
def test_every_v1_route_accepts_the_real_key(books: Api, spec: RouteSpec) -> None:
    r = books.request(spec.method, path_of(spec), json=body_of(spec))
    assert r.status_code in (200, 201), r.text


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "Bearer"])
def test_the_bearer_scheme_is_case_insensitive(books: Api, scheme: str) -> None:
    # RFC 9110 §11.1: an authentication scheme is case-insensitive.
    r = books.client.get("/v1/accounts", headers={"Authorization": f"{scheme} {books.api_key}"})
    assert r.status_code == 200, r.text


def test_another_tenants_key_with_this_tenants_key_id_is_refused(
    books: Api, other_api: Api
) -> None:
    key_id = key_id_and_secret(books.api_key)[0]
    other_secret = key_id_and_secret(other_api.api_key)[1]
    r = books.client.get(
        "/v1/accounts", headers={"Authorization": f"Bearer tly_{key_id}_{other_secret}"}
    )
    assert_problem(r, 401, "unauthenticated")


def test_refused_credentials_changed_nothing(owner: Api) -> None:
    # Runs last in this module (pytest keeps file order): by now every write route has
    # been sent a well-formed request under every kind of bad credentials.
    assert owner.balance("src")["status"] == "open"
    assert owner.get("/v1/transfers/hold").json()["status"] == "pending"
    state = snapshot(owner)
    assert len(state["/v1/accounts"]) == 2
    assert [t["id"] for t in state["/v1/transfers"]] == ["paid", "hold"]
    assert [e["type"] for e in state["/v1/events"]] == [
        "account.created",
        "account.created",
        "transfer.created",
        "transfer.created",
    ]


# -- another tenant's objects ----------------------------------------------------------------


def assert_not_found_like_a_missing_id(
    stranger: Api, method: str, path: str, code: str, body: Any = None
) -> None:
    """``path`` names the owner's object; the stranger's answer must be the one it gets
    for an id that exists nowhere, so existence does not leak."""
    r = stranger.request(method, path, json=body)
    problem = assert_problem(r, 404, code)
    nowhere = re.sub(r"/(src|dst|paid|hold)\b", "/nowhere", path)
    twin = assert_problem(stranger.request(method, nowhere, json=body), 404, code)
    assert problem["title"] == twin["title"]
    assert problem.keys() == twin.keys()


CROSS_TENANT_REQUESTS = [
    ("GET", "/v1/accounts/src", None, "not_found"),
    ("GET", "/v1/accounts/dst", None, "not_found"),
    ("PATCH", "/v1/accounts/src", {"metadata": {"owner": "me"}}, "not_found"),
    ("PATCH", "/v1/accounts/src", {"status": "closed"}, "not_found"),
    ("GET", "/v1/accounts/src/balances", None, "not_found"),
    ("GET", "/v1/accounts/src/balances?at=2100-01-01T00:00:00Z", None, "not_found"),
    ("GET", "/v1/transfers/paid", None, "not_found"),
    ("GET", "/v1/transfers/hold", None, "not_found"),
    ("POST", "/v1/transfers/hold/post", {}, "pending_transfer_not_found"),
    ("POST", "/v1/transfers/hold/post", {"amount": 1}, "pending_transfer_not_found"),
    ("POST", "/v1/transfers/hold/void", {}, "pending_transfer_not_found"),
    # Never pending_transfer_not_pending: that would say the transfer exists.
    ("POST", "/v1/transfers/paid/post", {}, "pending_transfer_not_found"),
    ("POST", "/v1/transfers/paid/void", {}, "pending_transfer_not_found"),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "code"),
    CROSS_TENANT_REQUESTS,
    ids=[f"{m} {p} {b}" for m, p, b, _ in CROSS_TENANT_REQUESTS],
)
def test_another_tenants_objects_are_not_found(
    books: Api, other_api: Api, method: str, path: str, body: Any, code: str
) -> None:
    before = snapshot(books)
    assert_not_found_like_a_missing_id(other_api, method, path, code, body)
    assert snapshot(books) == before


def test_another_tenants_objects_are_invisible_in_lists_and_events(
    books: Api, other_api: Api
) -> None:
    other_api.account("theirs", "EUR")
    lists = {
        "/v1/accounts": ["theirs"],
        "/v1/accounts?currency=USD": [],
        "/v1/transfers": [],
        "/v1/transfers?account_id=src": [],
        "/v1/transfers?status=pending": [],
        "/v1/transfers?order=desc": [],
    }
    for path, ids in lists.items():
        r = other_api.get(path)
        assert r.status_code == 200, r.text
        assert [x["id"] for x in r.json()["data"]] == ids, path
    events = other_api.get("/v1/events").json()["data"]
    assert [(e["type"], e["data"]["id"]) for e in events] == [("account.created", "theirs")]


def test_a_transfer_naming_another_tenants_accounts_finds_no_such_account(
    books: Api, other_api: Api
) -> None:
    other_api.account("mine")
    before = snapshot(books)
    cases = [
        ({"debit_account_id": "src", "credit_account_id": "mine"}, "debit_account_not_found"),
        ({"debit_account_id": "mine", "credit_account_id": "dst"}, "credit_account_not_found"),
        ({"debit_account_id": "src", "credit_account_id": "dst"}, "debit_account_not_found"),
    ]
    for accounts, code in cases:
        r = other_api.post("/v1/transfers", {**accounts, "amount": 1})
        assert_problem(r, 422, code)
        r = other_api.post("/v1/transfers", {**accounts, "amount": 1, "pending": True})
        assert_problem(r, 422, code)
    assert snapshot(books) == before
    assert other_api.balance("mine")["debits_posted"] == 0


def test_a_batch_naming_another_tenants_objects_applies_nothing_to_them(
    books: Api, other_api: Api
) -> None:
    other_api.account("mine")
    before = snapshot(books)
    items = [
        {"debit_account_id": "src", "credit_account_id": "mine", "amount": 1},
        {"debit_account_id": "mine", "credit_account_id": "dst", "amount": 1},
        {"pending_id": "hold", "action": "post"},
        {"pending_id": "hold", "action": "void"},
    ]
    r = other_api.post("/v1/transfers/batch", {"transfers": items})
    assert r.status_code == 200, r.text
    assert [(x["status"], x["error"]["code"]) for x in r.json()["results"]] == [
        ("failed", "debit_account_not_found"),
        ("failed", "credit_account_not_found"),
        ("failed", "pending_transfer_not_found"),
        ("failed", "pending_transfer_not_found"),
    ]
    r = other_api.post("/v1/transfers/batch", {"transfers": items, "atomic": True})
    assert_problem(r, 422, "batch_failed")
    assert snapshot(books) == before


def test_the_same_ids_in_another_tenant_are_other_objects(books: Api, other_api: Api) -> None:
    before = snapshot(books)
    theirs = other_api.post("/v1/accounts", {"id": "src", "currency": "EUR"})
    assert theirs.status_code == 201, theirs.text
    other_api.account("dst", "EUR")
    transfer = other_api.post(
        "/v1/transfers",
        {"id": "hold", "debit_account_id": "src", "credit_account_id": "dst", "amount": 7},
    )
    assert transfer.status_code == 201, transfer.text
    assert other_api.balance("src")["currency"] == "EUR"
    assert other_api.balance("src")["debits_posted"] == 7
    assert snapshot(books) == before
    assert books.balance("src")["currency"] == "USD"
    assert books.get("/v1/transfers/hold").json()["status"] == "pending"

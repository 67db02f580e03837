"""API5:2023 Broken Function Level Authorization.

What this module proves, over the route table (``tally.api.openapi.ROUTES``), so
that a route added later is covered or the test asks for its request:

- every authenticated route with every credential of a tenant (the four roles, an
  API key per scope, a read-only key, an all-scope key): a credential without
  the route's scope gets 403 ``forbidden`` to a well-formed request on real
  objects, and nothing changes; one with it gets past authorization;
- every admin route (members, API keys, the audit log) does its work for the
  owner, an admin and admin-scoped keys, and refuses operators, viewers and
  every other key;
- the only routes open without a credential are sign-up, login, refresh and
  accepting an invitation; ``/v1/me`` answers every credential; a method the
  route table does not list is 405 and a method-override header changes nothing.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from typing import Any

import pytest

from tally.api.endpoint import RouteSpec
from tally.api.openapi import ROUTES
from tally.console import CONSOLE_ROUTES
from tally.console.web import ConsoleRoute
from tally.identity.roles import ADMIN, ROLE_SCOPES
from tests.console_client import Browser
from tests.security.conftest import (
    WEBHOOK_URL,
    Caller,
    Db,
    Tenant,
    arrange_webhook,
    assert_problem,
    console_call,
    console_path,
    graphql,
    graphql_codes,
    invite,
    make_key,
    unique_email,
)

AUTHORIZED_ROUTES = [s for s in ROUTES if s.auth and s.scope]
ADMIN_ROUTES = [s for s in ROUTES if s.scope == ADMIN]


def param(spec: RouteSpec) -> Any:
    return pytest.param(spec, id=f"{spec.method} {spec.path}")


TRANSFER = {"debit_account_id": "src", "credit_account_id": "dst", "amount": 1}


def real_request(spec: RouteSpec, tenant: Tenant) -> tuple[str, Any]:
    """A well-formed request on tenant A's real objects: refused only for want of a
    scope, it would otherwise do something."""
    requests: dict[tuple[str, str], Callable[[], tuple[str, Any]]] = {
        ("POST", "/v1/accounts"): lambda: ("/v1/accounts", {"currency": "USD", "id": "fl"}),
        ("GET", "/v1/accounts"): lambda: ("/v1/accounts", None),
        ("GET", "/v1/accounts/{id}"): lambda: ("/v1/accounts/src", None),
        ("PATCH", "/v1/accounts/{id}"): lambda: ("/v1/accounts/src", {"status": "closed"}),
        ("GET", "/v1/accounts/{id}/balances"): lambda: ("/v1/accounts/src/balances", None),
        ("POST", "/v1/transfers"): lambda: ("/v1/transfers", TRANSFER),
        ("POST", "/v1/transfers/batch"): lambda: ("/v1/transfers/batch", {"transfers": [TRANSFER]}),
        ("GET", "/v1/transfers"): lambda: ("/v1/transfers", None),
        ("GET", "/v1/transfers/{id}"): lambda: ("/v1/transfers/hold", None),
        ("POST", "/v1/transfers/{id}/post"): lambda: ("/v1/transfers/hold/post", {}),
        ("POST", "/v1/transfers/{id}/void"): lambda: ("/v1/transfers/hold/void", {}),
        ("GET", "/v1/events"): lambda: ("/v1/events", None),
        ("GET", "/v1/events/stream"): lambda: ("/v1/events/stream?after=0", None),
        ("GET", "/v1/members"): lambda: ("/v1/members", None),
        ("POST", "/v1/members"): lambda: (
            "/v1/members", {"email": unique_email("fl"), "role": "admin"},
        ),
        ("PATCH", "/v1/members/{id}"): lambda: (
            f"/v1/members/{tenant.people['operator'].user_id}", {"role": "admin"},
        ),
        ("DELETE", "/v1/members/{id}"): lambda: (
            f"/v1/members/{tenant.people['operator'].user_id}", None,
        ),
        ("GET", "/v1/api-keys"): lambda: ("/v1/api-keys", None),
        ("POST", "/v1/api-keys"): lambda: ("/v1/api-keys", {"name": "fl", "scopes": ["admin"]}),
        ("DELETE", "/v1/api-keys/{id}"): lambda: (
            f"/v1/api-keys/{tenant.keys['all'].key_id}", None,
        ),
        ("GET", "/v1/audit-events"): lambda: ("/v1/audit-events", None),
        **webhook_requests(tenant),
    }  # fmt: skip
    if (spec.method, spec.path) not in requests:
        pytest.fail(f"{spec.method} {spec.path}: add a well-formed request to real_request")
    return requests[(spec.method, spec.path)]()


WEBHOOK = {"url": WEBHOOK_URL, "event_types": ["*"]}


def webhook_requests(tenant: Tenant) -> dict[tuple[str, str], Callable[[], tuple[str, Any]]]:
    """The webhook routes on tenant A's real endpoint and dead-lettered delivery."""
    one = f"/v1/webhook-endpoints/{tenant.webhook_id}"
    return {
        ("GET", "/v1/webhook-endpoints"): lambda: ("/v1/webhook-endpoints", None),
        ("POST", "/v1/webhook-endpoints"): lambda: ("/v1/webhook-endpoints", WEBHOOK),
        ("GET", "/v1/webhook-endpoints/{id}"): lambda: (one, None),
        ("PATCH", "/v1/webhook-endpoints/{id}"): lambda: (one, {"status": "disabled"}),
        ("DELETE", "/v1/webhook-endpoints/{id}"): lambda: (one, None),
        ("POST", "/v1/webhook-endpoints/{id}/rotate-secret"): lambda: (
            f"{one}/rotate-secret", {},
        ),
        ("GET", "/v1/webhook-endpoints/{id}/deliveries"): lambda: (f"{one}/deliveries", None),
        ("POST", "/v1/webhook-endpoints/{id}/deliveries/{delivery_id}/replay"): lambda: (
            f"{one}/deliveries/{tenant.delivery_id}/replay", None,
        ),
    }  # fmt: skip


def webhook_actions(owner: Caller, db: Db) -> dict[tuple[str, str], Callable[[], tuple[str, Any]]]:
    """The webhook routes on an endpoint made for the action (with a delivery of
    its own), never the shared one."""

    def made() -> str:
        r = owner.post("/v1/webhook-endpoints", WEBHOOK)
        assert r.status_code == 201, r.text
        return f"/v1/webhook-endpoints/{r.json()['webhook_endpoint']['id']}"

    def replay() -> tuple[str, Any]:
        endpoint_id, webhook_id = arrange_webhook(owner, db)
        return f"/v1/webhook-endpoints/{endpoint_id}/deliveries/{webhook_id}/replay", None

    return {
        ("GET", "/v1/webhook-endpoints"): lambda: ("/v1/webhook-endpoints", None),
        ("POST", "/v1/webhook-endpoints"): lambda: ("/v1/webhook-endpoints", WEBHOOK),
        ("GET", "/v1/webhook-endpoints/{id}"): lambda: (made(), None),
        ("PATCH", "/v1/webhook-endpoints/{id}"): lambda: (made(), {"description": "x"}),
        ("DELETE", "/v1/webhook-endpoints/{id}"): lambda: (made(), None),
        ("POST", "/v1/webhook-endpoints/{id}/rotate-secret"): lambda: (
            f"{made()}/rotate-secret", {"overlap_seconds": 60},
        ),
        ("GET", "/v1/webhook-endpoints/{id}/deliveries"): lambda: (f"{made()}/deliveries", None),
        ("POST", "/v1/webhook-endpoints/{id}/deliveries/{delivery_id}/replay"): replay,
    }  # fmt: skip


def harmless_probe(spec: RouteSpec) -> tuple[str, Any]:
    """A request that passes authorization and then changes nothing: an id that
    exists nowhere, or a body with a field no schema knows."""
    path = spec.path.replace("{id}", f"nowhere-{secrets.token_hex(3)}")
    return path, ({"no_such_field": 1} if spec.request else None)


def state_of(tenant: Tenant) -> dict[str, Any]:
    owner = tenant.owner
    state = {}
    for path in (
        "/v1/accounts",
        "/v1/transfers",
        "/v1/events",
        "/v1/members",
        "/v1/api-keys",
        "/v1/webhook-endpoints",
        f"/v1/webhook-endpoints/{tenant.webhook_id}/deliveries",
    ):
        r = owner.get(path, params={"limit": "1000"})
        assert r.status_code == 200, r.text
        state[path] = r.json()["data"]
    return state


@pytest.mark.parametrize("spec", [param(s) for s in AUTHORIZED_ROUTES])
def test_every_route_refuses_every_credential_without_its_scope(
    tenant: Tenant, spec: RouteSpec
) -> None:
    callers = tenant.callers()
    refused = [c for c in callers.values() if not c.may(spec.scope)]
    allowed = [c for c in callers.values() if c.may(spec.scope)]
    assert allowed, spec.path
    assert refused, spec.path
    before = state_of(tenant)
    for caller in refused:
        path, body = real_request(spec, tenant)
        r = caller.request(spec.method, path, json=body)
        assert_problem(r, 403, "forbidden")
        assert spec.scope in r.json()["detail"] or spec.scope == ADMIN, r.text
    assert state_of(tenant) == before
    for caller in allowed:
        path, body = harmless_probe(spec)
        r = caller.request(spec.method, path, json=body)
        assert r.status_code in (200, 404, 422), (caller.name, r.text)
        if r.status_code != 200:
            assert r.json()["code"] in (
                "not_found",
                "pending_transfer_not_found",
                "validation_error",
            ), (caller.name, r.text)
    assert state_of(tenant) == before


def test_each_role_holds_the_scopes_the_contract_gives_it(tenant: Tenant) -> None:
    """api.md §6: viewers read, operators also write, owners and admins also manage."""
    reads = {"accounts:read", "transfers:read", "events:read"}
    writes = {"accounts:write", "transfers:write"}
    expected = {
        "owner": reads | writes | {ADMIN},
        "admin": reads | writes | {ADMIN},
        "operator": reads | writes,
        "viewer": reads,
    }
    for role, person in tenant.people.items():
        r = person.get("/v1/me")
        assert r.status_code == 200, r.text
        assert set(r.json()["scopes"]) == expected[role], role


# -- the admin routes, each with every kind of admin ----------------------------------------


def admin_action(spec: RouteSpec, tenant: Tenant, db: Db) -> tuple[str, Any]:
    """A request the route should carry out for an admin, on an object made for it
    (never one the shared tenant's other tests rely on)."""
    owner = tenant.owner
    actions: dict[tuple[str, str], Callable[[], tuple[str, Any]]] = {
        ("GET", "/v1/members"): lambda: ("/v1/members", None),
        ("POST", "/v1/members"): lambda: (
            "/v1/members", {"email": unique_email("invited"), "role": "operator"},
        ),
        ("PATCH", "/v1/members/{id}"): lambda: (
            f"/v1/members/{invite(owner, 'operator')[0]}", {"role": "viewer"},
        ),
        ("DELETE", "/v1/members/{id}"): lambda: (
            f"/v1/members/{invite(owner, 'viewer')[0]}", None,
        ),
        ("GET", "/v1/api-keys"): lambda: ("/v1/api-keys", None),
        ("POST", "/v1/api-keys"): lambda: (
            "/v1/api-keys", {"name": "made-by-admin", "scopes": ["admin"]},
        ),
        ("DELETE", "/v1/api-keys/{id}"): lambda: (
            f"/v1/api-keys/{make_key(owner, 'doomed', ['events:read']).key_id}", None,
        ),
        ("GET", "/v1/audit-events"): lambda: ("/v1/audit-events", None),
        **webhook_actions(owner, db),
    }  # fmt: skip
    if (spec.method, spec.path) not in actions:
        pytest.fail(f"{spec.method} {spec.path}: add an admin action to admin_action")
    return actions[(spec.method, spec.path)]()


@pytest.mark.parametrize("who", ["user:owner", "user:admin", "key:admin", "key:all"])
@pytest.mark.parametrize("spec", [param(s) for s in ADMIN_ROUTES])
def test_every_admin_route_serves_the_owner_and_the_admins(
    tenant: Tenant, db: Db, spec: RouteSpec, who: str
) -> None:
    caller = tenant.callers()[who]
    path, body = admin_action(spec, tenant, db)
    r = caller.request(spec.method, path, json=body)
    assert r.status_code in spec.success, (who, r.text)


@pytest.mark.parametrize(
    "who",
    ["user:operator", "user:viewer", "key:read-only", "key:accounts:write",
     "key:transfers:write", "key:events:read"],
)  # fmt: skip
@pytest.mark.parametrize("spec", [param(s) for s in ADMIN_ROUTES])
def test_every_admin_route_refuses_operators_viewers_and_other_keys(
    tenant: Tenant, db: Db, spec: RouteSpec, who: str
) -> None:
    caller = tenant.callers()[who]
    path, body = admin_action(spec, tenant, db)
    before = state_of(tenant)
    assert_problem(caller.request(spec.method, path, json=body), 403, "forbidden")
    assert state_of(tenant) == before


def test_a_read_key_minted_by_an_admin_key_is_still_a_read_key(tenant: Tenant) -> None:
    minted = make_key(tenant.keys["all"], "minted", ["accounts:read"])
    assert_problem(minted.get("/v1/members"), 403, "forbidden")
    assert_problem(minted.post("/v1/accounts", {"currency": "USD"}), 403, "forbidden")
    assert minted.get("/v1/accounts").status_code == 200


# -- open routes, /v1/me, methods ------------------------------------------------------------

OPEN_ROUTES = {
    ("POST", "/v1/signup"),
    ("POST", "/v1/auth/login"),
    ("POST", "/v1/auth/refresh"),
    ("POST", "/v1/auth/accept-invitation"),
}


def test_only_signup_login_refresh_and_accepting_an_invitation_need_no_credential() -> None:
    assert {(s.method, s.path) for s in ROUTES if not s.auth} == OPEN_ROUTES
    for spec in ROUTES:
        assert spec.path.startswith("/v1/"), spec.path
        if (spec.method, spec.path) not in OPEN_ROUTES:
            assert spec.auth, spec.path


def test_me_answers_every_credential_with_its_own_rights(tenant: Tenant) -> None:
    for name, caller in tenant.callers().items():
        r = caller.get("/v1/me")
        assert r.status_code == 200, (name, r.text)
        me = r.json()
        assert me["tenant_id"] == tenant.id
        assert set(me["scopes"]) == caller.scopes, name


def served_at(spec: RouteSpec, path: str) -> bool:
    return re.fullmatch(re.sub(r"\{\w+\}", "[^/]+", spec.path), path) is not None


def test_methods_the_route_table_does_not_list_are_405_and_overrides_do_nothing(
    tenant: Tenant,
) -> None:
    owner: Caller = tenant.owner
    viewer = tenant.people["viewer"]
    for spec in ROUTES:
        path = spec.path.replace("{id}", "src")
        for method in ("PUT", "DELETE", "PATCH", "POST", "GET"):
            if any(s.method == method and served_at(s, path) for s in ROUTES):
                continue
            r = owner.request(method, path, json={})
            assert_problem(r, 405, "method_not_allowed")
    operator_id = tenant.people["operator"].user_id
    for override in ("X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override"):
        r = viewer.get("/v1/members", headers={override: "POST"})
        assert_problem(r, 403, "forbidden")
        r = viewer.post(
            "/v1/accounts/src?_method=PATCH", {"status": "closed"}, headers={override: "PATCH"}
        )
        assert_problem(r, 405, "method_not_allowed")
        r = owner.post(f"/v1/members/{operator_id}", {}, headers={override: "DELETE"})
        assert_problem(r, 405, "method_not_allowed")
    assert tenant.people["operator"].get("/v1/me").status_code == 200
    assert owner.get("/v1/accounts/src").json()["status"] == "open"


# -- /graphql: every field checks the scope of the REST route that serves its data -------

GRAPHQL_READS = {
    '{ account(id: "src") { id } }': ("accounts:read",),
    "{ accounts { nodes { id } } }": ("accounts:read",),
    '{ balanceHistory(accountId: "src") { nodes { version } } }': ("accounts:read",),
    '{ transfer(id: "paid") { id } }': ("transfers:read",),
    "{ transfers { nodes { id } } }": ("transfers:read",),
    "{ events { nodes { sequence } } }": ("events:read",),
    # Nested: the account is read with accounts:read, its transfers need transfers:read.
    '{ account(id: "src") { lastTransfers { id } } }': ("accounts:read", "transfers:read"),
    '{ transfer(id: "paid") { debitAccount { id } } }': ("transfers:read", "accounts:read"),
    '{ account(id: "src") { balanceHistory { nodes { version } } } }': ("accounts:read",),
}
GRAPHQL_TRANSFER = '{debitAccountId: "src", creditAccountId: "dst", amount: 1}'
GRAPHQL_WRITES = {
    'mutation { createAccount(input: {id: "gql-fl", currency: "USD"}) { id } }': "accounts:write",
    "mutation { createTransfer(input: " + GRAPHQL_TRANSFER + ") { id } }": "transfers:write",
    'mutation { postTransfer(id: "hold") { id } }': "transfers:write",
    'mutation { voidTransfer(id: "hold") { id } }': "transfers:write",
    "mutation { createTransferBatch(input: {transfers: [" + GRAPHQL_TRANSFER + "]})"
    " { results { status } } }": "transfers:write",
}  # fmt: skip


@pytest.mark.parametrize("query", sorted(GRAPHQL_READS))
def test_graphql_reads_need_the_scopes_of_their_data(tenant: Tenant, query: str) -> None:
    for name, caller in tenant.callers().items():
        out = graphql(caller, query)
        allowed = all(caller.may(scope) for scope in GRAPHQL_READS[query])
        if allowed:
            assert "errors" not in out, (name, out)
        else:
            assert graphql_codes(out) == ["forbidden"], (name, out)
            assert out["data"] is None or "src" not in str(out["data"]), (name, out)


@pytest.mark.parametrize("mutation", sorted(GRAPHQL_WRITES))
def test_graphql_mutations_without_the_scope_are_refused_and_change_nothing(
    tenant: Tenant, mutation: str
) -> None:
    scope = GRAPHQL_WRITES[mutation]
    state = '{ transfer(id: "hold") { status } account(id: "src") { version debitsPosted } }'
    before = graphql(tenant.keys["all"], state)
    for name, caller in tenant.callers().items():
        if caller.may(scope):
            continue
        out = graphql(caller, mutation)
        assert graphql_codes(out) == ["forbidden"], (name, out)
        assert out["data"] is None, (name, out)
    assert graphql(tenant.keys["all"], state) == before
    assert graphql_codes(graphql(tenant.keys["all"], '{ account(id: "gql-fl") { id } }')) == [
        "not_found"
    ]


# -- the console: the same scopes, per page and per form ----------------------------------

CONSOLE_SCOPED = [r for r in CONSOLE_ROUTES if r.auth and r.scope]


@pytest.mark.parametrize(
    "route", [pytest.param(r, id=f"{r.method} {r.path}") for r in CONSOLE_SCOPED]
)
def test_every_console_page_and_form_refuses_a_role_without_its_scope(
    tenant: Tenant, consoles: dict[str, Browser], route: ConsoleRoute
) -> None:
    for role, browser in consoles.items():
        allowed = route.scope in ROLE_SCOPES[role] or ADMIN in ROLE_SCOPES[role]
        if allowed and route.method == "POST":
            continue  # it would do its work; the pages and tests/api/test_console.py do
        r = console_call(browser, route, console_path(route))
        if allowed:
            assert r.status_code not in (401, 403), (role, r.status_code)
            assert r.status_code < 500, r.text
        else:
            assert r.status_code == 403, (role, route.path, r.status_code)
            assert "Not allowed" in r.text
    # Nothing was done by the refused forms.
    owner = tenant.keys["all"]
    assert owner.get("/v1/accounts/console-probe").status_code == 404
    assert owner.get("/v1/transfers/hold").json()["status"] == "pending"


def test_the_console_pages_open_without_a_session_are_login_and_its_stylesheet() -> None:
    open_routes = {(r.method, r.path) for r in CONSOLE_ROUTES if not r.auth}
    assert open_routes == {("GET", "/console/login"), ("POST", "/console/login")}

"""API1:2023 Broken Object Level Authorization.

What this module proves, for every route of ``tally.api.openapi.ROUTES`` whose
path names an object (``{id}``), so that a route added later is covered (or the
test names the object it needs):

- another tenant's object answers 404, exactly as an id that exists nowhere
  (same status, code, title and detail), never 403 and never the object, even
  to the other tenant's owner and its all-scope API key; and the object is left
  unchanged (api.md §1);
- lists, filters and request bodies that name another tenant's objects show or
  touch none of them;
- inside one tenant, a credential without the route's scope gets 403 and no
  field of the object, and one with the scope gets the object; an admin (user or
  admin-scoped key) cannot change or disable the owner, nor make itself owner.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

import httpx
import pytest

from tally.api.endpoint import RouteSpec
from tally.api.openapi import ROUTES
from tally.console import CONSOLE_ROUTES
from tally.console.web import ConsoleRoute
from tests.security.conftest import (
    Tenant,
    assert_problem,
    console_call,
    console_of,
    console_path,
    graphql,
    graphql_codes,
    join,
    make_key,
    read_all,
    ws_messages,
)

ID_ROUTES = [s for s in ROUTES if "{id}" in s.path]
ID_ROUTE_PARAMS = [pytest.param(s, id=f"{s.method} {s.path}") for s in ID_ROUTES]
# A well-formed body for each write route that takes one, so that only the
# object's owner decides the answer.
BODIES: dict[tuple[str, str], Any] = {
    ("PATCH", "/v1/accounts/{id}"): {"status": "closed"},
    ("POST", "/v1/transfers/{id}/post"): {},
    ("POST", "/v1/transfers/{id}/void"): {},
    ("PATCH", "/v1/members/{id}"): {"role": "viewer"},
    ("PATCH", "/v1/webhook-endpoints/{id}"): {"status": "disabled"},
    ("POST", "/v1/webhook-endpoints/{id}/rotate-secret"): {},
}
NOT_FOUND_CODES = ("not_found", "pending_transfer_not_found")


def object_of(spec: RouteSpec, tenant: Tenant) -> str:
    """The id of tenant A's object that the route's ``{id}`` names."""
    prefix = spec.path.partition("{id}")[0]
    objects = {
        "/v1/accounts/": "src",
        "/v1/transfers/": "hold",
        "/v1/members/": tenant.people["admin"].user_id,
        "/v1/api-keys/": tenant.keys["all"].key_id,
        "/v1/webhook-endpoints/": tenant.webhook_id,
    }
    if prefix not in objects:
        pytest.fail(f"{spec.method} {spec.path}: name the object its id refers to in object_of")
    return objects[prefix]


def path_of(spec: RouteSpec, tenant: Tenant, target: str) -> str:
    """The route's path naming ``target``; a delivery of a webhook endpoint is
    tenant A's real one (so only the endpoint's owner decides the answer)."""
    return spec.path.replace("{id}", target).replace("{delivery_id}", tenant.delivery_id)


def body_of(spec: RouteSpec) -> Any:
    if spec.request is None:
        return None
    if (spec.method, spec.path) not in BODIES:
        pytest.fail(f"{spec.method} {spec.path}: add a well-formed body to BODIES")
    return BODIES[(spec.method, spec.path)]


def state_of(tenant: Tenant) -> dict[str, Any]:
    """What a request against tenant A's objects could change, read by its owner."""
    owner = tenant.owner
    state = {}
    for path in (
        "/v1/accounts/src",
        "/v1/transfers/hold",
        "/v1/members",
        "/v1/api-keys",
        "/v1/webhook-endpoints",
        f"/v1/webhook-endpoints/{tenant.webhook_id}/deliveries",
    ):
        r = owner.get(path, params={"limit": "1000"} if path.count("/") == 2 else None)
        assert r.status_code == 200, r.text
        state[path] = r.json()
    return state


def comparable(r: httpx.Response, requested_id: str) -> dict[str, Any]:
    """The problem without what differs between any two requests (the request id, and
    the id the caller sent, which the detail may echo)."""
    problem: dict[str, Any] = r.json()
    problem.pop("request_id", None)
    problem["detail"] = problem["detail"].replace(requested_id, "<id>")
    return problem


# -- another tenant's objects --------------------------------------------------------------


@pytest.mark.parametrize("attacker", ["user:owner", "key:all"])
@pytest.mark.parametrize("spec", ID_ROUTE_PARAMS)
def test_another_tenants_object_answers_404_like_an_id_that_exists_nowhere(
    tenant: Tenant, stranger: Tenant, spec: RouteSpec, attacker: str
) -> None:
    caller = stranger.callers()[attacker]
    target = object_of(spec, tenant)
    body = body_of(spec)
    before = state_of(tenant)

    r = caller.request(spec.method, path_of(spec, tenant, target), json=body)
    assert r.status_code == 404, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] in NOT_FOUND_CODES, r.text
    nowhere = f"nowhere-{secrets.token_hex(4)}"
    twin = caller.request(spec.method, path_of(spec, tenant, nowhere), json=body)
    assert twin.status_code == 404, twin.text
    assert comparable(r, target) == comparable(twin, nowhere)
    assert state_of(tenant) == before


@pytest.mark.parametrize("attacker", ["user:owner", "key:all"])
def test_another_tenants_lists_show_none_of_this_tenants_objects(
    tenant: Tenant, stranger: Tenant, attacker: str
) -> None:
    caller = stranger.callers()[attacker]
    secrets_of_a = [
        tenant.id,
        *(p.user_id for p in tenant.people.values()),
        *(p.email for p in tenant.people.values()),
        *(k.key_id for k in tenant.keys.values()),
        tenant.webhook_id,
        tenant.delivery_id,
    ]
    lists = [s for s in ROUTES if s.method == "GET" and "{" not in s.path and s.auth]
    assert {s.path for s in lists} >= {"/v1/accounts", "/v1/members", "/v1/audit-events"}
    for spec in lists:
        r, shown = read_all(caller, spec.path)
        assert r.status_code == 200, (spec.path, r.text)
        if spec.path == "/v1/audit-events":
            for event in shown["data"]:
                assert event["actor"]["id"] in (None, *stranger_ids(stranger)), event
                # The ids tenant B's own requests named (other tests probe A's objects
                # from B): B sent them, so B knows them; they are not A's to hide.
                event.pop("object_id")
        text = json.dumps(shown)
        for value in secrets_of_a:
            assert value not in text, (spec.path, value)
        if spec.path in ("/v1/accounts", "/v1/transfers", "/v1/events", "/v1/events/stream"):
            assert shown["data"] == [], spec.path  # tenant B owns no ledger object


def stranger_ids(stranger: Tenant) -> list[str]:
    r = stranger.owner.get("/v1/members", params={"limit": "1000"})
    keys = stranger.owner.get("/v1/api-keys", params={"limit": "1000"})
    assert r.status_code == keys.status_code == 200
    return [m["id"] for m in r.json()["data"]] + [k["id"] for k in keys.json()["data"]]


def test_filters_naming_another_tenants_objects_find_nothing(
    tenant: Tenant, stranger: Tenant
) -> None:
    caller = stranger.keys["all"]
    for account in ("src", "dst"):
        r = caller.get("/v1/transfers", params={"account_id": account})
        assert r.status_code == 200, r.text
        assert r.json()["data"] == []
    r = caller.get("/v1/accounts/src/balances", params={"at": "2100-01-01T00:00:00Z"})
    assert_problem(r, 404, "not_found")


def test_bodies_naming_another_tenants_objects_touch_none_of_them(
    tenant: Tenant, stranger: Tenant
) -> None:
    caller = stranger.keys["all"]
    before = state_of(tenant)
    transfer = {"debit_account_id": "src", "credit_account_id": "dst", "amount": 1}
    assert_problem(caller.post("/v1/transfers", transfer), 422, "debit_account_not_found")
    items = [transfer, {"pending_id": "hold", "action": "post"}]
    r = caller.post("/v1/transfers/batch", {"transfers": items})
    assert r.status_code == 200, r.text
    codes = [x["error"]["code"] for x in r.json()["results"]]
    assert codes == ["debit_account_not_found", "pending_transfer_not_found"]
    assert state_of(tenant) == before


def test_a_restricted_caller_of_another_tenant_learns_nothing_from_an_id(
    tenant: Tenant, stranger: Tenant
) -> None:
    """Without the scope the answer is 403 for every id, so it is no oracle either."""
    read_only = make_key(stranger.owner, "b-read", ["accounts:read"])
    for spec in ID_ROUTES:
        if read_only.may(spec.scope):
            continue
        body, target = body_of(spec), object_of(spec, tenant)
        mine = read_only.request(spec.method, path_of(spec, tenant, target), json=body)
        nowhere = read_only.request(spec.method, path_of(spec, tenant, "nowhere"), json=body)
        assert_problem(mine, 403, "forbidden")
        assert comparable(mine, "x") == comparable(nowhere, "x"), spec.path


# -- inside one tenant: roles and scopes ----------------------------------------------------


OBJECT_FIELDS = {"currency", "balance", "amount", "email", "role", "scopes", "debit_account_id"}


@pytest.mark.parametrize("spec", ID_ROUTE_PARAMS)
def test_a_credential_without_the_scope_gets_403_and_no_field_of_the_object(
    tenant: Tenant, spec: RouteSpec
) -> None:
    target = object_of(spec, tenant)
    refused = [c for c in tenant.callers().values() if not c.may(spec.scope)]
    assert refused, f"{spec.path}: every credential may use it; is its scope right?"
    before = state_of(tenant)
    for caller in refused:
        r = caller.request(spec.method, path_of(spec, tenant, target), json=body_of(spec))
        problem = assert_problem(r, 403, "forbidden")
        assert not OBJECT_FIELDS & problem.keys(), (caller.name, problem)
    assert state_of(tenant) == before


@pytest.mark.parametrize(
    "spec", [pytest.param(s, id=f"{s.method} {s.path}") for s in ID_ROUTES if s.method == "GET"]
)
def test_a_credential_with_the_scope_reads_the_object(tenant: Tenant, spec: RouteSpec) -> None:
    target = object_of(spec, tenant)
    allowed = [c for c in tenant.callers().values() if c.may(spec.scope)]
    assert allowed
    for caller in allowed:
        r = caller.get(path_of(spec, tenant, target))
        assert r.status_code == 200, (caller.name, r.text)
        data = r.json()
        item = data["data"][0] if "data" in data else data
        found = item.get("account_id") or item.get("endpoint_id") or item["id"]
        assert found == target, caller.name


def test_an_admin_cannot_change_or_disable_the_owner_nor_become_owner(tenant: Tenant) -> None:
    admin = join(tenant.owner, "admin")
    owner_id = tenant.owner.user_id
    for caller in (admin, tenant.keys["admin"]):
        for role in ("admin", "viewer", "owner"):
            r = caller.patch(f"/v1/members/{owner_id}", {"role": role})
            assert_problem(r, 403, "forbidden")
        assert_problem(caller.delete(f"/v1/members/{owner_id}"), 403, "forbidden")
    assert_problem(admin.patch(f"/v1/members/{admin.user_id}", {"role": "owner"}), 403, "forbidden")
    r = tenant.keys["admin"].patch(f"/v1/members/{admin.user_id}", {"role": "owner"})
    assert_problem(r, 403, "forbidden")
    me = tenant.owner.get("/v1/me")
    assert me.status_code == 200, me.text
    assert me.json()["role"] == "owner"
    assert admin.get("/v1/me").json()["role"] == "admin"


# -- /graphql: the same objects, through every field that names one, nested or not ---------

GRAPHQL_BY_ID = {
    "account": '{ account(id: "ID") { id balance { posted } } }',
    "transfer": '{ transfer(id: "ID") { id amount } }',
    "balanceHistory": '{ balanceHistory(accountId: "ID") { nodes { version } } }',
}
GRAPHQL_OBJECT_OF = {"account": "src", "transfer": "paid", "balanceHistory": "src"}


@pytest.mark.parametrize("field", sorted(GRAPHQL_BY_ID))
def test_graphql_answers_another_tenants_object_as_one_that_exists_nowhere(
    tenant: Tenant, stranger: Tenant, field: str
) -> None:
    own = graphql(tenant.keys["all"], GRAPHQL_BY_ID[field].replace("ID", GRAPHQL_OBJECT_OF[field]))
    assert "errors" not in own, own  # the control: the object exists, for its tenant
    for caller in (stranger.owner, stranger.keys["all"]):
        theirs = graphql(caller, GRAPHQL_BY_ID[field].replace("ID", GRAPHQL_OBJECT_OF[field]))
        nowhere = graphql(caller, GRAPHQL_BY_ID[field].replace("ID", "nowhere0"))
        assert graphql_codes(theirs) == graphql_codes(nowhere) == ["not_found"]
        assert theirs["data"] is None
        detail = theirs["errors"][0]["message"].replace(GRAPHQL_OBJECT_OF[field], "?")
        assert detail == nowhere["errors"][0]["message"].replace("nowhere0", "?")


def test_graphql_lists_and_filters_show_none_of_another_tenants_objects(
    tenant: Tenant, stranger: Tenant
) -> None:
    caller = stranger.keys["all"]
    out = graphql(
        caller,
        '{ accounts(first: 1000) { nodes { id } } transfers(accountId: "src") { nodes { id } }'
        " events(first: 1000) { nodes { data } } }",
    )
    assert "errors" not in out, out
    ids = [a["id"] for a in out["data"]["accounts"]["nodes"]]
    assert "src" not in ids and "dst" not in ids
    assert out["data"]["transfers"]["nodes"] == []
    assert all(e["data"].get("id") not in ("src", "dst", "paid", "hold")
               for e in out["data"]["events"]["nodes"])  # fmt: skip


def test_graphql_nested_fields_reach_only_the_callers_own_tenant(
    tenant: Tenant, stranger: Tenant
) -> None:
    caller = stranger.keys["all"]
    suffix = secrets.token_hex(3)
    for name in ("src", "dst"):  # the same ids as tenant A's, in tenant B
        made = graphql(
            caller,
            f'mutation {{ createAccount(input: {{id: "{name}-{suffix}", currency: "EUR"}})'
            " { id } }",
        )
        assert "errors" not in made, made
    out = graphql(
        caller,
        "mutation { createTransfer(input: {"
        f'debitAccountId: "src-{suffix}", creditAccountId: "dst-{suffix}", amount: 3}})'
        " { id debitAccount { id currency lastTransfers { id } } creditAccount { id currency } } }",
    )
    assert "errors" not in out, out
    transfer = out["data"]["createTransfer"]
    assert transfer["debitAccount"]["currency"] == transfer["creditAccount"]["currency"] == "EUR"
    assert [t["id"] for t in transfer["debitAccount"]["lastTransfers"]] == [transfer["id"]]
    # Tenant A's accounts, seen through tenant A's own nested fields, never show B's.
    own = graphql(tenant.keys["all"], '{ account(id: "src") { lastTransfers(first: 100) { id } } }')
    assert transfer["id"] not in [t["id"] for t in own["data"]["account"]["lastTransfers"]]


def test_graphql_mutations_naming_another_tenants_objects_touch_none_of_them(
    tenant: Tenant, stranger: Tenant
) -> None:
    before = graphql(
        tenant.keys["all"], '{ transfer(id: "hold") { status } account(id: "src") { version } }'
    )
    caller = stranger.keys["all"]
    attempts = {
        'mutation { postTransfer(id: "hold") { id } }': "pending_transfer_not_found",
        'mutation { voidTransfer(id: "hold") { id } }': "pending_transfer_not_found",
        "mutation { createTransfer(input: {"
        'debitAccountId: "src", creditAccountId: "dst", amount: 1}) { id } }': (
            "debit_account_not_found"
        ),
        "mutation { createTransferBatch(input: {"
        'transfers: [{pendingId: "hold", action: "void"}]}) { results { error { code } } } }': "",
    }  # fmt: skip
    for mutation, expected in attempts.items():
        out = graphql(caller, mutation)
        if expected:
            assert graphql_codes(out) == [expected], out
        else:
            (result,) = out["data"]["createTransferBatch"]["results"]
            assert result["error"]["code"] == "pending_transfer_not_found"
    after = graphql(
        tenant.keys["all"], '{ transfer(id: "hold") { status } account(id: "src") { version } }'
    )
    assert after == before


# -- the console: another tenant's objects are not found there either ---------------------

CONSOLE_ID_ROUTES = [
    pytest.param(r, id=f"{r.method} {r.path}") for r in CONSOLE_ROUTES if "{id}" in r.path
]


@pytest.mark.parametrize("route", CONSOLE_ID_ROUTES)
def test_the_console_answers_another_tenants_object_like_one_that_exists_nowhere(
    tenant: Tenant, stranger: Tenant, route: ConsoleRoute
) -> None:
    # Tenant A's real objects (its member is the owner's own id) against ids that
    # exist nowhere, both asked by tenant B's owner, who holds every scope.
    objects = {
        "accounts": "src",
        "transfers": "hold",
        "api-keys": tenant.keys["read-only"].key_id,
        "members": tenant.owner.user_id,
    }
    area = route.path.split("/")[2]
    attacker = console_of(stranger.owner)
    theirs = console_call(attacker, route, console_path(route, objects[area]))
    nowhere = console_call(attacker, route, console_path(route, f"nowhere-{secrets.token_hex(3)}"))
    assert theirs.status_code == nowhere.status_code == 404, (theirs.text, nowhere.text)
    assert "Not found" in theirs.text
    owner = tenant.keys["all"]
    assert owner.get("/v1/transfers/hold").json()["status"] == "pending"
    assert tenant.keys["read-only"].get("/v1/accounts").status_code == 200
    assert owner.get("/v1/accounts/src").json()["currency"] == "USD"


def test_another_tenants_event_streams_show_none_of_this_tenants_events(
    tenant: Tenant, stranger: Tenant
) -> None:
    caller = stranger.keys["all"]
    # The stranger's own events only (other tests of the session may have written
    # some in its tenant): exactly what its short poll lists, none of this tenant's.
    own = caller.get("/v1/events", params={"after": "0", "limit": "1000"}).json()["data"]
    r, shown = read_all(caller, "/v1/events/stream")
    assert r.status_code == 200 and shown["data"] == own
    assert tenant.id not in r.text
    r = caller.get("/v1/events", params={"after": "0", "wait_seconds": "1"})
    assert r.status_code == 200 and r.json()["data"] == own[:100]
    with caller.client.websocket_connect("/v1/events/ws?after=0", headers=caller.headers) as ws:
        messages, code = ws_messages(ws)
    assert code == 1000
    assert [m for m in messages if "sequence" in m] == own

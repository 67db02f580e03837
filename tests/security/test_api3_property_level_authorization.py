"""API3:2023 Broken Object Property Level Authorization.

What this module proves:

- mass assignment is refused: a request body that sets a property the caller may
  only read (a role, a tenant, a status, an owner, a secret, the running totals
  and balance of an account, a transfer's status or times) answers 422
  ``validation_error`` naming the field, and changes nothing; a role or scope can
  only be granted through the fields meant for it, and never beyond what the
  granter holds;
- excessive data exposure is absent: no response, to anyone, carries a password
  or its hash, a token's or key's hash, a signing key, or a secret other than the
  one the creating response shows once; lists of keys show a prefix only.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from tally.api.openapi import ROUTES
from tests.security.conftest import (
    PASSWORD,
    Caller,
    Tenant,
    assert_problem,
    graphql,
    graphql_codes,
    invite,
    join,
    make_key,
    read_all,
    unique_email,
)


def assert_refused_field(r: httpx.Response, field: str) -> None:
    problem = assert_problem(r, 422, "validation_error")
    assert [e["field"] for e in problem["errors"]] == [field], problem
    assert problem["errors"][0]["code"] == "unknown_field", problem


# -- ledger objects: totals, status, tenant ---------------------------------------------------

ACCOUNT_READ_ONLY = {
    "debits_posted": 1_000_000,
    "credits_posted": 1_000_000,
    "debits_pending": 5,
    "credits_pending": 5,
    "balance": {"posted": 1_000_000, "pending": 0, "available": 1_000_000},
    "status": "closed",
    "version": 99,
    "tenant_id": "ten_attacker",
    "created_at": "2000-01-01T00:00:00.000000Z",
    "object": "account",
}


@pytest.mark.parametrize("field", sorted(ACCOUNT_READ_ONLY))
def test_an_account_cannot_be_created_with_read_only_properties(tenant: Tenant, field: str) -> None:
    caller = tenant.keys["all"]
    account_id = f"mass-{field}"
    body = {"id": account_id, "currency": "USD", field: ACCOUNT_READ_ONLY[field]}
    assert_refused_field(caller.post("/v1/accounts", body), field)
    assert_problem(caller.get(f"/v1/accounts/{account_id}"), 404, "not_found")


UPDATE_READ_ONLY = {
    **{k: v for k, v in ACCOUNT_READ_ONLY.items() if k != "status"},
    "currency": "EUR",
    "normal_balance": "debit",
    "flags": {"debits_must_not_exceed_credits": False},
    "id": "renamed",
}


@pytest.mark.parametrize("field", sorted(UPDATE_READ_ONLY))
def test_an_account_update_cannot_set_read_only_properties(tenant: Tenant, field: str) -> None:
    caller = tenant.keys["all"]
    before = caller.get("/v1/accounts/src").json()
    body = {"metadata": {"note": "x"}, field: UPDATE_READ_ONLY[field]}
    assert_refused_field(caller.patch("/v1/accounts/src", body), field)
    assert caller.get("/v1/accounts/src").json() == before


def test_an_account_update_can_only_close_not_reopen(tenant: Tenant) -> None:
    caller = tenant.keys["all"]
    r = caller.patch("/v1/accounts/src", {"status": "open"})
    problem = assert_problem(r, 422, "validation_error")
    assert [e["field"] for e in problem["errors"]] == ["status"]


TRANSFER_READ_ONLY = {
    "status": "posted",
    "tenant_id": "ten_attacker",
    "created_at": "2000-01-01T00:00:00.000000Z",
    "pending_id": "hold",
    "sequence": 1,
    "object": "transfer",
}


@pytest.mark.parametrize("field", sorted(TRANSFER_READ_ONLY))
def test_a_transfer_cannot_be_created_with_read_only_properties(tenant: Tenant, field: str) -> None:
    caller = tenant.keys["all"]
    transfer_id = f"mass-{field}"
    body = {
        "id": transfer_id,
        "debit_account_id": "src",
        "credit_account_id": "dst",
        "amount": 1,
        field: TRANSFER_READ_ONLY[field],
    }
    assert_refused_field(caller.post("/v1/transfers", body), field)
    assert_problem(caller.get(f"/v1/transfers/{transfer_id}"), 404, "not_found")


@pytest.mark.parametrize(
    ("path", "field", "value"),
    [
        ("/v1/transfers/hold/post", "debit_account_id", "dst"),
        ("/v1/transfers/hold/post", "status", "posted"),
        ("/v1/transfers/hold/void", "amount", 40),
        ("/v1/transfers/hold/void", "credit_account_id", "src"),
    ],
)
def test_post_and_void_take_no_transfer_properties(
    tenant: Tenant, path: str, field: str, value: Any
) -> None:
    caller = tenant.keys["all"]
    assert_refused_field(caller.post(path, {field: value}), field)
    assert caller.get("/v1/transfers/hold").json()["status"] == "pending"


def test_a_batch_item_takes_no_read_only_property(tenant: Tenant) -> None:
    caller = tenant.keys["all"]
    item = {"debit_account_id": "src", "credit_account_id": "dst", "amount": 1, "status": "x"}
    r = caller.post("/v1/transfers/batch", {"transfers": [item]})
    problem = assert_problem(r, 422, "validation_error")
    assert problem["errors"][0]["field"].endswith("status"), problem
    r = caller.post("/v1/transfers/batch", {"transfers": [], "tenant_id": "ten_attacker"})
    assert_problem(r, 422, "validation_error")


# -- identity: roles, tenants, statuses, owners ------------------------------------------------


def test_signup_cannot_choose_a_role_a_tenant_or_a_status(
    tenant: Tenant, client: TestClient
) -> None:
    for field, value in {
        "role": "admin",
        "tenant_id": tenant.id,
        "status": "active",
        "user_id": tenant.owner.user_id,
        "scopes": ["admin"],
        "password_hash": "$argon2id$v=19$m=19456,t=2,p=1$x$y",
    }.items():
        email = unique_email("mass")
        body = {"email": email, "password": PASSWORD, "tenant_name": "mass", field: value}
        assert_refused_field(client.post("/v1/signup", json=body), field)
        r = client.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
        assert_problem(r, 401, "unauthenticated")
    members = tenant.owner.get("/v1/members", params={"limit": "1000"}).json()["data"]
    assert not [m for m in members if m["email"].startswith("mass-")]


def test_login_and_refresh_take_no_tenant_role_or_scope(tenant: Tenant, client: TestClient) -> None:
    viewer = tenant.people["viewer"]
    for field, value in {"tenant_id": "t", "role": "owner", "scopes": ["admin"]}.items():
        body = {"email": viewer.email, "password": PASSWORD, field: value}
        assert_refused_field(client.post("/v1/auth/login", json=body), field)
        body = {"refresh_token": viewer.refresh_token, field: value}
        assert_refused_field(client.post("/v1/auth/refresh", json=body), field)
    assert viewer.get("/v1/me").json()["role"] == "viewer"


def test_an_invitation_cannot_set_a_tenant_a_status_or_a_password(tenant: Tenant) -> None:
    for field, value in {
        "tenant_id": "ten_attacker",
        "status": "active",
        "password": PASSWORD,
        "id": "usr_chosen",
    }.items():
        email = unique_email("mass-invite")
        body = {"email": email, "role": "viewer", field: value}
        assert_refused_field(tenant.owner.post("/v1/members", body), field)
    r = tenant.owner.post("/v1/members", {"email": unique_email("x"), "role": "superuser"})
    assert_problem(r, 422, "validation_error")


def test_accepting_an_invitation_cannot_choose_a_role(tenant: Tenant, client: TestClient) -> None:
    user_id, _, token = invite(tenant.owner, "viewer")
    for field, value in {"role": "owner", "tenant_id": "t", "email": "other@example.com"}.items():
        body = {"token": token, "password": PASSWORD, field: value}
        r = client.post("/v1/auth/accept-invitation", json=body)
        assert_refused_field(r, field)
    r = client.post("/v1/auth/accept-invitation", json={"token": token, "password": PASSWORD})
    assert r.status_code == 200, r.text
    assert r.json()["role"] == "viewer"
    assert r.json()["id"] == user_id


def test_a_member_update_changes_the_role_only(tenant: Tenant) -> None:
    member_id, _, _ = invite(tenant.owner, "viewer")
    for field, value in {
        "status": "active",
        "email": "takeover@example.com",
        "tenant_id": "ten_attacker",
        "password": PASSWORD,
    }.items():
        r = tenant.owner.patch(f"/v1/members/{member_id}", {"role": "viewer", field: value})
        assert_refused_field(r, field)
    members = {m["id"]: m for m in tenant.owner.get("/v1/members?limit=1000").json()["data"]}
    assert members[member_id]["status"] == "invited"
    assert members[member_id]["role"] == "viewer"


def test_a_password_change_names_no_other_user(tenant: Tenant) -> None:
    viewer = tenant.people["viewer"]
    body = {
        "current_password": PASSWORD,
        "new_password": "another-Long-phrase-88",
        "user_id": tenant.owner.user_id,
    }
    assert_refused_field(viewer.post("/v1/users/me/password", body), "user_id")


def test_an_api_key_cannot_choose_its_id_tenant_owner_or_state(tenant: Tenant) -> None:
    for field, value in {
        "id": "chosenkeyid00000",
        "tenant_id": "ten_attacker",
        "created_by": tenant.people["viewer"].user_id,
        "revoked_at": None,
        "secret": "my-own-secret",
    }.items():
        body = {"name": "mass", "scopes": ["accounts:read"], field: value}
        assert_refused_field(tenant.owner.post("/v1/api-keys", body), field)
    r = tenant.owner.post("/v1/api-keys", {"name": "mass", "scopes": ["superuser"]})
    assert_problem(r, 422, "validation_error")


def test_nobody_grants_more_than_they_hold(tenant: Tenant) -> None:
    """An admin may not make an owner; a key made by a key holds no more than it."""
    admin = tenant.people["admin"]
    r = admin.post("/v1/members", {"email": unique_email("owner"), "role": "owner"})
    assert_problem(r, 403, "forbidden")
    member_id, _, _ = invite(tenant.owner, "viewer")
    assert_problem(admin.patch(f"/v1/members/{member_id}", {"role": "owner"}), 403, "forbidden")
    # A key without `admin` cannot make keys at all, so it cannot widen itself.
    narrow = make_key(tenant.owner, "narrow", ["accounts:read", "accounts:write"])
    r = narrow.post("/v1/api-keys", {"name": "wider", "scopes": ["transfers:write"]})
    assert_problem(r, 403, "forbidden")
    # `admin` opens every route, so an admin key holds every scope and may grant any:
    # the key it makes can do no more than the admin key itself already could.
    admin_key = make_key(tenant.owner, "admin-only", ["admin"])
    r = admin_key.post("/v1/api-keys", {"name": "child", "scopes": ["transfers:write"]})
    assert r.status_code == 201, r.text


# -- what responses show ----------------------------------------------------------------------

FORBIDDEN_KEYS = {
    "password",
    "password_hash",
    "secret_sha256",
    "token_sha256",
    "private_key_pem",
    "public_key_pem",
    "refresh_token_sha256",
}


def keys_in(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in keys_in(v)}
    if isinstance(value, list):
        return {k for v in value for k in keys_in(v)}
    return set()


def test_no_response_shows_a_hash_or_a_secret_it_did_not_just_create(
    tenant: Tenant, client: TestClient
) -> None:
    owner = tenant.owner
    secrets_in_play = [
        PASSWORD,
        owner.refresh_token,
        *(k.token for k in tenant.keys.values()),
        *(k.token.partition("_")[2].partition("_")[2] for k in tenant.keys.values()),
    ]
    member = join(owner, "viewer")
    secrets_in_play += [member.refresh_token, member.token]
    reads = [s for s in ROUTES if s.method == "GET" and "{" not in s.path and s.auth]
    callers: list[Caller] = [owner, tenant.keys["all"], member]
    for caller in callers:
        for spec in reads:
            r, shown = read_all(caller, spec.path)
            if r.status_code == 403:
                continue
            assert r.status_code == 200, (spec.path, r.text)
            assert not FORBIDDEN_KEYS & keys_in(shown), spec.path
            text = r.text
            for secret in secrets_in_play:
                assert secret not in text, (caller.name, spec.path)
    listed = owner.get("/v1/api-keys", params={"limit": "1000"}).json()["data"]
    for key in listed:
        assert "secret" not in key
        assert key["prefix"] == f"tly_{key['id']}"


def test_responses_that_create_a_secret_show_only_that_one(tenant: Tenant) -> None:
    r = tenant.owner.post("/v1/api-keys", {"name": "shown-once", "scopes": ["events:read"]})
    assert r.status_code == 201, r.text
    created = r.json()
    assert set(created) == {"api_key", "secret"}
    assert not FORBIDDEN_KEYS & keys_in(created)
    r = tenant.owner.post("/v1/members", {"email": unique_email("shown"), "role": "viewer"})
    assert r.status_code == 201, r.text
    assert set(r.json()) == {"member", "invitation_token", "invitation_expires_at"}
    assert not FORBIDDEN_KEYS & keys_in(r.json())
    assert json.dumps(r.json()).count("tli_") == 1


# -- /graphql: the inputs are REST's request Structs, so the same properties are read-only --


@pytest.mark.parametrize(
    ("mutation", "field"),
    [
        ('createAccount(input: {currency: "USD", FIELD: 1}) { id }', field)
        for field in ("balance", "debitsPosted", "creditsPosted", "status", "version", "createdAt")
    ]
    + [
        (
            'createTransfer(input: {debitAccountId: "src", creditAccountId: "dst", amount: 1,'
            " FIELD: 1}) { id }",
            field,
        )
        for field in ("status", "createdAt", "pendingId", "resolvedAt", "expiresAt")
    ],
)
def test_graphql_inputs_cannot_set_read_only_properties(
    tenant: Tenant, mutation: str, field: str
) -> None:
    out = graphql(tenant.keys["all"], "mutation { " + mutation.replace("FIELD", field) + " }")
    assert graphql_codes(out) == ["validation_error"], out
    assert field in out["errors"][0]["message"]
    assert "data" not in out


# -- webhook endpoints: their secret, state and owner ------------------------------------------

WEBHOOK_READ_ONLY = {
    "id": "whe_chosen",
    "tenant_id": "ten_attacker",
    "secret": "whsec_bXktb3duLXNlY3JldC1vZi0zMi1ieXRlcy1sb25nIQ==",
    "previous_secret": "whsec_x",
    "disabled_reason": "gone",
    "event_cursor": 0,
    "created_at": "2000-01-01T00:00:00.000000Z",
    "object": "webhook_endpoint",
}


@pytest.mark.parametrize("field", sorted({*WEBHOOK_READ_ONLY, "status"}))
def test_a_webhook_endpoint_cannot_be_created_with_read_only_properties(
    tenant: Tenant, field: str
) -> None:
    before = tenant.owner.get("/v1/webhook-endpoints", params={"limit": "1000"}).json()
    value = WEBHOOK_READ_ONLY.get(field, "disabled")
    body = {"url": "https://1.1.1.1/mass", "event_types": ["*"], field: value}
    assert_refused_field(tenant.owner.post("/v1/webhook-endpoints", body), field)
    assert tenant.owner.get("/v1/webhook-endpoints", params={"limit": "1000"}).json() == before


@pytest.mark.parametrize("field", sorted(WEBHOOK_READ_ONLY))
def test_a_webhook_endpoint_update_cannot_set_read_only_properties(
    tenant: Tenant, field: str
) -> None:
    path = f"/v1/webhook-endpoints/{tenant.webhook_id}"
    before = tenant.owner.get(path).json()
    body = {"description": "x", field: WEBHOOK_READ_ONLY[field]}
    assert_refused_field(tenant.owner.patch(path, body), field)
    assert tenant.owner.get(path).json() == before


def test_a_webhook_secret_is_shown_by_create_and_rotate_only(tenant: Tenant) -> None:
    owner = tenant.owner
    r = owner.post("/v1/webhook-endpoints", {"url": "https://1.1.1.1/shown", "event_types": ["*"]})
    assert r.status_code == 201, r.text
    created = r.json()
    assert set(created) == {"webhook_endpoint", "secret"}
    endpoint_id = created["webhook_endpoint"]["id"]
    r = owner.post(f"/v1/webhook-endpoints/{endpoint_id}/rotate-secret", {})
    assert r.status_code == 200, r.text
    rotated = r.json()
    assert set(rotated) == {"webhook_endpoint", "secret"}
    shown = [created["secret"], rotated["secret"]]
    for caller in (owner, tenant.keys["all"], tenant.keys["admin"]):
        for path in (
            "/v1/webhook-endpoints",
            f"/v1/webhook-endpoints/{endpoint_id}",
            f"/v1/webhook-endpoints/{endpoint_id}/deliveries",
            "/v1/audit-events",
            "/v1/events",
        ):
            r = caller.get(path, params={"limit": "1000"} if path.count("/") == 2 else None)
            assert r.status_code == 200, (path, r.text)
            for secret in shown:
                assert secret not in r.text, (caller.name, path)
                assert secret.removeprefix("whsec_") not in r.text, (caller.name, path)

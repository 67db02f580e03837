"""Identity (api.md §6) as a user meets it, on SQLite and on PostgreSQL: sign-up,
login, refresh, logout, password change, invitations, roles, API keys.

The attacks on the same routes (forged tokens, escalation, floods) are in
tests/security; this module proves the flows work and keep their promises.
"""

from __future__ import annotations

import secrets
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from tally.identity.roles import ALL_SCOPES
from tests.conftest import FakeClock

PASSWORD = "correct horse battery staple"


class User:
    def __init__(self, client: TestClient, tokens: dict[str, Any], **facts: str) -> None:
        self.client = client
        self.tokens = tokens
        self.facts = facts

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens['access_token']}"}

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.get(path, headers=self.headers, **kwargs)

    def post(self, path: str, json: Any = None) -> httpx.Response:
        return self.client.post(path, headers=self.headers, json=json)

    def patch(self, path: str, json: Any) -> httpx.Response:
        return self.client.patch(path, headers=self.headers, json=json)

    def delete(self, path: str) -> httpx.Response:
        return self.client.delete(path, headers=self.headers)


def email() -> str:
    return f"u{secrets.token_hex(6)}@example.com"


def login(client: TestClient, address: str, password: str = PASSWORD) -> httpx.Response:
    return client.post("/v1/auth/login", json={"email": address, "password": password})


def sign_up(client: TestClient) -> User:
    address = email()
    r = client.post(
        "/v1/signup", json={"email": address, "password": PASSWORD, "tenant_name": "Acme"}
    )
    assert r.status_code == 201, r.text
    tokens = login(client, address)
    assert tokens.status_code == 200, tokens.text
    return User(client, tokens.json(), email=address, **r.json())


def invite(owner: User, role: str) -> User:
    address = email()
    r = owner.post("/v1/members", {"email": address, "role": role})
    assert r.status_code == 201, r.text
    accepted = owner.client.post(
        "/v1/auth/accept-invitation",
        json={"token": r.json()["invitation_token"], "password": PASSWORD},
    )
    assert accepted.status_code == 200, accepted.text
    tokens = login(owner.client, address)
    assert tokens.status_code == 200, tokens.text
    return User(owner.client, tokens.json(), email=address, user_id=r.json()["member"]["id"])


@pytest.fixture
def owner(client: TestClient) -> User:
    return sign_up(client)


def test_sign_up_makes_a_tenant_whose_owner_can_move_money(owner: User) -> None:
    me = owner.get("/v1/me").json()
    assert me == {
        "object": "user",
        "id": owner.facts["user_id"],
        "tenant_id": owner.facts["tenant_id"],
        "role": "owner",
        "scopes": sorted(ALL_SCOPES),
    }
    assert owner.post("/v1/accounts", {"id": "cash", "currency": "USD"}).status_code == 201


def test_emails_are_case_insensitive_and_taken_once(client: TestClient, owner: User) -> None:
    again = client.post(
        "/v1/signup",
        json={"email": owner.facts["email"].upper(), "password": PASSWORD, "tenant_name": "B"},
    )
    assert again.status_code == 409
    assert again.json()["code"] == "conflict"
    assert login(client, owner.facts["email"].upper()).status_code == 200


@pytest.mark.parametrize(
    ("password", "code"),
    [("short pass", "too_short"), ("x" * 129, "too_long"), ("password1234", "too_common")],
)
def test_sign_up_refuses_weak_passwords(client: TestClient, password: str, code: str) -> None:
    r = client.post(
        "/v1/signup", json={"email": email(), "password": password, "tenant_name": "Acme"}
    )
    assert r.status_code == 422, r.text
    error = r.json()["errors"][0]
    assert (error["field"], error["code"]) == ("password", code)


def test_refresh_rotates_the_pair_and_a_reused_token_ends_the_session(owner: User) -> None:
    first = owner.tokens["refresh_token"]
    r = owner.client.post("/v1/auth/refresh", json={"refresh_token": first})
    assert r.status_code == 200, r.text
    second = r.json()
    assert second["refresh_token"] != first
    assert (
        owner.client.get(
            "/v1/me", headers={"Authorization": f"Bearer {second['access_token']}"}
        ).status_code
        == 200
    )
    reused = owner.client.post("/v1/auth/refresh", json={"refresh_token": first})
    assert reused.status_code == 401
    # The whole family is gone: the newest pair too.
    assert (
        owner.client.post(
            "/v1/auth/refresh", json={"refresh_token": second["refresh_token"]}
        ).status_code
        == 401
    )
    assert (
        owner.client.get(
            "/v1/me", headers={"Authorization": f"Bearer {second['access_token']}"}
        ).status_code
        == 401
    )


def test_logout_ends_this_session_only(client: TestClient, owner: User) -> None:
    other = User(client, login(client, owner.facts["email"]).json())
    assert owner.post("/v1/auth/logout").status_code == 204
    assert owner.get("/v1/me").status_code == 401
    assert (
        client.post(
            "/v1/auth/refresh", json={"refresh_token": owner.tokens["refresh_token"]}
        ).status_code
        == 401
    )
    assert other.get("/v1/me").status_code == 200


def test_password_change_ends_the_other_sessions(client: TestClient, owner: User) -> None:
    other = User(client, login(client, owner.facts["email"]).json())
    new_password = "an even longer passphrase"
    r = owner.post(
        "/v1/users/me/password", {"current_password": PASSWORD, "new_password": new_password}
    )
    assert r.status_code == 204, r.text
    assert owner.get("/v1/me").status_code == 200
    assert other.get("/v1/me").status_code == 401
    assert login(client, owner.facts["email"]).status_code == 401
    assert login(client, owner.facts["email"], new_password).status_code == 200


def test_password_change_needs_the_current_password(owner: User) -> None:
    r = owner.post(
        "/v1/users/me/password",
        {"current_password": "not my password at all", "new_password": "a brand new passphrase"},
    )
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "current_password"


def test_an_invited_member_logs_in_only_after_accepting(client: TestClient, owner: User) -> None:
    address = email()
    r = owner.post("/v1/members", {"email": address, "role": "operator"})
    assert r.status_code == 201, r.text
    assert r.json()["member"]["status"] == "invited"
    assert login(client, address).status_code == 401
    token = r.json()["invitation_token"]
    accepted = client.post(
        "/v1/auth/accept-invitation", json={"token": token, "password": PASSWORD}
    )
    assert accepted.status_code == 200
    assert accepted.json()["status"] == "active"
    again = client.post("/v1/auth/accept-invitation", json={"token": token, "password": PASSWORD})
    assert again.status_code == 404
    assert login(client, address).status_code == 200


def test_an_invitation_expires(client: TestClient, clock: FakeClock, owner: User) -> None:
    r = owner.post("/v1/members", {"email": email(), "role": "viewer"})
    clock.advance(7 * 86_400 + 1)
    late = client.post(
        "/v1/auth/accept-invitation",
        json={"token": r.json()["invitation_token"], "password": PASSWORD},
    )
    assert late.status_code == 404


def test_operators_move_money_and_viewers_only_read(owner: User) -> None:
    operator, viewer = invite(owner, "operator"), invite(owner, "viewer")
    assert operator.post("/v1/accounts", {"id": "a", "currency": "USD"}).status_code == 201
    assert operator.get("/v1/members").status_code == 403
    assert viewer.get("/v1/accounts/a").status_code == 200
    refused = viewer.post("/v1/accounts", {"id": "b", "currency": "USD"})
    assert refused.status_code == 403
    assert refused.json()["code"] == "forbidden"


def test_a_role_change_applies_to_the_next_request(owner: User) -> None:
    member = invite(owner, "viewer")
    assert member.post("/v1/accounts", {"currency": "USD"}).status_code == 403
    r = owner.patch(f"/v1/members/{member.facts['user_id']}", {"role": "operator"})
    assert r.status_code == 200, r.text
    assert r.json()["role"] == "operator"
    assert member.post("/v1/accounts", {"currency": "USD"}).status_code == 201


def test_disabling_a_member_ends_their_sessions_at_once(owner: User) -> None:
    member = invite(owner, "operator")
    assert owner.delete(f"/v1/members/{member.facts['user_id']}").status_code == 204
    assert member.get("/v1/me").status_code == 401
    assert login(owner.client, member.facts["email"]).status_code == 401
    listed = {m["id"]: m["status"] for m in owner.get("/v1/members").json()["data"]}
    assert listed[member.facts["user_id"]] == "disabled"


def test_a_tenant_keeps_an_active_owner(owner: User) -> None:
    me = owner.facts["user_id"]
    demoted = owner.patch(f"/v1/members/{me}", {"role": "admin"})
    assert demoted.status_code == 409
    assert demoted.json()["code"] == "conflict"
    assert owner.delete(f"/v1/members/{me}").status_code == 409
    assert owner.get("/v1/me").json()["role"] == "owner"


def test_only_an_owner_grants_the_owner_role(owner: User) -> None:
    admin = invite(owner, "admin")
    refused = admin.post("/v1/members", {"email": email(), "role": "owner"})
    assert refused.status_code == 403
    assert (
        admin.patch(f"/v1/members/{owner.facts['user_id']}", {"role": "viewer"}).status_code == 403
    )
    assert admin.post("/v1/members", {"email": email(), "role": "operator"}).status_code == 201


def test_api_keys_are_shown_once_listed_by_prefix_and_revoked_at_once(owner: User) -> None:
    r = owner.post("/v1/api-keys", {"name": "payouts", "scopes": ["transfers:read"]})
    assert r.status_code == 201, r.text
    key, secret = r.json()["api_key"], r.json()["secret"]
    assert secret.startswith(f"tly_{key['id']}_")
    listed = owner.get("/v1/api-keys").json()["data"]
    assert {"id": key["id"], "prefix": f"tly_{key['id']}"}.items() <= listed[0].items()
    assert secret not in owner.get("/v1/api-keys").text
    bearer = {"Authorization": f"Bearer {secret}"}
    assert owner.client.get("/v1/transfers", headers=bearer).status_code == 200
    assert owner.client.get("/v1/accounts", headers=bearer).status_code == 403
    assert owner.delete(f"/v1/api-keys/{key['id']}").status_code == 204
    assert owner.client.get("/v1/transfers", headers=bearer).status_code == 401
    assert owner.delete(f"/v1/api-keys/{key['id']}").status_code == 204


def test_only_admins_make_keys_and_a_key_without_admin_cannot_widen_itself(owner: User) -> None:
    viewer = invite(owner, "viewer")
    refused = viewer.post("/v1/api-keys", {"name": "x", "scopes": ["accounts:read"]})
    assert refused.status_code == 403
    r = owner.post("/v1/api-keys", {"name": "writer", "scopes": ["accounts:write"]})
    writer = {"Authorization": f"Bearer {r.json()['secret']}"}
    widened = owner.client.post(
        "/v1/api-keys", headers=writer, json={"name": "w", "scopes": ["transfers:write"]}
    )
    assert widened.status_code == 403


def test_every_change_is_in_the_audit_log_with_its_actor(owner: User) -> None:
    owner.post("/v1/accounts", {"id": "cash", "currency": "USD"})
    owner.post("/v1/accounts", {"id": "cash", "currency": "EUR"})  # 409: refused
    events = owner.get("/v1/audit-events", params={"limit": "1000"}).json()["data"]
    by_action = [(e["action"], e["status"], e["actor"]["id"]) for e in events]
    me = owner.facts["user_id"]
    assert ("signup", 201, me) in by_action
    assert ("login", 200, me) in by_action
    assert ("createAccount", 201, me) in by_action
    refused = [e for e in events if e["action"] == "createAccount" and e["status"] == 409]
    assert refused
    assert refused[0]["code"] == "exists_with_different_fields"

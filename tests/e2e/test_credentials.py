"""Cached credentials still end at once, in every process (identity.credentials).

Each server process keeps the API keys and sessions it has read. These tests run
``tally serve --workers 2`` on PostgreSQL, make sure both processes hold the
credential (every request on a fresh connection, so the kernel spreads them over
both workers), end it through one process, and then expect every following
request, on any process, to be refused: not after a time-to-live, at once.
"""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.e2e.conftest import StartServer, cli_create_tenant

pytestmark = pytest.mark.slow

ROUNDS = 40  # fresh connections per phase: both workers see some with near certainty
PASSWORD = "correct horse battery staple 42"


def _each_on_a_new_connection(base_url: str, token: str) -> list[int]:
    statuses = []
    for _ in range(ROUNDS):
        with httpx.Client(base_url=base_url, timeout=10.0) as client:
            r = client.get("/v1/accounts", headers={"Authorization": f"Bearer {token}"})
            statuses.append(r.status_code)
    return statuses


def test_a_revoked_key_fails_at_once_in_every_process(
    start_server: StartServer, postgres_url: str
) -> None:
    _, owner_key = cli_create_tenant(postgres_url, "credentials-key")
    server = start_server(postgres_url, workers=2)
    with httpx.Client(
        base_url=server.base_url, headers={"Authorization": f"Bearer {owner_key}"}
    ) as owner:
        created = owner.post("/v1/api-keys", json={"name": "short", "scopes": ["accounts:read"]})
        assert created.status_code == 201, created.text
        key_id, secret = created.json()["api_key"]["id"], created.json()["secret"]
        assert set(_each_on_a_new_connection(server.base_url, secret)) == {200}

        assert owner.delete(f"/v1/api-keys/{key_id}").status_code == 204
    assert set(_each_on_a_new_connection(server.base_url, secret)) == {401}
    # The owner's own key, cached the same way, is untouched.
    assert set(_each_on_a_new_connection(server.base_url, owner_key)) == {200}


def test_logout_and_a_password_change_end_sessions_at_once_in_every_process(
    start_server: StartServer, postgres_url: str
) -> None:
    server = start_server(postgres_url, workers=2)
    email = f"owner-{uuid.uuid4().hex[:12]}@example.com"
    with httpx.Client(base_url=server.base_url, timeout=10.0) as client:
        body = {"email": email, "password": PASSWORD, "tenant_name": "credentials-session"}
        assert client.post("/v1/signup", json=body).status_code == 201
        login = {"email": email, "password": PASSWORD}
        first, second, third = (
            client.post("/v1/auth/login", json=login).json()["access_token"] for _ in range(3)
        )
        for token in (first, second, third):
            assert set(_each_on_a_new_connection(server.base_url, token)) == {200}

        bye = client.post("/v1/auth/logout", headers={"Authorization": f"Bearer {first}"})
        assert bye.status_code == 204, bye.text
        assert set(_each_on_a_new_connection(server.base_url, first)) == {401}
        assert set(_each_on_a_new_connection(server.base_url, third)) == {200}

        # A password change ends every session of the user but the one that asked.
        change = client.post(
            "/v1/users/me/password",
            headers={"Authorization": f"Bearer {second}"},
            json={"current_password": PASSWORD, "new_password": PASSWORD + " again"},
        )
        assert change.status_code == 204, change.text
        assert set(_each_on_a_new_connection(server.base_url, third)) == {401}
        assert set(_each_on_a_new_connection(server.base_url, second)) == {200}

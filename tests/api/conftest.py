"""The API in-process: the real app, the real databases, over Starlette's
TestClient (which runs the app's lifespan, so the writer and the expiry loop run
as in production)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from tally.api import create_app
from tally.config import Settings
from tests.conftest import FakeClock, create_tenant


class Api:
    """A client bound to one tenant's API key."""

    def __init__(self, client: TestClient, api_key: str, tenant_id: str) -> None:
        self.client = client
        self.api_key = api_key
        self.tenant_id = tenant_id
        self.headers = {"Authorization": f"Bearer {api_key}"}

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return self.client.request(method, path, headers=headers, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, json: Any = None, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, json=json, **kwargs)

    def patch(self, path: str, json: Any = None, **kwargs: Any) -> httpx.Response:
        return self.request("PATCH", path, json=json, **kwargs)

    # Shorthands that assert success, for arranging a test.
    def account(self, id: str, currency: str = "USD", **fields: Any) -> dict[str, Any]:
        r = self.post("/v1/accounts", {"id": id, "currency": currency, **fields})
        assert r.status_code == 201, r.text
        return r.json()  # type: ignore[no-any-return]

    def transfer(self, debit: str, credit: str, amount: int, **fields: Any) -> dict[str, Any]:
        body = {"debit_account_id": debit, "credit_account_id": credit, "amount": amount}
        r = self.post("/v1/transfers", {**body, **fields})
        assert r.status_code == 201, r.text
        return r.json()  # type: ignore[no-any-return]

    def balance(self, id: str) -> dict[str, Any]:
        r = self.get(f"/v1/accounts/{id}")
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def client(database_url: str, clock: FakeClock) -> Iterator[TestClient]:
    # One app serves the whole session, many tests through few keys: the rate limit is
    # raised out of the way here (it still runs); tests/security tests the limits.
    settings = Settings(
        database_url=database_url,
        expiry_interval_seconds=0.2,
        rate_limit_per_second=1_000_000,
        rate_limit_burst=1_000_000,
        login_limit_per_address_per_minute=1_000_000,
        login_limit_per_address_burst=1_000_000,
    )
    with TestClient(create_app(settings, clock=clock), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def api(client: TestClient, database_url: str) -> Api:
    tenant_id, api_key = create_tenant(database_url)
    return Api(client, api_key, tenant_id)


@pytest.fixture
def other_api(client: TestClient, database_url: str) -> Api:
    """A second tenant, to prove the first one's objects are out of its reach."""
    tenant_id, api_key = create_tenant(database_url, "other")
    return Api(client, api_key, tenant_id)

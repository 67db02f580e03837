"""What an operator does through ``tally.identity.tenants`` (the CLI's functions), on
SQLite and PostgreSQL: list tenants and keys across pages, revoke any tenant's key
at once, with an audit row in the same transaction."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TypeVar

import pytest

from tally.errors import Unauthenticated
from tally.identity import tenants as operator
from tally.services import Services
from tests.conftest import FakeClock
from tests.integration.conftest import run_services

T = TypeVar("T")


async def _all(iterator: AsyncIterator[T]) -> list[T]:
    return [item async for item in iterator]


def test_tenants_are_listed_once_each_in_id_order_across_pages(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pages of two, so that three new tenants (and the run's others) span several.
    monkeypatch.setattr(operator, "PAGE_ROWS", 2)

    async def scenario(services: Services) -> None:
        made = [
            (await operator.create_tenant(services.store, name, services.clock()))[0]
            for name in ("a", "b", "c")
        ]
        listed = [t.id for t in await _all(operator.tenants(services.store))]
        assert listed == sorted(set(listed))
        assert [t for t in listed if t in made] == sorted(made)

    run_services(database_url, scenario)


def test_a_revoked_key_is_refused_at_once_and_the_revocation_audited(database_url: str) -> None:
    async def scenario(services: Services) -> None:
        store, clock = services.store, services.clock
        tenant_id, token = await operator.create_tenant(store, "acme", clock())
        (key,) = await _all(operator.api_keys(store, tenant_id))
        assert await services.authenticator.authenticate(f"Bearer {token}")

        revoked = await operator.revoke_api_key(store, key.id, clock())

        assert revoked is not None and revoked.revoked_at_us is not None
        with pytest.raises(Unauthenticated):
            await services.authenticator.authenticate(f"Bearer {token}")
        again = await operator.revoke_api_key(store, key.id, clock() + 5)
        assert again is not None and again.revoked_at_us == revoked.revoked_at_us
        page = await services.audit_log.list(tenant_id, limit=10, cursor=None)
        rows = [(r.actor_type, r.action, r.object_id, r.status_code) for r in page.items]
        assert rows == [("operator", "revokeApiKey", key.id, 204)] * 2

    run_services(database_url, scenario, clock=FakeClock())


def test_revoking_an_unknown_key_finds_none(database_url: str) -> None:
    async def scenario(services: Services) -> None:
        assert await operator.revoke_api_key(services.store, "nokey", services.clock()) is None

    run_services(database_url, scenario)

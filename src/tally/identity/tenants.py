"""Tenants made by an operator (``tally tenants create``), with a first API key.

People sign up through ``Identity.signup``, which makes a tenant and its owner;
an operator, or a deployment script, makes a tenant with a key that has every
scope, shown once.
"""

from __future__ import annotations

from tally.identity import repository as db
from tally.identity.api_keys import new_api_key
from tally.identity.roles import ALL_SCOPES
from tally.storage import Store
from tally.support.ids import new_id


async def create_tenant(store: Store, name: str, now_us: int) -> tuple[str, str]:
    """A new tenant and an API key with every scope: (tenant id, the key)."""
    tenant_id, key = new_id("ten"), new_api_key()
    record = db.KeyRecord(
        key.key_id, tenant_id, "default", " ".join(ALL_SCOPES), now_us, None, None
    )
    async with store.transaction() as tx:
        await db.insert_tenant(tx, tenant_id, name, now_us)
        await db.insert_api_key(tx, record, key.secret_sha256)
    return tenant_id, key.token

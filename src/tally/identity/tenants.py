"""What an operator does from the command line (``tally tenants``, ``tally api-keys``):
make a tenant with a first API key, list tenants, list and revoke any tenant's keys.

People sign up through ``Identity.signup``, which makes a tenant and its owner;
an operator, or a deployment script, makes a tenant with a key that has every
scope, shown once. An operator has the database itself, so these functions take
no principal; a revocation is still written to the audit log, in the same
transaction, with the actor ``operator``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from tally import audit
from tally.audit import AuditContext
from tally.identity import repository as db
from tally.identity.api_keys import new_api_key
from tally.identity.repository import KeyRecord, TenantRecord
from tally.identity.roles import ALL_SCOPES
from tally.storage import Store
from tally.support.ids import new_id

# Rows read per query while listing: the listing itself ends with the table.
PAGE_ROWS = 500


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


async def tenants(store: Store) -> AsyncIterator[TenantRecord]:
    """Every tenant, in id order (ids sort by creation time), a page at a time."""
    after = ""
    while True:
        page = await db.tenants_page(store, after, PAGE_ROWS)
        for tenant in page:
            yield tenant
        if len(page) < PAGE_ROWS:
            return
        after = page[-1].id


async def tenant(store: Store, tenant_id: str) -> TenantRecord | None:
    return await db.tenant_by_id(store, tenant_id)


async def api_keys(store: Store, tenant_id: str) -> AsyncIterator[KeyRecord]:
    """Every API key of a tenant, revoked ones included, in id order."""
    after = ""
    while True:
        page = await db.api_keys_page(store, tenant_id, after, PAGE_ROWS)
        for key in page:
            yield key
        if len(page) < PAGE_ROWS:
            return
        after = page[-1].id


async def revoke_api_key(store: Store, key_id: str, now_us: int) -> KeyRecord | None:
    """Revoke a key of any tenant, at once (every request reads its key); None if no
    key has this id. Revoking twice changes nothing (its revoked_at stays the first)."""
    async with store.transaction() as tx:
        key = await db.api_key_by_id(tx, key_id)
        if key is None:
            return None
        ctx = AuditContext("revokeApiKey", None, None, key.tenant_id, "operator", None, key.id)
        await db.revoke_api_key(tx, key.tenant_id, key.id, now_us)
        await audit.record(tx, ctx, 204, None, now_us)
    return await db.api_key_by_id(store, key_id)

"""The SQL of webhooks, in the ``$n`` style both databases take (tally.storage)."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from tally.storage import Store
from tally.storage.store import Tx

ENDPOINT_COLUMNS = (
    "id, tenant_id, url, description, event_types, status, disabled_reason, secret,"
    " previous_secret, previous_secret_expires_at_us, event_cursor, created_at_us, updated_at_us"
)
DELIVERY_COLUMNS = (
    "id, tenant_id, endpoint_id, event_sequence, event_type, status, attempts,"
    " next_attempt_at_us, lease_owner, lease_expires_at_us, last_attempt_at_us,"
    " last_status_code, last_error, created_at_us, completed_at_us"
)
ALL_TYPES = "*"


@dataclass(frozen=True, slots=True)
class EndpointRecord:
    id: str
    tenant_id: str
    url: str
    description: str
    event_types: str  # space-separated; "*" subscribes to every type
    status: str  # enabled, disabled
    disabled_reason: str | None  # user, gone
    secret: str
    previous_secret: str | None
    previous_secret_expires_at_us: int | None
    event_cursor: int
    created_at_us: int
    updated_at_us: int

    def subscribes(self, event_type: str) -> bool:
        types = self.event_types.split()
        return ALL_TYPES in types or event_type in types

    def secrets_at(self, now_us: int) -> list[str]:
        """The secrets that sign now: the current one, and the previous one while
        its overlap lasts."""
        expires = self.previous_secret_expires_at_us
        if self.previous_secret is not None and expires is not None and now_us < expires:
            return [self.secret, self.previous_secret]
        return [self.secret]


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    id: str  # the webhook-id of every attempt
    tenant_id: str
    endpoint_id: str
    event_sequence: int
    event_type: str
    status: str  # pending, succeeded, failed (dead-lettered)
    attempts: int
    next_attempt_at_us: int
    lease_owner: str | None
    lease_expires_at_us: int | None
    last_attempt_at_us: int | None
    last_status_code: int | None
    last_error: str | None
    created_at_us: int
    completed_at_us: int | None


def delivery_id(endpoint_id: str, event_sequence: int) -> str:
    """The one id of an (endpoint, event): derived, so that making the row twice
    (two workers in a moment of disagreement) collides instead of duplicating."""
    digest = hashlib.sha256(f"{endpoint_id}:{event_sequence}".encode()).digest()
    return "msg_" + base64.b32encode(digest[:20]).decode().lower()


# -- endpoints ------------------------------------------------------------------------------


async def insert_endpoint(tx: Tx, e: EndpointRecord) -> None:
    marks = ", ".join(f"${i}" for i in range(1, 14))
    await tx.execute(
        f"INSERT INTO webhook_endpoints ({ENDPOINT_COLUMNS}) VALUES ({marks})",
        e.id, e.tenant_id, e.url, e.description, e.event_types, e.status, e.disabled_reason,
        e.secret, e.previous_secret, e.previous_secret_expires_at_us, e.event_cursor,
        e.created_at_us, e.updated_at_us,
    )  # fmt: skip


async def update_endpoint(tx: Tx, e: EndpointRecord) -> None:
    await tx.execute(
        "UPDATE webhook_endpoints SET url = $3, description = $4, event_types = $5,"
        " status = $6, disabled_reason = $7, secret = $8, previous_secret = $9,"
        " previous_secret_expires_at_us = $10, updated_at_us = $11"
        " WHERE tenant_id = $1 AND id = $2",
        e.tenant_id, e.id, e.url, e.description, e.event_types, e.status, e.disabled_reason,
        e.secret, e.previous_secret, e.previous_secret_expires_at_us, e.updated_at_us,
    )  # fmt: skip


async def endpoint(db: Store | Tx, tenant_id: str, endpoint_id: str) -> EndpointRecord | None:
    rows = await db.fetch(
        f"SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2",
        tenant_id,
        endpoint_id,
    )
    return EndpointRecord(*rows[0]) if rows else None


async def endpoint_by_id(db: Store | Tx, endpoint_id: str) -> EndpointRecord | None:
    rows = await db.fetch(
        f"SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1", endpoint_id
    )
    return EndpointRecord(*rows[0]) if rows else None


async def endpoints_page(
    store: Store, tenant_id: str, after_id: str, limit: int
) -> list[EndpointRecord]:
    rows = await store.fetch(
        f"SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE tenant_id = $1 AND id > $2"
        " ORDER BY id LIMIT $3",
        tenant_id,
        after_id,
        limit,
    )
    return [EndpointRecord(*r) for r in rows]


async def count_endpoints(tx: Tx, tenant_id: str) -> int:
    rows = await tx.fetch("SELECT COUNT(*) FROM webhook_endpoints WHERE tenant_id = $1", tenant_id)
    return int(rows[0][0])


async def delete_endpoint(tx: Tx, tenant_id: str, endpoint_id: str) -> bool:
    # The endpoint's row first (an update that changes nothing locks it on
    # PostgreSQL), as a claim locks it before its deliveries: one lock order.
    found = await tx.execute(
        "UPDATE webhook_endpoints SET updated_at_us = updated_at_us"
        " WHERE tenant_id = $1 AND id = $2",
        tenant_id,
        endpoint_id,
    )
    if not found:
        return False
    await tx.execute(
        "DELETE FROM webhook_deliveries WHERE tenant_id = $1 AND endpoint_id = $2",
        tenant_id,
        endpoint_id,
    )
    deleted = await tx.execute(
        "DELETE FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2", tenant_id, endpoint_id
    )
    return deleted > 0


async def tenant_event_sequence(tx: Tx, tenant_id: str) -> int:
    rows = await tx.fetch("SELECT event_sequence FROM tenants WHERE id = $1", tenant_id)
    return int(rows[0][0]) if rows else 0


# -- deliveries, as the API shows them ------------------------------------------------------


async def deliveries_page(
    store: Store,
    tenant_id: str,
    endpoint_id: str,
    *,
    before_sequence: int,
    limit: int,
    status: str | None,
) -> list[DeliveryRecord]:
    """Newest first: what an operator looks for is what happened last."""
    where = "tenant_id = $1 AND endpoint_id = $2 AND event_sequence < $3"
    args: list[Any] = [tenant_id, endpoint_id, before_sequence]
    if status is not None:
        args.append(status)
        where += f" AND status = ${len(args)}"
    args.append(limit)
    rows = await store.fetch(
        f"SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE {where}"
        f" ORDER BY event_sequence DESC LIMIT ${len(args)}",
        *args,
    )
    return [DeliveryRecord(*r) for r in rows]


async def delivery(
    db: Store | Tx, tenant_id: str, endpoint_id: str, webhook_id: str
) -> DeliveryRecord | None:
    rows = await db.fetch(
        f"SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries"
        " WHERE tenant_id = $1 AND endpoint_id = $2 AND id = $3",
        tenant_id,
        endpoint_id,
        webhook_id,
    )
    return DeliveryRecord(*rows[0]) if rows else None


async def replay(tx: Tx, webhook_id: str, now_us: int) -> None:
    """Due again at once, with a fresh count of attempts; the same webhook-id."""
    await tx.execute(
        "UPDATE webhook_deliveries SET status = 'pending', attempts = 0,"
        " next_attempt_at_us = $2, completed_at_us = NULL WHERE id = $1",
        webhook_id,
        now_us,
    )


def id_list(store: Store, param: int) -> str:
    """A SELECT of the ids in parameter ``param`` (``ids_arg``), on either database."""
    return store.json_rows(param, [("id", "text")])


def ids_arg(ids: list[str]) -> str:
    return json.dumps([[i] for i in ids])

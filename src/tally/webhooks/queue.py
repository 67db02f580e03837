"""The delivery queue in the database: workers' heartbeats, claiming the head
delivery of each endpoint under a lease, and recording what an attempt did.

A claim is one short transaction. On PostgreSQL it locks the endpoints it
takes with ``FOR UPDATE SKIP LOCKED`` (two workers that momentarily both think
they own an endpoint never wait on each other, and never both take it); on
SQLite, ``BEGIN IMMEDIATE`` excludes every other writer. Under that lock it
makes delivery rows for the endpoint's new events (the events table is the
outbox; the endpoint's cursor says how far it has read) and leases the
endpoint's oldest pending delivery if it is due. The HTTP attempt happens
after the commit, holding nothing but the lease; its result is written only by
the lease's owner. A worker killed mid-attempt leaves a lease that expires,
and the delivery is attempted again, under the same id.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from tally.storage import Store
from tally.storage.store import Tx
from tally.webhooks.repository import (
    DELIVERY_COLUMNS,
    ENDPOINT_COLUMNS,
    DeliveryRecord,
    EndpointRecord,
    delivery_id,
    id_list,
    ids_arg,
)

ENDPOINTS_MAX = 100_000  # endpoints one worker considers per round


@dataclass(frozen=True, slots=True)
class Claim:
    endpoint: EndpointRecord
    delivery: DeliveryRecord


@dataclass(frozen=True, slots=True)
class Result:
    """What one attempt decided for its delivery."""

    status: str  # pending (retry at next_attempt_at_us), succeeded, failed
    next_attempt_at_us: int
    status_code: int | None
    error: str | None
    disable_endpoint: bool = False  # the receiver answered 410 Gone


# -- workers ----------------------------------------------------------------------------------


async def heartbeat(store: Store, worker_id: str, now_us: int) -> None:
    async with store.transaction() as tx:
        await tx.execute(
            "INSERT INTO webhook_workers (id, started_at_us, heartbeat_at_us) VALUES ($1, $2, $2)"
            " ON CONFLICT (id) DO UPDATE SET heartbeat_at_us = $2",
            worker_id,
            now_us,
        )


async def live_workers(store: Store, since_us: int) -> list[str]:
    rows = await store.fetch(
        "SELECT id FROM webhook_workers WHERE heartbeat_at_us > $1 ORDER BY id", since_us
    )
    return [r[0] for r in rows]


async def forget_workers(store: Store, before_us: int) -> None:
    async with store.transaction() as tx:
        await tx.execute("DELETE FROM webhook_workers WHERE heartbeat_at_us <= $1", before_us)


async def leave(store: Store, worker_id: str) -> None:
    """A worker that stops says so, and its endpoints move at once."""
    async with store.transaction() as tx:
        await tx.execute("DELETE FROM webhook_workers WHERE id = $1", worker_id)


async def enabled_endpoints(store: Store) -> list[tuple[str, str]]:
    """The enabled endpoints, (id, tenant) each."""
    rows = await store.fetch(
        "SELECT id, tenant_id FROM webhook_endpoints WHERE status = 'enabled' ORDER BY id LIMIT $1",
        ENDPOINTS_MAX,
    )
    return [(r[0], r[1]) for r in rows]


# -- claims -----------------------------------------------------------------------------------


async def claim(
    store: Store,
    endpoint_ids: list[str],
    worker_id: str,
    now_us: int,
    lease_until_us: int,
    *,
    fill_max: int,
    claims_max: int,
) -> list[Claim]:
    """Lease the due head delivery of up to ``claims_max`` of these endpoints,
    after making the rows of their new events."""
    claimed: list[Claim] = []
    async with store.transaction() as tx:
        rows = await tx.fetch(
            f"SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints AS w"
            f" WHERE id IN ({id_list(store, 1)}) AND status = 'enabled' AND ("
            " event_cursor < (SELECT t.event_sequence FROM tenants AS t WHERE t.id = w.tenant_id)"
            " OR EXISTS (SELECT 1 FROM webhook_deliveries AS d WHERE d.endpoint_id = w.id"
            " AND d.status = 'pending' AND d.next_attempt_at_us <= $2"
            " AND (d.lease_expires_at_us IS NULL OR d.lease_expires_at_us <= $2)))"
            # Random order: when more endpoints have work than this worker may
            # attempt at once, none is left behind for long.
            f" ORDER BY random() LIMIT $3{store.skip_locked}",
            ids_arg(endpoint_ids),
            now_us,
            claims_max,
        )
        for row in rows:
            endpoint = EndpointRecord(*row)
            await _fill(store, tx, endpoint, now_us, fill_max)
            head = await _lease_head(tx, endpoint.id, worker_id, now_us, lease_until_us)
            if head is not None:
                claimed.append(Claim(endpoint, head))
    return claimed


async def _fill(store: Store, tx: Tx, endpoint: EndpointRecord, now_us: int, fill_max: int) -> None:
    """Delivery rows for the endpoint's next events, and its cursor past them."""
    events = await tx.fetch(
        "SELECT sequence, type FROM events WHERE tenant_id = $1 AND sequence > $2"
        " ORDER BY sequence LIMIT $3",
        endpoint.tenant_id,
        endpoint.event_cursor,
        fill_max,
    )
    if not events:
        return
    wanted = [
        [delivery_id(endpoint.id, seq), seq, kind]
        for seq, kind in events
        if endpoint.subscribes(kind)
    ]
    if wanted:
        rows = store.json_rows(
            1, [("id", "text"), ("event_sequence", "bigint"), ("event_type", "text")]
        )
        # WHERE true: SQLite needs it to tell ON CONFLICT from a join's ON.
        await tx.execute(
            "INSERT INTO webhook_deliveries (id, tenant_id, endpoint_id, event_sequence,"
            " event_type, status, attempts, next_attempt_at_us, created_at_us)"
            f" SELECT r.id, $2, $3, r.event_sequence, r.event_type, 'pending', 0, $4, $4"
            f" FROM ({rows}) AS r WHERE true"
            " ON CONFLICT (endpoint_id, event_sequence) DO NOTHING",
            json.dumps(wanted),
            endpoint.tenant_id,
            endpoint.id,
            now_us,
        )
    await tx.execute(
        "UPDATE webhook_endpoints SET event_cursor = $2 WHERE id = $1 AND event_cursor < $2",
        endpoint.id,
        int(events[-1][0]),
    )


async def _lease_head(
    tx: Tx, endpoint_id: str, worker_id: str, now_us: int, lease_until_us: int
) -> DeliveryRecord | None:
    """The endpoint's oldest pending delivery, leased, if it is due and free.
    Nothing newer is ever taken past it: that is the endpoint's order."""
    rows = await tx.fetch(
        f"SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries"
        " WHERE endpoint_id = $1 AND status = 'pending' ORDER BY event_sequence LIMIT 1",
        endpoint_id,
    )
    if not rows:
        return None
    head = DeliveryRecord(*rows[0])
    leased = head.lease_expires_at_us is not None and head.lease_expires_at_us > now_us
    if head.next_attempt_at_us > now_us or leased:
        return None
    await tx.execute(
        "UPDATE webhook_deliveries SET lease_owner = $2, lease_expires_at_us = $3 WHERE id = $1",
        head.id,
        worker_id,
        lease_until_us,
    )
    return head


async def record(store: Store, claim_: Claim, worker_id: str, result: Result, now_us: int) -> bool:
    """Write an attempt's result, if this worker still holds the lease (else
    another worker has taken the delivery over, and its attempt decides)."""
    done = result.status != "pending"
    async with store.transaction() as tx:
        if result.disable_endpoint:
            # The endpoint's row first, as a claim locks it: one lock order, no deadlock.
            await tx.execute(
                "UPDATE webhook_endpoints SET status = 'disabled', disabled_reason = 'gone',"
                " updated_at_us = $2 WHERE id = $1 AND EXISTS (SELECT 1 FROM webhook_deliveries"
                " WHERE id = $3 AND lease_owner = $4)",
                claim_.endpoint.id,
                now_us,
                claim_.delivery.id,
                worker_id,
            )
        changed = await tx.execute(
            "UPDATE webhook_deliveries SET status = $3, attempts = attempts + 1,"
            " next_attempt_at_us = $4, lease_owner = NULL, lease_expires_at_us = NULL,"
            " last_attempt_at_us = $5, last_status_code = $6, last_error = $7,"
            " completed_at_us = $8 WHERE id = $1 AND lease_owner = $2",
            claim_.delivery.id,
            worker_id,
            result.status,
            result.next_attempt_at_us,
            now_us,
            result.status_code,
            result.error,
            now_us if done else None,
        )
    return changed > 0

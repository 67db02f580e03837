"""The use cases of webhook endpoints (api.md §8): create, list, read, update,
rotate the secret, delete; list an endpoint's deliveries, replay one.

Each write is one transaction holding its audit row, as identity's are. Every
read and write names the tenant, so another tenant's endpoint is simply not
there (404, the same answer as an id that exists nowhere).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from dataclasses import dataclass

from tally import audit
from tally.audit import AuditContext
from tally.core.model import EventType
from tally.errors import Conflict, FieldError, NotFound, ValidationFailed
from tally.storage import Store
from tally.support.clock import Clock
from tally.support.cursors import Page, decode_cursor, decode_id_cursor, page_of
from tally.support.ids import new_id
from tally.webhooks import repository as db
from tally.webhooks.addresses import check
from tally.webhooks.repository import ALL_TYPES, DeliveryRecord, EndpointRecord
from tally.webhooks.signing import new_secret

EVENT_TYPES: tuple[str, ...] = (*typing.get_args(EventType), ALL_TYPES)
DESCRIPTION_CHARS_MAX = 500
DELIVERY_STATUSES = ("pending", "succeeded", "failed")
US = 1_000_000


@dataclass(frozen=True, slots=True)
class CreatedEndpoint:
    record: EndpointRecord
    secret: str  # shown once


@dataclass(frozen=True, slots=True)
class EndpointChanges:
    url: str | None = None
    event_types: list[str] | None = None
    description: str | None = None
    status: str | None = None  # enabled, disabled


class Webhooks:
    def __init__(
        self,
        store: Store,
        *,
        clock: Clock,
        allow_loopback: bool,
        endpoints_per_tenant_max: int,
        secret_overlap_seconds: int,
    ) -> None:
        self.store = store
        self._clock = clock
        self._allow_loopback = allow_loopback
        self._endpoints_max = endpoints_per_tenant_max
        self._overlap_seconds = secret_overlap_seconds
        # Told when an endpoint is created or its status changes (this process's
        # dispatcher, which keeps the list of enabled endpoints).
        self.on_endpoints_changed: Callable[[], None] | None = None

    async def create(
        self, tenant_id: str, url: str, event_types: list[str], description: str, ctx: AuditContext
    ) -> CreatedEndpoint:
        types = _event_types(event_types)
        _check_description(description)
        await check(url, allow_loopback=self._allow_loopback)
        now_us, secret = self._clock(), new_secret()
        endpoint_id = ctx.object_id = new_id("whe")
        async with self.store.transaction() as tx:
            if await db.count_endpoints(tx, tenant_id) >= self._endpoints_max:
                raise Conflict(
                    f"This tenant has {self._endpoints_max} webhook endpoints, the most it may "
                    "have: delete one first."
                )
            # Events from now on: what happened before the endpoint existed is in
            # GET /v1/events.
            cursor = await db.tenant_event_sequence(tx, tenant_id)
            record = EndpointRecord(
                endpoint_id, tenant_id, url, description, types, "enabled", None, secret,
                None, None, cursor, now_us, now_us,
            )  # fmt: skip
            await db.insert_endpoint(tx, record)
            await audit.record(tx, ctx, 201, None, now_us)
        self._endpoints_changed()
        return CreatedEndpoint(record, secret)

    async def endpoints(
        self, tenant_id: str, limit: int, cursor: str | None
    ) -> Page[EndpointRecord]:
        after = decode_id_cursor(cursor) if cursor else ""
        rows = await db.endpoints_page(self.store, tenant_id, after, limit + 1)
        return page_of(rows, limit, lambda e: e.id)

    async def endpoint(self, tenant_id: str, endpoint_id: str) -> EndpointRecord:
        found = await db.endpoint(self.store, tenant_id, endpoint_id)
        if found is None:
            raise _not_found(endpoint_id)
        return found

    async def update(
        self, tenant_id: str, endpoint_id: str, changes: EndpointChanges, ctx: AuditContext
    ) -> EndpointRecord:
        ctx.object_id = endpoint_id
        fields: dict[str, object] = {}
        if changes.event_types is not None:
            fields["event_types"] = _event_types(changes.event_types)
        if changes.description is not None:
            _check_description(changes.description)
            fields["description"] = changes.description
        if changes.url is not None:
            await check(changes.url, allow_loopback=self._allow_loopback)
            fields["url"] = changes.url
        if changes.status is not None:
            fields["status"] = changes.status
            fields["disabled_reason"] = None if changes.status == "enabled" else "user"
        now_us = self._clock()
        async with self.store.transaction() as tx:
            found = await db.endpoint(tx, tenant_id, endpoint_id)
            if found is None:
                raise _not_found(endpoint_id)
            if changes.status is not None and changes.status == found.status:
                fields.pop("disabled_reason")  # no change: the reason stands
            updated = dataclasses.replace(found, **fields, updated_at_us=now_us)  # type: ignore[arg-type]
            await db.update_endpoint(tx, updated)
            await audit.record(tx, ctx, 200, None, now_us)
        if changes.status is not None:
            self._endpoints_changed()
        return updated

    def _endpoints_changed(self) -> None:
        if self.on_endpoints_changed is not None:
            self.on_endpoints_changed()

    async def rotate_secret(
        self, tenant_id: str, endpoint_id: str, overlap_seconds: int | None, ctx: AuditContext
    ) -> CreatedEndpoint:
        """A new secret signs from now on; the old one signs beside it (a second
        ``v1,`` signature) for ``overlap_seconds``, so receivers can switch over."""
        ctx.object_id = endpoint_id
        overlap = self._overlap_seconds if overlap_seconds is None else overlap_seconds
        now_us, secret = self._clock(), new_secret()
        async with self.store.transaction() as tx:
            found = await db.endpoint(tx, tenant_id, endpoint_id)
            if found is None:
                raise _not_found(endpoint_id)
            updated = dataclasses.replace(
                found,
                secret=secret,
                previous_secret=found.secret if overlap else None,
                previous_secret_expires_at_us=now_us + overlap * US if overlap else None,
                updated_at_us=now_us,
            )
            await db.update_endpoint(tx, updated)
            await audit.record(tx, ctx, 200, None, now_us)
        return CreatedEndpoint(updated, secret)

    async def delete(self, tenant_id: str, endpoint_id: str, ctx: AuditContext) -> None:
        ctx.object_id = endpoint_id
        now_us = self._clock()
        async with self.store.transaction() as tx:
            if not await db.delete_endpoint(tx, tenant_id, endpoint_id):
                raise _not_found(endpoint_id)
            await audit.record(tx, ctx, 204, None, now_us)

    async def deliveries(
        self,
        tenant_id: str,
        endpoint_id: str,
        *,
        limit: int,
        cursor: str | None,
        status: str | None,
    ) -> Page[DeliveryRecord]:
        await self.endpoint(tenant_id, endpoint_id)
        before = decode_cursor(cursor) if cursor else 2**62
        rows = await db.deliveries_page(
            self.store, tenant_id, endpoint_id, before_sequence=before, limit=limit + 1,
            status=status,
        )  # fmt: skip
        return page_of(rows, limit, lambda d: d.event_sequence)

    async def replay(
        self, tenant_id: str, endpoint_id: str, delivery_id: str, ctx: AuditContext
    ) -> DeliveryRecord:
        """Send a delivery again (a dead-lettered one, typically): pending, due now,
        with a fresh count of attempts and the same webhook-id."""
        ctx.object_id = delivery_id
        now_us = self._clock()
        async with self.store.transaction() as tx:
            if await db.endpoint(tx, tenant_id, endpoint_id) is None:
                raise _not_found(endpoint_id)
            if await db.delivery(tx, tenant_id, endpoint_id, delivery_id) is None:
                raise NotFound(f"This webhook endpoint has no delivery with id {delivery_id!r}.")
            await db.replay(tx, delivery_id, now_us)
            await audit.record(tx, ctx, 202, None, now_us)
            replayed = await db.delivery(tx, tenant_id, endpoint_id, delivery_id)
        assert replayed is not None
        return replayed


def _not_found(endpoint_id: str) -> NotFound:
    return NotFound(f"This tenant has no webhook endpoint with id {endpoint_id!r}.")


def _event_types(types: list[str]) -> str:
    unknown = [t for t in types if t not in EVENT_TYPES]
    if unknown or not types or len(set(types)) != len(types):
        raise ValidationFailed(
            [
                FieldError(
                    "event_types",
                    "invalid",
                    f"1 to {len(EVENT_TYPES)} distinct types, each one of "
                    f"{', '.join(EVENT_TYPES)}.",
                )
            ]
        )
    return " ".join(t for t in EVENT_TYPES if t in types)


def _check_description(description: str) -> None:
    if len(description) > DESCRIPTION_CHARS_MAX or "\x00" in description:
        raise ValidationFailed(
            [
                FieldError(
                    "description",
                    "invalid",
                    f"At most {DESCRIPTION_CHARS_MAX} characters, no NUL.",
                )
            ]
        )

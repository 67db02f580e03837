"""Response schemas of the audit log's route (api.md §6)."""

from __future__ import annotations

from typing import Literal

from msgspec import Struct

from tally.api.schemas.common import Timestamp


class AuditActorOut(Struct):
    # operator: `tally api-keys revoke`, run by whoever has the database.
    type: Literal["user", "api_key", "anonymous", "operator"]
    id: str | None


class AuditEventOut(Struct):
    object: Literal["audit_event"]
    id: int
    occurred_at: Timestamp
    actor: AuditActorOut
    action: str
    object_id: str | None
    status: int
    code: str | None
    request_id: str | None
    client_address: str | None
    chain_seq: int | None  # None until sealed (about a second; a long write waits)
    chain_hash: str | None


class AuditEventList(Struct):
    data: list[AuditEventOut]
    has_more: bool
    next_cursor: str | None

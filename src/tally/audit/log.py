"""The audit log as a service: a tenant's rows for its admins; the chain's head,
sealing and verification for operators (``tally audit``)."""

from __future__ import annotations

from dataclasses import dataclass

from tally.audit.chain import ChainHead, Verdict, read_head, seal, verify
from tally.storage import Store
from tally.storage.rows import AUDIT_COLUMNS
from tally.support.cursors import Page, decode_cursor, page_of


@dataclass(frozen=True, slots=True)
class AuditRecord:
    id: int
    occurred_at_us: int
    actor_type: str
    actor_id: str | None
    action: str
    object_id: str | None
    status_code: int
    code: str | None
    request_id: str | None
    client_address: str | None
    chain_seq: int | None
    chain_hash: str | None


class AuditLog:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def list(self, tenant_id: str, *, limit: int, cursor: str | None) -> Page[AuditRecord]:
        """The tenant's rows, oldest first."""
        rows = await self._store.fetch(
            f"SELECT e.id, {', '.join(f'e.{c}' for c in AUDIT_COLUMNS)}, s.chain_seq,"
            " s.chain_hash FROM audit_events AS e LEFT JOIN audit_seals AS s"
            # "s.event_id > $2" says nothing new, but bounds the seals PostgreSQL
            # reads when it plans a merge join (it had read them all from the first).
            " ON s.event_id = e.id AND s.event_id > $2"
            " WHERE e.tenant_id = $1 AND e.id > $2 ORDER BY e.id LIMIT $3",
            tenant_id,
            decode_cursor(cursor) if cursor else 0,
            limit + 1,
        )
        return page_of([AuditRecord(*r) for r in rows], limit, lambda r: r.id)

    async def head(self) -> ChainHead:
        return await read_head(self._store)

    async def seal(self, rows_max: int) -> int:
        """Seal up to ``rows_max`` rows onto the chain; returns how many."""
        return await seal(self._store, rows_max)

    async def verify(self, *, seal_first_rows_max: int | None = None) -> Verdict:
        """Walk the whole chain (after sealing what waits, if asked)."""
        if seal_first_rows_max is not None:
            while await seal(self._store, seal_first_rows_max):
                pass
        return await verify(self._store)

"""One request's audit facts, and writing its row with the change it made."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tally.storage.rows import AUDIT_COLUMNS
from tally.storage.store import Tx

FIELDS = ("tenant_id", *AUDIT_COLUMNS)
INSERT_SQL = (
    f"INSERT INTO audit_events ({', '.join(FIELDS)})"
    f" VALUES ({', '.join(f'${i}' for i in range(1, len(FIELDS) + 1))})"
)


@dataclass(slots=True)
class AuditContext:
    """One request's audit facts, filled in as the request learns them."""

    action: str  # the route's operation id: createTransfer, revokeApiKey, ...
    request_id: str | None
    client_address: str | None
    tenant_id: str | None = None
    actor_type: str = "anonymous"  # user, api_key, anonymous
    actor_id: str | None = None
    object_id: str | None = None
    recorded: bool = False  # written with the change; the route need not append it

    def row(
        self, status: int, code: str | None, now_us: int, object_id: str | None = None
    ) -> tuple[Any, ...]:
        """The audit_events row, in the order of FIELDS."""
        return (
            self.tenant_id,
            now_us,
            self.actor_type,
            self.actor_id,
            self.action,
            object_id or self.object_id,
            status,
            code,
            self.request_id,
            self.client_address,
        )


async def record(tx: Tx, ctx: AuditContext, status: int, code: str | None, now_us: int) -> None:
    """Write the request's row in the transaction of its change."""
    await tx.execute(INSERT_SQL, *ctx.row(status, code, now_us))
    ctx.recorded = True

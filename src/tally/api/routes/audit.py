"""The audit log route of api.md §6, for admins."""

from __future__ import annotations

from starlette.responses import Response

from tally.api.answers import list_response
from tally.api.endpoint import Call, RouteTable
from tally.api.routes.identity import CURSOR, LIMIT, READ_ERRORS, cursor
from tally.api.schemas.audit import AuditActorOut, AuditEventList, AuditEventOut
from tally.audit import AuditRecord
from tally.errors import Forbidden
from tally.identity import ADMIN
from tally.support.clock import format_time

routes = RouteTable(tag="Audit")


@routes.route(
    "GET", "/v1/audit-events", "listAuditEvents", "The tenant's audit log, oldest first",
    scope=ADMIN, success={200: AuditEventList}, errors=READ_ERRORS, params=(LIMIT, CURSOR),
)  # fmt: skip
async def list_audit_events(call: Call) -> Response:
    if ADMIN not in call.principal.scopes:
        raise Forbidden("The audit log is for admins.")
    page = await call.services.audit_log.list(
        call.tenant_id, limit=call.limit(), cursor=cursor(call)
    )
    return list_response(page, audit_event_out, AuditEventList)


def audit_event_out(r: AuditRecord) -> AuditEventOut:
    return AuditEventOut(
        "audit_event",
        r.id,
        format_time(r.occurred_at_us),
        AuditActorOut(r.actor_type, r.actor_id),  # type: ignore[arg-type]
        r.action,
        r.object_id,
        r.status_code,
        r.code,
        r.request_id,
        r.client_address,
        r.chain_seq,
        r.chain_hash,
    )

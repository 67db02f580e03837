"""The event log route of api.md §4."""

from __future__ import annotations

import msgspec
from starlette.responses import Response

from tally.api.answers import list_response
from tally.api.endpoint import Call, Param, RouteTable
from tally.api.parsing import query_int, query_text
from tally.api.routes.params import CURSOR, LIMIT, READ_ERRORS
from tally.api.schemas.ledger import EventList, EventOut
from tally.storage.records import EventRecord
from tally.support.clock import format_time

AFTER_MAX = 2**62  # beyond any sequence a tenant reaches; the document publishes it

routes = RouteTable(tag="Events")


@routes.route(
    "GET", "/v1/events", "listEvents", "List events, oldest first",
    scope="events:read", success={200: EventList}, errors=READ_ERRORS,
    params=(
        Param(
            "after",
            "query",
            {"type": "integer", "minimum": 0, "maximum": AFTER_MAX, "default": 0},
            "Return events with a sequence greater than this.",
        ),
        LIMIT,
        CURSOR,
    ),
)  # fmt: skip
async def list_events(call: Call) -> Response:
    r = call.request
    page = await call.services.ledger.list_events(
        call.tenant_id,
        after=query_int(r, "after", 0, 0, AFTER_MAX),
        limit=call.limit(),
        cursor=query_text(r, "cursor", 128),
    )
    return list_response(page, event_out, EventList)


def event_out(e: EventRecord) -> EventOut:
    # The stored data is the object's public JSON already: sent as it is.
    return EventOut(e.sequence, e.type, format_time(e.created_at_us), msgspec.Raw(e.data.encode()))  # type: ignore[arg-type]

"""The event log routes of api.md §4 and §8: the list (short and long polling)
and the Server-Sent Events stream. The WebSocket stream (/v1/events/ws) is
``tally.api.streams.EventSocket``, mounted beside them."""

from __future__ import annotations

import msgspec
from starlette.responses import Response

from tally.api.answers import list_response
from tally.api.endpoint import Call, Param, RouteTable
from tally.api.parsing import query_int, query_text
from tally.api.routes.params import CURSOR, LIMIT, READ_ERRORS
from tally.api.schemas.ledger import EventList, EventOut
from tally.api.streams import (
    AFTER_MAX,
    EVENT_TYPES,
    LAST_EVENT_ID_DIGITS_MAX,
    TYPES_CHARS_MAX,
    open_stream,
)
from tally.storage.records import EventRecord
from tally.support.clock import format_time
from tally.support.cursors import decode_cursor

routes = RouteTable(tag="Events")

AFTER = Param(
    "after",
    "query",
    {"type": "integer", "minimum": 0, "maximum": AFTER_MAX, "default": 0},
    "Return events with a sequence greater than this.",
)


@routes.route(
    "GET", "/v1/events", "listEvents", "List events, oldest first; or wait for the next",
    scope="events:read", success={200: EventList}, errors=READ_ERRORS,
    params=(
        AFTER,
        Param(
            "wait_seconds",
            "query",
            {"type": "integer", "minimum": 0, "maximum": 30, "default": 0},
            "Long polling: when no event follows `after` (or the cursor), wait up to "
            "this long for one to commit, and answer as soon as one does; an empty page "
            "when none did.",
        ),
        LIMIT,
        CURSOR,
    ),
)  # fmt: skip
async def list_events(call: Call) -> Response:
    r = call.request
    after = query_int(r, "after", 0, 0, AFTER_MAX)
    wait_max = call.settings.events_wait_seconds_max
    wait_seconds = query_int(r, "wait_seconds", 0, 0, wait_max)
    limit = call.limit()
    cursor = query_text(r, "cursor", 128)
    ledger = call.services.ledger
    page = await ledger.list_events(call.tenant_id, after=after, limit=limit, cursor=cursor)
    if not page.items and wait_seconds > 0:
        start = decode_cursor(cursor) if cursor else after
        if await call.services.events.wait_for_event(call.tenant_id, start, wait_seconds):
            page = await ledger.list_events(call.tenant_id, after=after, limit=limit, cursor=cursor)
    return list_response(page, event_out, EventList)


def event_out(e: EventRecord) -> EventOut:
    # The stored data is the object's public JSON already: sent as it is.
    return EventOut(e.sequence, e.type, format_time(e.created_at_us), msgspec.Raw(e.data.encode()))  # type: ignore[arg-type]


@routes.route(
    "GET", "/v1/events/stream", "streamEvents", "Stream events as Server-Sent Events",
    scope="events:read", success={200: None}, errors=READ_ERRORS,
    media_type="text/event-stream",
    params=(
        Param(
            "after",
            "query",
            {"type": "integer", "minimum": 0, "maximum": AFTER_MAX},
            "Resume after this sequence (a `Last-Event-ID` header takes precedence). "
            "Without either, the stream starts with the next event to commit.",
        ),
        Param(
            "types",
            "query",
            {"type": "string", "minLength": 1, "maxLength": TYPES_CHARS_MAX,
             "pattern": "^(" + "|".join(t.replace(".", "\\.") for t in EVENT_TYPES)
             + ")(,(" + "|".join(t.replace(".", "\\.") for t in EVENT_TYPES) + "))*$"},
            "Only these event types, comma-separated: " + ", ".join(EVENT_TYPES) + ".",
        ),
        Param(
            "Last-Event-ID",
            "header",
            {"type": "string", "pattern": f"^[0-9]{{1,{LAST_EVENT_ID_DIGITS_MAX}}}$"},
            "Resume after this sequence: the id of the last event received, as a "
            "reconnecting EventSource sends it.",
        ),
    ),
)  # fmt: skip
async def stream_events(call: Call) -> Response:
    return await open_stream(call.request, call.services, call.tenant_id)

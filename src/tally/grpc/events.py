"""``StreamEvents``: the live event stream of api.md §8 over gRPC.

The same pump as Server-Sent Events and WebSocket (``api.streams.pump``): the
stream subscribes to its tenant's feed in the process's ``EventHub``, sends what
it missed after ``after`` (read from the table), then each event as it commits,
every event once and in order. It ends with OK when the hub closes it (the
stream's time is up, or the server is stopping): the client resumes with
``after`` = the last sequence it received. A client too slow to keep up
(``TALLY_EVENTS_BUFFER_EVENTS_MAX`` events behind) is ended with
RESOURCE_EXHAUSTED (code ``stream_overflow``, trailing metadata
``last-sequence``), and resumes from there. A write the client does not take
within ``TALLY_EVENTS_SEND_TIMEOUT_SECONDS`` ends the stream, as for SSE.

No heartbeat messages: HTTP/2 keepalive pings keep idle connections open.
"""

from __future__ import annotations

import asyncio

import grpc
import msgspec

from tally.api.streams import AFTER_MAX, EVENT_TYPES, pump
from tally.errors import FieldError, TallyError, ValidationFailed
from tally.events import SharedEvent, Subscriber
from tally.grpc.v1 import ledger_pb2 as pb
from tally.services import Services


class StreamOverflow(TallyError):
    """The client did not keep up with its events; it resumes after ``last-sequence``."""

    code = "stream_overflow"


class _Event(msgspec.Struct):
    """An event as the hub encoded it once for every stream (GET /v1/events's item)."""

    sequence: int
    type: str
    created_at: str
    data: msgspec.Raw


_decode_event = msgspec.json.Decoder(_Event).decode


def requested(request: pb.StreamEventsRequest) -> tuple[int | None, frozenset[str] | None]:
    """Where the stream starts (None: from now on) and the types it wants (None: all)."""
    after = None
    if request.HasField("after"):
        if not 0 <= request.after <= AFTER_MAX:
            message = f"after must be an event sequence, 0-{AFTER_MAX}."
            raise ValidationFailed([FieldError("after", "out_of_range", message)])
        after = request.after
    if not request.types:
        return after, None
    types = frozenset(request.types)
    unknown = sorted(types - set(EVENT_TYPES))
    if unknown:
        shown = ", ".join(t[:40] for t in unknown[:5])
        message = f"types takes a list of {', '.join(EVENT_TYPES)}; not {shown}."
        raise ValidationFailed([FieldError("types", "invalid", message)])
    return after, types


class _Sink:
    def __init__(self, subscriber: Subscriber, context: grpc.aio.ServicerContext) -> None:
        self._subscriber = subscriber
        self._context = context
        self.overflowed_after: int | None = None

    async def events(self, events: list[SharedEvent]) -> None:
        subscriber = self._subscriber
        for shared in events:
            e = _decode_event(shared.json)
            message = pb.Event(
                sequence=e.sequence,
                type=e.type,
                created_at=e.created_at,
                data=bytes(e.data).decode(),
            )
            # On the hub's write clock, as SSE's writes (streams.timed_send).
            subscriber.sending_since = asyncio.get_running_loop().time()
            try:
                await self._context.write(message)
            finally:
                subscriber.sending_since = 0.0

    async def heartbeat(self) -> None:
        pass  # HTTP/2 keepalive does this job

    async def overflow(self, last_sequence: int) -> None:
        self.overflowed_after = last_sequence


async def stream_events(
    services: Services,
    tenant_id: str,
    request: pb.StreamEventsRequest,
    context: grpc.aio.ServicerContext,
) -> None:
    after, types = requested(request)
    subscriber = await services.events.subscribe(
        tenant_id, types, lifetime_seconds=services.settings.events_stream_seconds_max
    )
    sink = _Sink(subscriber, context)
    subscriber.task = asyncio.current_task()
    try:
        # No receive: grpc.aio cancels the call's task when its client leaves.
        await pump(services, subscriber, after, sink, None)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if not subscriber.stuck or task is None:
            raise  # the client left, or the server is stopping
        task.uncancel()  # the hub ended a write the client did not take
        return
    finally:
        subscriber.task = None
        services.events.unsubscribe(subscriber)
    if sink.overflowed_after is not None:
        raise StreamOverflow(
            "The client did not keep up; resume with after = last-sequence.",
            metadata={"last-sequence": str(sink.overflowed_after)},
        )

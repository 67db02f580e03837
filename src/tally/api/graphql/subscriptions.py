"""The subscription root: live events, fed by the same hub as the event streams.

``events`` subscribes to the caller's tenant in the process's ``EventHub``
(tally.events) and runs the streams' own ``pump`` (tally.api.streams): the
events missed since ``afterSequence`` read from the table, then each new one as
it commits, every event once and in sequence order. The pump hands each batch
to this resolver through a one-slot relay, so a client that does not read
holds the pump back rather than a growing queue; past the hub's buffer it
overflows as a stream does, and the subscription ends with an error that says
where to resume.

The WebSocket protocol around it (graphql-transport-ws) is ``ws.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from typing import Any

import msgspec
import strawberry
from graphql import GraphQLError
from strawberry.types import Info

from tally.api.graphql.scalars import Int64
from tally.api.graphql.types import Event
from tally.api.streams import AFTER_MAX, SCOPE, event_types, pump
from tally.errors import FieldError, ValidationFailed
from tally.events import SharedEvent, Subscriber
from tally.services import Services


class _End:
    """The pump stopped: the stream's time is up, the server is stopping, or the
    client did not keep up (``overflow_after`` is then where to resume)."""

    __slots__ = ("error", "overflow_after")

    def __init__(self, overflow_after: int | None = None, error: BaseException | None = None):
        self.overflow_after = overflow_after
        self.error = error


class _Relay:
    """``pump``'s sink for one subscription: one batch at a time to the resolver."""

    def __init__(self) -> None:
        self._slot: asyncio.Queue[list[SharedEvent] | _End] = asyncio.Queue(maxsize=1)

    async def events(self, events: list[SharedEvent]) -> None:
        await self._slot.put(events)

    async def heartbeat(self) -> None:
        """Nothing: the WebSocket connection pings its client itself (ws.py)."""

    async def overflow(self, last_sequence: int) -> None:
        await self._slot.put(_End(overflow_after=last_sequence))

    async def end(self, error: BaseException | None = None) -> None:
        await self._slot.put(_End(error=error))

    async def get(self) -> list[SharedEvent] | _End:
        return await self._slot.get()


def _event(shared: SharedEvent) -> Event:
    body: dict[str, Any] = msgspec.json.decode(shared.json)
    return Event(
        sequence=body["sequence"], type=body["type"], created_at=body["created_at"],
        data=body["data"],
    )  # fmt: skip


async def _run(
    services: Services, subscriber: Subscriber, after: int | None, relay: _Relay
) -> None:
    try:
        await pump(services, subscriber, after, relay, None)
    except asyncio.CancelledError:
        raise
    except Exception as error:  # the catch-up read failed (the database away)
        await relay.end(error)
        return
    if not subscriber.overflowed:
        await relay.end()


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description=(
            "Each event as it commits, oldest first (scope events:read). With "
            "afterSequence, the events after it first (resume where a previous "
            "subscription stopped); without, from now on. Over WebSocket "
            "(graphql-transport-ws) at /graphql."
        )
    )
    async def events(
        self,
        info: Info,
        after_sequence: Int64 | None = None,
        types: list[str] | None = None,
    ) -> AsyncGenerator[Event, None]:
        ctx = info.context
        ctx.require(SCOPE)
        if after_sequence is not None and not 0 <= after_sequence <= AFTER_MAX:
            message = f"afterSequence must be 0-{AFTER_MAX}."
            raise ValidationFailed([FieldError("afterSequence", "out_of_range", message)])
        wanted = None if types is None else event_types(types, "types")
        services: Services = ctx.services
        subscriber = await services.events.subscribe(
            ctx.tenant_id, wanted, lifetime_seconds=services.settings.events_stream_seconds_max
        )
        relay = _Relay()
        task = asyncio.create_task(_run(services, subscriber, after_sequence, relay))
        try:
            while True:
                item = await relay.get()
                if isinstance(item, _End):
                    if item.error is not None:
                        raise item.error
                    if item.overflow_after is not None:
                        raise _overflow(item.overflow_after)
                    return
                for shared in item:
                    yield _event(shared)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            services.events.unsubscribe(subscriber)


def _overflow(last_sequence: int) -> GraphQLError:
    return GraphQLError(
        "The client did not keep up with the events; subscribe again with "
        f"afterSequence: {last_sequence} to resume.",
        extensions={"code": "overflow", "lastSequence": last_sequence},
    )

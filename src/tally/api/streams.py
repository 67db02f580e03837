"""The live event streams of api.md §8: Server-Sent Events and WebSocket.

Both are thin adapters over the process's ``EventHub`` (tally.events): a stream
subscribes to its tenant, sends the events it missed (read from the table, from
``Last-Event-ID`` or ``?after=`` up to where the hub's feed stood when it
subscribed), then whatever the feed offers after that. The subscription is
taken before the catch-up read, and every event is sent at most once in
sequence order, so a resumed stream has no gap and no duplicate.

Each stream is the ASGI server's one task for the connection, plus one small
task that waits for the client to leave (``http.disconnect`` or
``websocket.disconnect``); nothing else per stream. Frames are the hub's shared
bytes, written straight to ASGI ``send``: no Starlette StreamingResponse, no
per-stream encoding of live events. Memory per stream was measured
(docs/events.md, bench/c10k.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import typing

from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from tally.api.parsing import QueryNames, check_query_names, query_int, query_text
from tally.api.problems import problem
from tally.api.schemas.ledger import EventOut
from tally.errors import FieldError, Forbidden, TallyError, Unauthenticated, ValidationFailed
from tally.events import SharedEvent, Subscriber
from tally.identity import ADMIN, Principal
from tally.services import Services

LAST_EVENT_ID_DIGITS_MAX = 18  # below AFTER_MAX, whatever the digits
AFTER_MAX = 2**62  # beyond any sequence a tenant reaches; the document publishes it
EVENT_TYPES: tuple[str, ...] = typing.get_args(typing.get_type_hints(EventOut)["type"])
TYPES_CHARS_MAX = 512
# A resuming stream reads what it missed in pages of this many events.
CATCH_UP_PAGE_EVENTS = 200
SCOPE = "events:read"
# SSE: how long a browser's EventSource waits before it reconnects.
RETRY_MS = 1_000
WS_QUERY = QueryNames(frozenset({"after", "types"}), frozenset())


# -- the parameters both take ------------------------------------------------------------


def stream_types(conn: HTTPConnection) -> frozenset[str] | None:
    """``?types=a,b``: only these event types (None: every type)."""
    raw = query_text(conn, "types", TYPES_CHARS_MAX)
    return None if raw is None else event_types(raw.split(","), "types")


def event_types(names: typing.Iterable[str], field: str) -> frozenset[str]:
    """The event types a stream asks for, each one known (422 otherwise)."""
    types = frozenset(names)
    unknown = sorted(types - set(EVENT_TYPES))
    if unknown:
        shown = ", ".join(t[:40] for t in unknown[:5])
        message = f"{field} takes a list of {', '.join(EVENT_TYPES)}; not {shown}."
        raise ValidationFailed([FieldError(field, "invalid", message)])
    return types


def stream_after(conn: HTTPConnection) -> int | None:
    """Where a stream resumes: after ``Last-Event-ID`` (what a reconnecting
    EventSource sends), else ``?after=``; None: from now on."""
    last_event_id = conn.headers.get("last-event-id")
    after = query_int(conn, "after", -1, 0, AFTER_MAX)
    if last_event_id is None:
        return None if after < 0 else after
    text = last_event_id.strip()
    # At most 18 digits, as the document says (^[0-9]{1,18}$): every value that
    # pattern allows is a sequence the server takes (found by schemathesis, when
    # the pattern allowed 19 digits and the server refused those above 2^62).
    if not (text.isascii() and text.isdigit() and len(text) <= LAST_EVENT_ID_DIGITS_MAX):
        message = (
            "Last-Event-ID must be an event sequence: an integer of at most "
            f"{LAST_EVENT_ID_DIGITS_MAX} digits."
        )
        raise ValidationFailed([FieldError("Last-Event-ID", "out_of_range", message)])
    return int(text)


# -- one pump for both protocols ---------------------------------------------------------


class Sink(typing.Protocol):
    async def events(self, events: list[SharedEvent]) -> None: ...

    async def heartbeat(self) -> None: ...

    async def overflow(self, last_sequence: int) -> None: ...


async def pump(
    services: Services,
    subscriber: Subscriber,
    after: int | None,
    sink: Sink,
    receive: Receive | None,
) -> None:
    """Send what was missed, then what comes, until the client leaves, overflows,
    or the stream's time is up (the hub closes it). With ``receive``, the pump
    also asks at each heartbeat whether the client left; without it (a GraphQL
    subscription, whose connection reads its client itself), the caller ends it."""
    last = subscriber.live_from if after is None else after
    while last < subscriber.live_from:
        records = await services.ledger.read_events(
            subscriber.tenant_id, after=last, limit=CATCH_UP_PAGE_EVENTS
        )
        records = [r for r in records if r.sequence <= subscriber.live_from]
        if not records:
            break
        last = records[-1].sequence
        types = subscriber.types
        missed = [SharedEvent(r) for r in records if types is None or r.type in types]
        if missed:
            await sink.events(missed)
    last = max(last, subscriber.live_from)
    while not subscriber.closed:
        waiter = subscriber.ready()
        if waiter is not None:
            await waiter
        fresh = [e for e in subscriber.take() if e.sequence > last]
        if fresh:
            last = fresh[-1].sequence
            await sink.events(fresh)
        if subscriber.heartbeat:
            subscriber.heartbeat = False
            if receive is not None and client_left(receive):
                return
            if not fresh:
                await sink.heartbeat()
        if subscriber.overflowed:
            await sink.overflow(last)
            return


DISCONNECTS = ("http.disconnect", "websocket.disconnect")
POLL_MESSAGES_MAX = 16


def client_left(receive: Receive) -> bool:
    """Whether the client has left, asked without waiting and without a task.

    ASGI's ``receive`` answers at once when a message is there already (a
    disconnect, once the client has gone) and otherwise waits: step it once, and
    drop it if it would wait. Streams ask at each heartbeat. A task per stream
    waiting on ``receive`` instead cost about a tenth of a stream's memory
    (docs/events.md). Other messages (the end of the request, a WebSocket
    client's chatter) are read and ignored."""
    for _ in range(POLL_MESSAGES_MAX):
        step = receive().__await__()
        try:
            step.send(None)
        except StopIteration as done:
            if done.value["type"] in DISCONNECTS:
                return True
            continue
        step.close()
        return False
    return False


def _overflow_json(last_sequence: int) -> str:
    return json.dumps(
        {
            "type": "overflow",
            "last_sequence": last_sequence,
            "detail": "The client did not keep up; resume after last_sequence.",
        },
        separators=(",", ":"),
    )


# -- Server-Sent Events ------------------------------------------------------------------


async def timed_send(subscriber: Subscriber, send: Send, message: Message) -> None:
    """``send``, on the hub's write clock: a write its client does not take within
    TALLY_EVENTS_SEND_TIMEOUT_SECONDS is cancelled by the hub (no timer per write)."""
    subscriber.sending_since = _loop_time()
    try:
        await send(message)
    finally:
        subscriber.sending_since = 0.0


def _loop_time() -> float:
    return asyncio.get_running_loop().time()


def _cancelled_by_hub(subscriber: Subscriber) -> bool:
    """Whether the cancellation being handled is the hub's end of a write the
    client did not take (then the stream ends quietly), not a shutdown's."""
    task = asyncio.current_task()
    if not subscriber.stuck or task is None:
        return False
    task.uncancel()
    return True


async def open_stream(request: HTTPConnection, services: Services, tenant_id: str) -> Response:
    """A tenant's Server-Sent Events stream, as the request asks for it: from
    ``Last-Event-ID`` or ``?after=`` (the missed events first) or from the next
    event to commit, of the ``?types=`` asked for. REST's ``/v1/events/stream``
    and the console's live feed (``console.ledger_pages.live_events``, whose
    request passed the console's session cookie instead) both open theirs here."""
    after, types = stream_after(request), stream_types(request)
    if request.scope.get("method") == "HEAD":  # the headers a GET would answer, no stream
        return Response(media_type=EventStream.media_type, headers={"x-accel-buffering": "no"})
    lifetime = services.settings.events_stream_seconds_max
    subscriber = await services.events.subscribe(tenant_id, types, lifetime_seconds=lifetime)
    return EventStream(services, subscriber, after)


class EventStream(Response):
    """``text/event-stream``, written to ASGI ``send`` directly."""

    media_type = "text/event-stream"

    def __init__(self, services: Services, subscriber: Subscriber, after: int | None) -> None:
        super().__init__(headers={"x-accel-buffering": "no"})
        # Not a body of known length: the stream is chunked until it ends.
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        self._services = services
        self._subscriber = subscriber
        self._after = after
        self._send: Send | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # No wrapper coroutine or closure here: each would be kept for as long as
        # the stream lives, ten thousand times over.
        subscriber = self._subscriber
        subscriber.task = asyncio.current_task()
        self._send = send
        try:
            start = {"type": "http.response.start", "status": 200, "headers": self.raw_headers}
            self.raw_headers = []  # sent: not kept for the stream's life
            await timed_send(subscriber, send, start)
            await self._write(f"retry: {RETRY_MS}\n\n".encode())
            await pump(self._services, subscriber, self._after, self, receive)
            await self._write(b"", more=False)
        except asyncio.CancelledError:
            if not _cancelled_by_hub(subscriber):
                raise
        except OSError:
            pass  # the client left mid-write: nothing more can reach it
        finally:
            subscriber.task = None
            self._services.events.unsubscribe(subscriber)

    async def _write(self, body: bytes, *, more: bool = True) -> None:
        assert self._send is not None
        message = {"type": "http.response.body", "body": body, "more_body": more}
        await timed_send(self._subscriber, self._send, message)

    async def events(self, events: list[SharedEvent]) -> None:
        # One event, the common case: its shared bytes as they are.
        body = events[0].sse if len(events) == 1 else b"".join(e.sse for e in events)
        await self._write(body)

    async def heartbeat(self) -> None:
        await self._write(b": heartbeat\n\n")

    async def overflow(self, last_sequence: int) -> None:
        await self._write(f"event: overflow\ndata: {_overflow_json(last_sequence)}\n\n".encode())


# -- WebSocket -----------------------------------------------------------------------------

# Close codes (RFC 6455 §7.4.2 leaves 4000-4999 to applications): the HTTP status
# of the same refusal, plus 4000.
CLOSE_OVERFLOW = 4008  # too slow: resume with ?after=<last_sequence>
NORMAL_CLOSURE = 1000


class _SocketSink:
    def __init__(self, subscriber: Subscriber, send: Send) -> None:
        self._subscriber = subscriber
        self._send = send

    async def text(self, text: str) -> None:
        await timed_send(self._subscriber, self._send, {"type": "websocket.send", "text": text})

    async def events(self, events: list[SharedEvent]) -> None:
        for event in events:
            await self.text(event.text)

    async def heartbeat(self) -> None:
        await self.text('{"type":"heartbeat"}')

    async def overflow(self, last_sequence: int) -> None:
        await self.text(_overflow_json(last_sequence))
        await self.close(CLOSE_OVERFLOW)

    async def close(self, code: int) -> None:
        await timed_send(self._subscriber, self._send, {"type": "websocket.close", "code": code})


class EventSocket:
    """``/v1/events/ws``: the same events, one JSON text message each."""

    def __init__(self, services: Services) -> None:
        self._services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        opened = await self._open(scope, receive, send)
        if opened is not None:
            # Only these three outlive the handshake: the principal, the parsed
            # request and its headers would be kept by this frame for as long as
            # the stream lives, about 2 KiB each (measured with tracemalloc).
            tenant_id, after, types = opened
            await self._stream(receive, send, tenant_id, after, types)

    async def _open(
        self, scope: Scope, receive: Receive, send: Send
    ) -> tuple[str, int | None, frozenset[str] | None] | None:
        """Check the handshake and the credentials: the stream's tenant and where
        it starts, or None when it was refused."""
        conn = HTTPConnection(scope)
        try:
            check_query_names(conn, WS_QUERY)
            after, types = stream_after(conn), stream_types(conn)
            header = conn.headers.get("authorization")
            address = conn.client.host if conn.client is not None else None
            principal = None if header is None else await self._admit(header, address)
        except TallyError as error:
            await _deny(scope, send, error)
            return None
        await send({"type": "websocket.accept"})
        if principal is None:
            principal = await self._first_message_auth(receive, send, address)
            if principal is None:
                return None
        return principal.tenant_id, after, types

    async def _admit(self, authorization: str, address: str | None) -> Principal:
        """Who is calling, allowed to read events and within their rate limit."""
        principal = await admit_socket(self._services, authorization, address)
        if SCOPE not in principal.scopes and ADMIN not in principal.scopes:
            raise Forbidden(f"This credential lacks the {SCOPE} scope.")
        return principal

    async def _first_message_auth(
        self, receive: Receive, send: Send, address: str | None
    ) -> Principal | None:
        """A credential in a first ``{"type": "auth", "token": ...}`` message, for
        clients (browsers) that cannot set a handshake header."""
        try:
            async with asyncio.timeout(self._services.settings.events_ws_auth_seconds):
                message = await receive()
        except TimeoutError:
            await _close(send, Unauthenticated("No auth message within the time allowed."))
            return None
        if message["type"] != "websocket.receive":
            return None
        token = _auth_token(message)
        try:
            if token is None:
                raise Unauthenticated('The first message must be {"type":"auth","token":"..."}.')
            return await self._admit(f"Bearer {token}", address)
        except TallyError as error:
            await _close(send, error)
            return None

    async def _stream(
        self,
        receive: Receive,
        send: Send,
        tenant_id: str,
        after: int | None,
        types: frozenset[str] | None,
    ) -> None:
        services = self._services
        settings = services.settings
        try:
            subscriber = await services.events.subscribe(
                tenant_id, types, lifetime_seconds=settings.events_stream_seconds_max
            )
        except TallyError as error:
            await _close(send, error)
            return
        sink = _SocketSink(subscriber, send)
        subscriber.task = asyncio.current_task()
        try:
            await pump(services, subscriber, after, sink, receive)
            if not subscriber.overflowed:
                await sink.close(NORMAL_CLOSURE)
        except asyncio.CancelledError:
            if not _cancelled_by_hub(subscriber):
                raise
        except OSError:
            pass  # the client left mid-write
        finally:
            subscriber.task = None
            services.events.unsubscribe(subscriber)


async def admit_socket(services: Services, authorization: str, address: str | None) -> Principal:
    """A WebSocket's caller (the ``Authorization`` value, from the handshake or a
    first message), within their rate limit: what ``endpoint.admit`` does for an
    HTTP request, bad credentials counted against the client's address as there.
    Scopes are the route's business (events:read here, each field's under GraphQL).
    The rule is ``Services.admit``, as for every entry point."""
    principal, _ = await services.admit(authorization, address)
    return principal


def _auth_token(message: Message) -> str | None:
    text = message.get("text")
    if not isinstance(text, str) or len(text) > 8_192:
        return None
    try:
        body = json.loads(text)
    except ValueError:
        return None
    if not isinstance(body, dict) or body.get("type") != "auth":
        return None
    token = body.get("token")
    return token if isinstance(token, str) and token else None


async def _close(send: Send, error: TallyError) -> None:
    """After the handshake: an error message, then the close code of its status."""
    answer = problem(error, None)
    with contextlib.suppress(OSError):
        await send({"type": "websocket.send", "text": answer.body.decode()})
        code = 4000 + answer.status  # 4401, 4403, 4422, 4429, 4503
        await send({"type": "websocket.close", "code": code, "reason": error.code})


async def _deny(scope: Scope, send: Send, error: TallyError) -> None:
    """Before the handshake: the HTTP problem response, where the server can send
    one (the ASGI denial-response extension), else a plain refusal (403)."""
    answer = problem(error, None)
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": 1008})
        return
    headers = [(k.lower().encode(), v.encode()) for k, v in answer.headers]
    await send(
        {"type": "websocket.http.response.start", "status": answer.status, "headers": headers}
    )
    await send({"type": "websocket.http.response.body", "body": answer.body})

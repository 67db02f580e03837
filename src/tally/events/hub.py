"""One hub of live events per process: subscribers per tenant, one reader per tenant.

Streams (Server-Sent Events, WebSocket) and long polls ``subscribe`` to a
tenant. The first subscriber of a tenant starts that tenant's ``Feed``: one task
that reads the events table after the highest sequence it has seen and offers
each new event to every subscriber's bounded buffer. However many streams a
tenant has open, a commit costs one query per process, and each event is
encoded once (``SharedEvent``) and shared by every stream that sends it.

A feed reads when it is woken (``wake``: by this process's writer after a
commit, and by the other processes' commits through PostgreSQL ``NOTIFY`` or
Redis pub/sub) and, as a backstop, every ``poll_seconds``: the table is the
source of truth, so a lost wakeup delays an event, never loses it.

A subscriber's buffer holds at most ``buffer_events_max`` events. A client too
slow to keep up lets it fill: the subscriber is marked ``overflowed``, gets
nothing more, and its stream ends with a final message saying so (the client
resumes from the last event it got). Memory per stream stays bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import signal
from collections.abc import Iterable
from typing import Any

import msgspec

from tally.errors import TallyError
from tally.ledger import Ledger
from tally.storage.records import EventRecord
from tally.storage.wakeup_leases import WakeupLeases
from tally.support.clock import format_time

log = logging.getLogger(__name__)

# A feed reads at most this many events per query, and this many queries per
# wakeup before it lets the loop breathe (and goes on at once).
PAGE_EVENTS_MAX = 500
PAGES_PER_WAKE_MAX = 20
# After a failed read (the database away), a feed waits this long first.
RETRY_SECONDS = 1.0
# A feed reads again at most this soon after a read (see _follow).
READ_INTERVAL_SECONDS = 0.025
# How often the hub looks at its subscribers' clocks (heartbeats, ends), at most.
TICK_SECONDS = 1.0


class _PublicEvent(msgspec.Struct):
    """GET /v1/events's item (api.schemas.ledger.EventOut), field for field."""

    sequence: int
    type: str
    created_at: str
    data: msgspec.Raw


_encode = msgspec.json.Encoder().encode


def event_json(record: EventRecord) -> bytes:
    """The event as GET /v1/events lists it."""
    created_at = format_time(record.created_at_us)
    raw = msgspec.Raw(record.data.encode())
    return _encode(_PublicEvent(record.sequence, record.type, created_at, raw))


def parse_wakeup(message: str) -> tuple[str, str]:
    """A wakeup from another process, as its tenant id and the tenant's last event
    sequence: ``<tenant id>:<sequence>`` (PostgreSQL ``NOTIFY``), or ``<tenant id>``
    alone (Redis; the sequence is then "")."""
    tenant_id, colon, sequence = message.rpartition(":")
    if not colon:
        return message, ""
    return tenant_id, sequence


class SharedEvent:
    """One event, encoded once, its bytes shared by every stream that sends it."""

    __slots__ = ("_sse", "_text", "json", "sequence", "type")

    def __init__(self, record: EventRecord) -> None:
        self.sequence = record.sequence
        self.type = record.type
        self.json = event_json(record)
        self._sse: bytes | None = None
        self._text: str | None = None

    @property
    def sse(self) -> bytes:
        """The Server-Sent Events frame (its JSON never holds a line break)."""
        if self._sse is None:
            head = f"id: {self.sequence}\nevent: {self.type}\ndata: ".encode()
            self._sse = head + self.json + b"\n\n"
        return self._sse

    @property
    def text(self) -> str:
        """The WebSocket text message."""
        if self._text is None:
            self._text = self.json.decode()
        return self._text


class Subscriber:
    """One stream's place in a feed: its filter and its bounded buffer. Kept
    small on purpose (slots, a list created only when events wait): ten thousand
    of them are one process's target (docs/events.md)."""

    __slots__ = (
        "_limit",
        "_waiter",
        "buffer",
        "closed",
        "ends_at",
        "heartbeat",
        "live_from",
        "overflowed",
        "sending_since",
        "stuck",
        "task",
        "tenant_id",
        "types",
    )

    def __init__(self, tenant_id: str, types: frozenset[str] | None, limit: int) -> None:
        self.tenant_id = tenant_id
        self.types = types
        self._limit = limit
        self.buffer: list[SharedEvent] = []
        # Every event after this sequence reaches the buffer (set by subscribe);
        # the stream reads the ones before it from the table itself.
        self.live_from = 0
        self.overflowed = False
        self.closed = False
        self.heartbeat = False
        self.ends_at = math.inf  # the loop's clock: the hub closes it then
        # While a write to the client is under way, when it began (the loop's
        # clock); a write that takes too long is cancelled by the hub (``stuck``),
        # through the stream's task: one clock for every stream, no timer each.
        self.sending_since = 0.0
        self.stuck = False
        self.task: asyncio.Task[Any] | None = None
        self._waiter: asyncio.Future[None] | None = None

    def offer(self, event: SharedEvent) -> None:
        if self.overflowed or self.closed or event.sequence <= self.live_from:
            return
        if self.types is not None and event.type not in self.types:
            return
        if len(self.buffer) >= self._limit:
            self.overflowed = True
        else:
            self.buffer.append(event)
        self._wake()

    def beat(self) -> None:
        self.heartbeat = True
        self._wake()

    def close(self) -> None:
        """The client went away (or the stream ended): wake the stream to finish."""
        self.closed = True
        self._wake()

    def take(self) -> list[SharedEvent]:
        events, self.buffer = self.buffer, []
        return events

    def ready(self) -> asyncio.Future[None] | None:
        """None when there is something to do (events, an overflow, a heartbeat, a
        close), else a future done when there is. A stream awaits the future
        itself: a coroutine here would be one more frame kept per stream."""
        if self.buffer or self.overflowed or self.closed or self.heartbeat:
            return None
        self._waiter = asyncio.get_running_loop().create_future()
        return self._waiter

    async def wait(self) -> None:
        waiter = self.ready()
        if waiter is not None:
            await waiter

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class Feed:
    """One tenant's subscribers and its one reader."""

    __slots__ = ("seen", "subscribers", "task", "tenant_id", "wakeup")

    def __init__(self, tenant_id: str, seen: int) -> None:
        self.tenant_id = tenant_id
        self.seen = seen  # the highest sequence offered to the subscribers
        self.subscribers: set[Subscriber] = set()
        self.wakeup = asyncio.Event()
        self.task: asyncio.Task[None] | None = None


class EventHub:
    def __init__(
        self,
        ledger: Ledger,
        *,
        buffer_events_max: int,
        heartbeat_seconds: float,
        poll_seconds: float,
        leases: WakeupLeases,
        send_timeout_seconds: float = 10.0,
        tick_seconds: float = TICK_SECONDS,
    ) -> None:
        self._ledger = ledger
        self._leases = leases
        self._send_timeout_seconds = send_timeout_seconds
        self._tick_seconds = tick_seconds
        self._buffer_events_max = buffer_events_max
        self._heartbeat_seconds = heartbeat_seconds
        self._poll_seconds = poll_seconds
        self._feeds: dict[str, Feed] = {}
        leases.follow(self._feeds.keys)  # every tenant this process has a feed of
        self._heartbeats: asyncio.Task[None] | None = None
        self._chained_signals: list[tuple[int, Any]] = []

    @property
    def subscribers(self) -> int:
        return sum(len(f.subscribers) for f in self._feeds.values())

    async def start(self) -> None:
        self._heartbeats = asyncio.create_task(self._beat(), name="tally-events-heartbeat")

    async def stop(self) -> None:
        self._restore_signals()
        tasks = [f.task for f in self._feeds.values() if f.task is not None]
        if self._heartbeats is not None:
            tasks.append(self._heartbeats)
        for feed in self._feeds.values():
            for subscriber in feed.subscribers:
                subscriber.close()
        self._feeds.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def close_all(self) -> None:
        """End every stream and long poll now (each gets its final chunk or close)."""
        for feed in list(self._feeds.values()):
            for subscriber in list(feed.subscribers):
                subscriber.close()

    def close_on_exit_signals(self) -> None:
        """On SIGTERM or SIGINT, end every stream before the server waits for them.

        uvicorn stops by waiting for every request in flight (up to its graceful
        shutdown timeout) before the lifespan's shutdown, and a stream never ends
        on its own: so a restart would hold every client for the whole timeout and
        then cut it off. Chained to the handler the server installed; through the
        loop's wakeup pipe (``call_soon_threadsafe``), the one safe way from a
        signal handler. Only where this is the main thread (uvicorn's processes)."""
        loop = asyncio.get_running_loop()
        for number in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(number)
            if not callable(previous):
                continue  # the default or ignored: no server of ours to chain to

            def handler(signum: int, frame: Any, previous: Any = previous) -> None:
                loop.call_soon_threadsafe(self.close_all)
                previous(signum, frame)

            try:
                signal.signal(number, handler)
            except ValueError:
                return  # not the main thread
            self._chained_signals.append((number, previous))

    def _restore_signals(self) -> None:
        for number, previous in reversed(self._chained_signals):
            with contextlib.suppress(ValueError):
                signal.signal(number, previous)
        self._chained_signals.clear()

    # -- wakeups -------------------------------------------------------------------------

    def wake(self, tenant_ids: Iterable[str]) -> None:
        """New events may have committed for these tenants."""
        for tenant_id in tenant_ids:
            feed = self._feeds.get(tenant_id)
            if feed is not None:
                feed.wakeup.set()

    def on_message(self, message: str) -> None:
        """A wakeup from another process (``parse_wakeup``)."""
        tenant_id, sequence = parse_wakeup(message)
        feed = self._feeds.get(tenant_id)
        if feed is not None and (not sequence.isdigit() or int(sequence) > feed.seen):
            feed.wakeup.set()

    def wake_all(self) -> None:
        """Wakeups may have been lost (a listener reconnected): everyone reads."""
        self.wake(list(self._feeds))

    # -- subscribers -----------------------------------------------------------------------

    async def subscribe(
        self,
        tenant_id: str,
        types: frozenset[str] | None = None,
        *,
        lifetime_seconds: float | None = None,
    ) -> Subscriber:
        """A subscriber that receives every event after its ``live_from``; closed by
        the hub after ``lifetime_seconds`` (about: the hub looks every second)."""
        if tenant_id not in self._feeds:
            await self._lease(tenant_id)
            seen = await self._ledger.last_event_sequence(tenant_id)
            if tenant_id not in self._feeds:  # nobody made it while we read
                feed = self._feeds[tenant_id] = Feed(tenant_id, seen)
                feed.task = asyncio.create_task(self._follow(feed), name="tally-events-feed")
        feed = self._feeds[tenant_id]
        subscriber = Subscriber(tenant_id, types, self._buffer_events_max)
        subscriber.live_from = feed.seen
        if lifetime_seconds:
            subscriber.ends_at = asyncio.get_running_loop().time() + lifetime_seconds
        feed.subscribers.add(subscriber)
        return subscriber

    async def _lease(self, tenant_id: str) -> None:
        """The tenant's wakeup lease, taken before the feed reads where its events
        stand: every commit that read does not see wakes this process
        (storage.wakeup_leases). Without it (the database refused it), the feed
        still reads on its poll: late, never lost."""
        try:
            await self._leases.take(tenant_id)
        except TallyError as exc:
            log.warning("events: no wakeup lease for a new feed: %s", exc.detail or exc.code)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        subscriber.closed = True
        feed = self._feeds.get(subscriber.tenant_id)
        if feed is None:
            return
        feed.subscribers.discard(subscriber)
        if not feed.subscribers:
            del self._feeds[subscriber.tenant_id]
            if feed.task is not None:
                feed.task.cancel()

    async def wait_for_event(self, tenant_id: str, after: int, timeout_seconds: float) -> bool:
        """Whether an event after ``after`` committed within the timeout (long polling)."""
        subscriber = await self.subscribe(tenant_id)
        try:
            if subscriber.live_from > after:
                return True
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_seconds):
                    while not subscriber.closed:
                        await subscriber.wait()
                        subscriber.heartbeat = False
                        if any(e.sequence > after for e in subscriber.take()):
                            return True
                        if subscriber.overflowed:
                            return True
            return False
        finally:
            self.unsubscribe(subscriber)

    # -- the reader of one tenant ----------------------------------------------------------

    async def _follow(self, feed: Feed) -> None:
        loop = asyncio.get_running_loop()
        read_at = -math.inf
        while True:
            # Under a burst, read at most every READ_INTERVAL_SECONDS: the commits
            # meanwhile reach every stream in one write instead of one each, which
            # at ten thousand streams is most of the fan-out's cost. A lone event
            # is read at once.
            wait_seconds = read_at + READ_INTERVAL_SECONDS - loop.time()
            if wait_seconds > 0:
                await asyncio.sleep(wait_seconds)
            feed.wakeup.clear()
            read_at = loop.time()
            try:
                await self._read(feed)
            except TallyError as exc:
                log.warning("events feed: %s", exc.detail or exc.code)
                await asyncio.sleep(RETRY_SECONDS)
                continue
            except Exception:
                log.exception("events feed failed")
                await asyncio.sleep(RETRY_SECONDS)
                continue
            if not feed.wakeup.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(feed.wakeup.wait(), self._poll_seconds)

    async def _read(self, feed: Feed) -> None:
        for _ in range(PAGES_PER_WAKE_MAX):
            records = await self._ledger.read_events(
                feed.tenant_id, after=feed.seen, limit=PAGE_EVENTS_MAX
            )
            for record in records:
                event = SharedEvent(record)
                for subscriber in feed.subscribers:
                    subscriber.offer(event)
                feed.seen = record.sequence
            if len(records) < PAGE_EVENTS_MAX:
                return
        feed.wakeup.set()  # more is waiting: go on after the others had a turn

    async def _beat(self) -> None:
        """Every subscriber's clock, one task for all of them (no timer per stream):
        each ``heartbeat_seconds`` a heartbeat, at its ``ends_at`` its close, and
        the end of a write its client has not taken in ``send_timeout_seconds``."""
        loop = asyncio.get_running_loop()
        tick = min(self._tick_seconds, self._heartbeat_seconds)
        next_beat = loop.time() + self._heartbeat_seconds
        while True:
            await asyncio.sleep(tick)
            now = loop.time()
            beat = now >= next_beat
            if beat:
                next_beat = now + self._heartbeat_seconds
            stuck_since = now - self._send_timeout_seconds
            for feed in list(self._feeds.values()):
                for subscriber in feed.subscribers:
                    if subscriber.ends_at <= now:
                        subscriber.close()
                    elif beat:
                        subscriber.beat()
                    if 0 < subscriber.sending_since < stuck_since and not subscriber.stuck:
                        _cancel_stuck(subscriber)


def _cancel_stuck(subscriber: Subscriber) -> None:
    """A client that has not taken a write for ``send_timeout_seconds`` cannot be
    told anything more: its stream's task is cancelled, and the stream ends."""
    subscriber.stuck = True
    subscriber.close()
    if subscriber.task is not None:
        subscriber.task.cancel()

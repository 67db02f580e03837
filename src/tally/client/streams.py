"""The event stream (``GET /v1/events/stream``, docs/events.md) as an iterator
that never misses an event and never repeats one.

It reads Server-Sent Events frames, keeps the last sequence it yielded, and when
the stream ends (its lifetime, an ``overflow`` frame for a reader too slow, the
server restarting, a broken connection) connects again with
``Last-Event-ID: <that sequence>``: the server then sends what was missed from
the events table, then goes live. Connection failures and 429/503 are retried
with the client's ``RetryPolicy``, counted afresh after every good connection; a
refusal (401, 403, 422) raises its ``ApiError``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import msgspec

from tally.api.schemas.ledger import EventOut
from tally.client.calls import Call
from tally.client.errors import error_for
from tally.client.retry import Attempts, RetryPolicy
from tally.client.wire import RETRYABLE_ERRORS, USER_AGENT, give_up, should_retry


class SyncCaller(Protocol):
    """What a stream needs of ``Client``."""

    http: httpx.Client
    api_key: str | None
    retry: RetryPolicy
    sleep: Callable[[float], None]


class AsyncCaller(Protocol):
    """What a stream needs of ``AsyncClient``."""

    http: httpx.AsyncClient
    api_key: str | None
    retry: RetryPolicy
    sleep: Callable[[float], Awaitable[None]]


PATH = "/v1/events/stream"
OVERFLOW = "overflow"
STREAM_CALL = Call("GET", PATH, EventOut)  # named in a ConnectionFailed


@dataclass
class Frame:
    event: str = "message"
    data: list[str] = field(default_factory=list)


class FrameParser:
    """Server-Sent Events, line by line (the WHATWG event-stream format): a frame
    ends at a blank line; ``:`` lines are comments (heartbeats)."""

    def __init__(self) -> None:
        self._frame = Frame()

    def feed(self, line: str) -> Frame | None:
        if not line:
            frame, self._frame = self._frame, Frame()
            return frame if frame.data else None
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._frame.event = value
        elif name == "data":
            self._frame.data.append(value)
        return None  # id and retry: the event's own sequence is what resumes


@dataclass
class Position:
    """Where the stream resumes: after ``sequence`` (None: from the next event)."""

    sequence: int | None
    types: Sequence[str] | None

    def request(self, api_key: str | None) -> dict[str, Any]:
        headers = {"user-agent": USER_AGENT, "accept": "text/event-stream"}
        if api_key:
            headers["authorization"] = f"Bearer {api_key}"
        if self.sequence is not None:
            headers["last-event-id"] = str(self.sequence)
        params = {"types": ",".join(self.types)} if self.types else {}
        return {"headers": headers, "params": params}

    def take(self, frame: Frame) -> EventOut | None:
        """The event a frame carries, or None: the stream ended (overflow)."""
        if frame.event == OVERFLOW:
            return None
        event = msgspec.json.decode("\n".join(frame.data), type=EventOut)
        self.sequence = event.sequence
        return event


def _refusal(response: httpx.Response, attempts: Attempts) -> float:
    """The wait before trying again, or raise the refusal."""
    wait = attempts.delay(response.headers.get("retry-after")) if should_retry(response) else None
    if wait is None:
        raise error_for(response.status_code, response.content, dict(response.headers))
    return wait


def stream_events(
    client: SyncCaller, after: int | None, types: Sequence[str] | None
) -> Iterator[EventOut]:
    where = Position(after, types)
    attempts = Attempts(client.retry)
    while True:
        try:
            with client.http.stream("GET", PATH, **where.request(client.api_key)) as r:
                if r.status_code >= 400:
                    r.read()
                    client.sleep(_refusal(r, attempts))
                    continue
                attempts = Attempts(client.retry)
                parser = FrameParser()
                for line in r.iter_lines():
                    frame = parser.feed(line)
                    event = where.take(frame) if frame else None
                    if event is not None:
                        yield event
                    elif frame is not None:
                        break  # overflow: resume at once from the last sequence
        except RETRYABLE_ERRORS as exc:
            wait = attempts.delay()
            if wait is None:
                raise give_up(exc, STREAM_CALL) from exc
            client.sleep(wait)


async def astream_events(
    client: AsyncCaller, after: int | None, types: Sequence[str] | None
) -> AsyncIterator[EventOut]:
    where = Position(after, types)
    attempts = Attempts(client.retry)
    while True:
        try:
            async with client.http.stream("GET", PATH, **where.request(client.api_key)) as r:
                if r.status_code >= 400:
                    await r.aread()
                    await client.sleep(_refusal(r, attempts))
                    continue
                attempts = Attempts(client.retry)
                parser = FrameParser()
                async for line in r.aiter_lines():
                    frame = parser.feed(line)
                    event = where.take(frame) if frame else None
                    if event is not None:
                        yield event
                    elif frame is not None:
                        break
        except RETRYABLE_ERRORS as exc:
            wait = attempts.delay()
            if wait is None:
                raise give_up(exc, STREAM_CALL) from exc
            await client.sleep(wait)

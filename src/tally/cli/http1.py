"""Tally's HTTP/1.1 protocol: one connection's requests, parsed and answered.

uvicorn runs the server: it binds the sockets, starts the worker processes, runs
the app's lifespan, keeps the ``Date`` header fresh and shuts down gracefully.
For each connection it makes the protocol it is given as ``http=``; ``tally serve``
gives it this one (``tally.cli.serving``). It does what uvicorn's own httptools
protocol does, from the same parser (llhttp, through httptools), with less work
per request:

- **parsing**: httptools calls back on the URL, each header, the end of the
  headers, each piece of the body and the end of the message. The end of the
  headers builds the ASGI scope and starts the app in a task of its own.
- **the body**: pieces are kept until the app's ``receive()`` asks for them. A
  body that is already whole when the app asks (a small POST arrives in the
  same packet as its headers) is handed over at once: nothing waits, and no
  ``asyncio.Event`` is made per request. More than ``HIGH_WATER`` bytes held
  pauses reading until the app takes them.
- **the answer**: a response with a ``Content-Length`` leaves in one write, its
  status line and headers with its first body bytes, so a JSON answer is one
  ``send(2)`` and one TCP segment. A chunked (streamed) response writes its
  head at once, so an event stream's client sees its headers before the first
  event. The headers the app sends are checked for characters that would let a
  value break out of its line (response splitting), all names in one regular
  expression search and all values in another.
- **keep-alive**: a connection with no request in progress for
  ``timeout_keep_alive`` seconds since it opened or last answered is closed,
  even if part of a request's head has arrived (a client cannot hold it open
  with a byte). Unless a request is waiting unread in the kernel: a loop busy
  with other connections can reach the timer after a client, seeing its
  connection open, sent one on it, and closing then would answer it with a
  reset. Such a connection gets ``KEEP_ALIVE_GRACE_SECONDS`` more, once per
  idle period. ``Connection: close``, HTTP/1.0, and a server shutting down
  end it after the answer; an HTTP/1.0 answer of unknown length ends with
  the connection rather than in chunks.
- **pipelining**: a request that arrives while an answer is still being made
  waits its turn (reading pauses), so answers leave in the order asked; so do
  a WebSocket upgrade and the 400 for a request the parser refuses.
- **back-pressure**: when the socket's send buffer fills, the transport pauses
  the protocol and the app's ``send()`` waits until it drains.
- **upgrades**: ``Upgrade: websocket`` hands the connection to uvicorn's
  WebSocket protocol (``ws=``), replaying the request's head to it, once the
  requests before it are answered.
- **errors**: a request the parser rejects is answered 400 and the connection
  closed; an app that raises before answering gets a 500 for it; one that raises
  mid-answer has its connection closed (the client sees a cut answer, never a
  wrong one).

It writes no access log: Tally's middleware does, with ``TALLY_ACCESS_LOG``
(docs/configuration.md). ``bench/http_protocols.py`` measures it beside uvicorn's
protocol and the least a protocol can do (docs/performance.md).
"""

from __future__ import annotations

import asyncio
import contextvars
import fcntl
import logging
import re
import struct
import termios
import urllib.parse
from collections import deque
from http import HTTPStatus
from typing import Any

import httptools

log = logging.getLogger("uvicorn.error")

# Body bytes held for the app past which reading pauses until it takes them.
HIGH_WATER = 64 * 1024
# How much longer an expired idle connection stays open when a request is
# already waiting in the kernel to be read: enough for the loop to read it.
KEEP_ALIVE_GRACE_SECONDS = 1.0
# A response body past this size is written apart from its head rather than
# copied behind it: a second send costs less than copying a large body.
JOIN_BODY_MAX = 16 * 1024

# A header name is a token (RFC 9110 §5.1); a value has no control characters
# but tab (§5.5). Either search runs once over all of a response's names or
# values, joined: a bad byte anywhere is found wherever it is.
_BAD_NAME = re.compile(b'[\x00-\x1f\x7f()<>@,;:\\[\\]={} \t\\\\"]')
_BAD_VALUE = re.compile(b"[\x00-\x08\x0a-\x1f\x7f]")


def _status_line(status: int) -> bytes:
    try:
        phrase = HTTPStatus(status).phrase.encode()
    except ValueError:
        phrase = b""
    return b"HTTP/1.1 %d %s\r\n" % (status, phrase)


STATUS_LINES = {status: _status_line(status) for status in range(100, 600)}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def _bytes_unread(transport: Any) -> int:
    """How many bytes the peer sent that the kernel holds and the loop has not
    read yet (``FIONREAD``); 0 when the socket cannot say."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return 0
    try:
        answer = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
    except (OSError, ValueError):  # closed meanwhile, or not a socket
        return 0
    count: int = struct.unpack("i", answer)[0]
    return count


def _tokens(value: bytes) -> list[bytes]:
    return [token.strip().lower() for token in value.split(b",")]


class Http1Protocol(asyncio.Protocol):
    """One HTTP/1.1 connection (see the module's docstring)."""

    def __init__(
        self,
        config: Any,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not config.loaded:
            config.load()
        self.config = config
        self.app = config.loaded_app
        self.loop = _loop or asyncio.get_event_loop()
        self.server_state = server_state
        self.app_state = app_state
        self.connections = server_state.connections
        self.tasks = server_state.tasks
        self.root_path: str = config.root_path
        self.limit_concurrency: int | None = config.limit_concurrency
        self.timeout_keep_alive: float = config.timeout_keep_alive
        self.parser = httptools.HttpRequestParser(self)
        # Answer the first of pipelined requests even if a later one is bad.
        self.parser.set_dangerous_leniencies(lenient_data_after_close=True)
        self.transport: Any = None  # uvloop's transports are not asyncio.Transport
        self.server: tuple[str, int] | None = None
        self.client: tuple[str, int] | None = None
        self.scheme = "http"
        self.read_paused = False
        self.write_paused = False
        self.drain_waiters: list[asyncio.Future[None]] = []
        self.keep_alive_timer: asyncio.TimerHandle | None = None
        self.idle_since = 0.0  # loop time of the last answer (or of the connection)
        self.grace_given = False  # this idle period's KEEP_ALIVE_GRACE_SECONDS
        # Each request's task starts from the connection's context, never from
        # the request before it (a pipelined one is started from its send()).
        self.context = contextvars.Context()
        self.pipeline: deque[Exchange] = deque()
        self.exchange: Exchange | None = None  # the one being answered
        self.parsing: Exchange | None = None  # the one whose body is being read
        # Per request, while its head is parsed.
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.expect_100 = False
        self.method = b""
        self.upgraded = False
        # Waiting for the requests before it to be answered: a WebSocket
        # upgrade, or the 400 for a request the parser refused.
        self.upgrade_waiting = False
        self.refusal_waiting: bytes | None = None

    # -- asyncio's protocol interface ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.connections.add(self)
        self.server = _address(transport.get_extra_info("sockname"))
        self.client = _address(transport.get_extra_info("peername"))
        if transport.get_extra_info("sslcontext"):
            self.scheme = "https"
        if not self.config.reset_contextvars:
            self.context = contextvars.copy_context()
        self._idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        self._stop_keep_alive_timer()
        for exchange in (self.exchange, self.parsing, *self.pipeline):
            if exchange is not None and not exchange.complete:
                exchange.disconnected = True
                exchange.wake()
        self.resume_writing()
        self.parser = None  # type: ignore[assignment]

    def eof_received(self) -> None:
        pass  # the transport closes; answers in progress find the peer gone

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            log.warning("Invalid HTTP request received.")
            self._refuse(b"Invalid HTTP request received.")
        except httptools.HttpParserUpgrade:
            if not self._websocket_upgrade():
                log.warning("Unsupported upgrade request.")
            elif self.exchange is None:
                self._upgrade()
            else:  # after the answers to the requests before it
                self.upgrade_waiting = True
                self._pause_reading()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        waiters, self.drain_waiters = self.drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # -- uvicorn's server interface -----------------------------------------------------

    def shutdown(self) -> None:
        """The server is stopping: close now if idle, else after the answer."""
        exchange = self.exchange
        if exchange is None or exchange.complete:
            self.transport.close()
        else:
            exchange.keep_alive = False

    # -- httptools' callbacks -------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.expect_100 = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        # llhttp keeps trailing whitespace, which is not part of a value (RFC 9110 §5.5).
        value = value.rstrip(b" \t")
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100 = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        http_version = parser.get_http_version()
        self.method = parser.get_method()
        if parser.should_upgrade() and self._websocket_upgrade():
            return  # data_received hands the connection over (HttpParserUpgrade)
        if self.refusal_waiting is not None:
            return  # a request after a refused one is not read
        url = httptools.parse_url(self.url)
        raw_path: bytes = url.path
        path = raw_path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        root = self.root_path
        scope = {
            "type": "http",
            "asgi": {"version": self.config.asgi_version, "spec_version": "2.3"},
            "http_version": http_version,
            "server": self.server,
            "client": self.client,
            "scheme": self.scheme,
            "method": self.method.decode("ascii"),
            "root_path": root,
            "path": root + path,
            "raw_path": root.encode("ascii") + raw_path if root else raw_path,
            "query_string": url.query or b"",
            "headers": self.headers,
            "state": self.app_state.copy(),
        }
        keep_alive = http_version != "1.0" and parser.should_keep_alive()
        # HTTP/1.0 has no 100 Continue (RFC 9110 §10.1.1).
        expect_100 = self.expect_100 and http_version != "1.0"
        exchange = Exchange(self, scope, keep_alive, expect_100)
        self.parsing = exchange
        if self.exchange is None:
            self._start(exchange)
        else:  # pipelined: its turn comes when the one before it is answered
            self.pipeline.append(exchange)
            self._pause_reading()

    def on_body(self, body: bytes) -> None:
        exchange = self.parsing
        if exchange is None or exchange.complete:
            return
        exchange.chunks.append(body)
        exchange.held += len(body)
        if exchange.held > HIGH_WATER:
            self._pause_reading()
        exchange.wake()

    def on_message_complete(self) -> None:
        exchange = self.parsing
        if exchange is None or exchange.complete:
            return
        exchange.more_body = False
        exchange.wake()

    # -- the exchanges ------------------------------------------------------------------------

    def _start(self, exchange: Exchange) -> None:
        self.exchange = exchange
        limit = self.limit_concurrency
        if limit is not None and (len(self.connections) >= limit or len(self.tasks) >= limit):
            log.warning("Exceeded concurrency limit.")
            app = _service_unavailable
        else:
            app = self.app
        task = self.loop.create_task(exchange.run(app), context=self.context.copy())
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    def answered(self, exchange: Exchange) -> None:
        """The exchange's answer is written: start the next, or wait for one."""
        self.server_state.total_requests += 1
        if self.upgraded or self.transport.is_closing():
            return  # the connection is the WebSocket protocol's now, or ending
        if self.pipeline:
            self._resume_reading()
            self._start(self.pipeline.popleft())
            return
        self.exchange = None
        if self.refusal_waiting is not None:
            self._refuse(self.refusal_waiting)
        elif self.upgrade_waiting:
            self._upgrade()
        else:
            self._resume_reading()
            self._idle()

    def _idle(self) -> None:
        """No request in progress from now: arm the timer that closes the
        connection if none begins within the keep-alive timeout."""
        self.idle_since = self.loop.time()
        self.grace_given = False
        if self.keep_alive_timer is None:
            self.keep_alive_timer = self.loop.call_at(
                self.idle_since + self.timeout_keep_alive, self._keep_alive_expired
            )

    def _keep_alive_expired(self) -> None:
        """Close the connection if no request has been in progress for the whole
        timeout, since its last answer or since it opened: an idle connection,
        or one whose client sends a request's head too slowly to finish it (a
        part of a head is not a request). The timer is not moved at each
        request (a cancel and a new timer each time): it fires on time, and a
        connection that was busy meanwhile is looked at again when the timeout
        after its last answer ends.

        A request still unread in the kernel when the timeout ends was sent
        on a connection that was open, while the loop was busy elsewhere:
        closing now would throw it away with a reset (the client sees a read
        error for a request never read). It gets a short grace instead, once
        per idle period, so a client trickling bytes still cannot hold the
        connection."""
        self.keep_alive_timer = None
        if self.transport.is_closing() or self.exchange is not None:
            return  # answering: its answer arms the timer again
        now = self.loop.time()
        deadline = self.idle_since + self.timeout_keep_alive
        if now < deadline:
            self.keep_alive_timer = self.loop.call_at(deadline, self._keep_alive_expired)
        elif not self.grace_given and _bytes_unread(self.transport):
            self.grace_given = True
            self.keep_alive_timer = self.loop.call_at(
                now + KEEP_ALIVE_GRACE_SECONDS, self._keep_alive_expired
            )
        else:
            self.transport.close()

    def _stop_keep_alive_timer(self) -> None:
        timer = self.keep_alive_timer
        if timer is not None:
            timer.cancel()
            self.keep_alive_timer = None

    def _pause_reading(self) -> None:
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()

    async def drain(self) -> None:
        """Wait until the transport takes writes again (each waiter its own
        future: one cancelled must not cancel the others)."""
        waiter = self.loop.create_future()
        self.drain_waiters.append(waiter)
        await waiter

    # -- upgrades and refusals --------------------------------------------------------------

    def _websocket_upgrade(self) -> bool:
        if self.config.ws_protocol_class is None:
            return False
        connection: list[bytes] = []
        upgrade = None
        for name, value in self.headers:
            if name == b"connection":
                connection = _tokens(value)
            elif name == b"upgrade":
                upgrade = value.lower()
        return b"upgrade" in connection and upgrade == b"websocket"

    def _upgrade(self) -> None:
        """Hand the connection to the WebSocket protocol, replaying the request's head."""
        self.connections.discard(self)
        self.upgraded = True
        self.upgrade_waiting = False
        self._stop_keep_alive_timer()
        self._resume_reading()  # the WebSocket protocol resumes only what it paused
        head = [self.method, b" ", self.url, b" HTTP/1.1\r\n"]
        for name, value in self.headers:
            head += [name, b": ", value, b"\r\n"]
        head.append(b"\r\n")
        protocol = self.config.ws_protocol_class(
            config=self.config, server_state=self.server_state, app_state=self.app_state
        )
        protocol.connection_made(self.transport)
        self.transport.set_protocol(protocol)
        protocol.data_received(b"".join(head))

    def _refuse(self, message: bytes) -> None:
        """Answer 400 and close; after the answers to the requests before it."""
        if self.exchange is not None:
            self.refusal_waiting = message
            self._pause_reading()
            return
        content = [STATUS_LINES[400]]
        for name, value in self.server_state.default_headers:
            content += [name, b": ", value, b"\r\n"]
        content.append(
            b"content-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (len(message), message)
        )
        self.transport.write(b"".join(content))
        self.transport.close()


class Exchange:
    """One request and its answer: the ASGI ``receive`` and ``send`` of one call."""

    __slots__ = (
        "chunked",
        "chunks",
        "complete",
        "disconnected",
        "ended",
        "head",
        "held",
        "keep_alive",
        "left",
        "more_body",
        "protocol",
        "scope",
        "started",
        "until_close",
        "waiters",
        "waiting_for_100",
    )

    def __init__(
        self, protocol: Http1Protocol, scope: dict[str, Any], keep_alive: bool, expect_100: bool
    ) -> None:
        self.protocol = protocol
        self.scope = scope
        self.keep_alive = keep_alive
        self.waiting_for_100 = expect_100
        self.disconnected = False
        # The request's body: pieces not yet received by the app.
        self.chunks: list[bytes] = []
        self.held = 0
        self.more_body = True
        self.ended = False  # the body's last message was received by the app
        self.waiters: list[asyncio.Future[None]] | None = None
        # The answer.
        self.started = False
        self.complete = False
        self.chunked = False
        self.left = 0  # Content-Length bytes still to send
        self.head: bytes | None = None  # status line and headers, not yet written
        self.until_close = False  # an HTTP/1.0 body of unknown length ends with the connection

    def wake(self) -> None:
        waiters = self.waiters
        if waiters:
            self.waiters = None
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    async def run(self, app: Any) -> None:
        try:
            result = await app(self.scope, self.receive, self.send)
        except BaseException as exc:
            log.error("Exception in ASGI application\n", exc_info=exc)
            if not self.started:
                await self._send_500()
            else:
                self.protocol.transport.close()
        else:
            if result is not None:
                log.error("ASGI callable should return None, but returned '%s'.", result)
                self.protocol.transport.close()
            elif not self.started and not self.disconnected:
                log.error("ASGI callable returned without starting response.")
                await self._send_500()
            elif not self.complete and not self.disconnected:
                log.error("ASGI callable returned without completing response.")
                self.protocol.transport.close()

    async def _send_500(self) -> None:
        await _closing_text(self.send, 500, b"Internal Server Error")

    def _ready(self) -> bool:
        """Whether ``receive`` has a message to give: body bytes, or the body's end."""
        return bool(self.chunks) or not (self.more_body or self.ended)

    async def receive(self) -> dict[str, Any]:
        """The next piece of the body; after its end, wait for the answer's end or
        the client's leaving, and say ``http.disconnect``."""
        protocol = self.protocol
        if self.waiting_for_100:
            self.waiting_for_100 = False
            if not protocol.transport.is_closing():
                protocol.transport.write(_CONTINUE)
        while not (self.disconnected or self.complete or self._ready()):
            protocol._resume_reading()
            waiter = protocol.loop.create_future()
            if self.waiters is None:
                self.waiters = [waiter]
            else:
                self.waiters.append(waiter)
            await waiter
        if self.disconnected or self.complete:
            return {"type": "http.disconnect"}
        chunks = self.chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self.chunks = []
        self.held = 0
        if not self.more_body:
            self.ended = True
        elif protocol.read_paused and protocol.exchange is self:
            protocol._resume_reading()
        return {"type": "http.request", "body": body, "more_body": self.more_body}

    async def send(self, message: dict[str, Any]) -> None:
        protocol = self.protocol
        if protocol.write_paused and not self.disconnected:
            await protocol.drain()
        if self.disconnected:
            return
        if not self.started:
            if message["type"] != "http.response.start":
                raise RuntimeError(f"Expected 'http.response.start', got '{message['type']}'.")
            self.started = True
            if self.waiting_for_100 and self.more_body:
                # Answered before asking for the body: the client will not send
                # it, so the connection cannot carry another request.
                self.keep_alive = False
            self.waiting_for_100 = False
            self._start(message)
        elif not self.complete:
            if message["type"] != "http.response.body":
                raise RuntimeError(f"Expected 'http.response.body', got '{message['type']}'.")
            self._body(message.get("body", b""), message.get("more_body", False))
        else:
            raise RuntimeError(f"Unexpected '{message['type']}' after the response completed.")

    def _start(self, message: dict[str, Any]) -> None:
        status: int = message["status"]
        headers = message.get("headers", ())
        default = self.protocol.server_state.default_headers
        content = [STATUS_LINES[status]]
        length: int | None = None
        chunked = False
        close = False
        for name, value in (*default, *headers):
            name = name.lower()
            if name == b"content-length":
                if length is None:
                    length = int(value)
            elif name == b"transfer-encoding":
                chunked = chunked or value.lower() == b"chunked"
            elif name == b"connection" and b"close" in _tokens(value):
                self.keep_alive = False
                close = True
            content += (name, b": ", value, b"\r\n")
        # content is [status line, name, ": ", value, "\r\n", name, ...].
        if _BAD_NAME.search(b"".join(content[1::4])):
            raise RuntimeError("Invalid HTTP header name.")
        if _BAD_VALUE.search(b"".join(content[3::4])):
            raise RuntimeError("Invalid HTTP header value.")
        if not self.keep_alive and not close:
            content.append(b"connection: close\r\n")
        head_only = self.scope["method"] == "HEAD" or status in (204, 304)
        if head_only:
            self.left = 0  # whatever Content-Length says, no body follows
        elif length is not None and not chunked:
            self.left = length
        elif self.scope["http_version"] == "1.0":
            # No chunked encoding in HTTP/1.0 (RFC 9112 §6.1): the body ends
            # when the connection does.
            chunked = False
            self.until_close = True
            if self.keep_alive:
                self.keep_alive = False
                content.append(b"connection: close\r\n")
        elif length is None:
            chunked = True
            if not any(name == b"transfer-encoding" for name in content[1::4]):
                content.append(b"transfer-encoding: chunked\r\n")
        self.chunked = chunked
        content.append(b"\r\n")
        head = b"".join(content)
        if chunked:  # a stream: its client sees the head before the first part
            self.protocol.transport.write(head)
        else:
            self.head = head

    def _body(self, body: bytes, more_body: bool) -> None:
        protocol = self.protocol
        if self.scope["method"] == "HEAD":
            out = b""  # a HEAD answer has no body (_start set self.left to 0)
        elif self.chunked:
            out = b"%x\r\n%s\r\n" % (len(body), body) if body else b""
            if not more_body:
                out += b"0\r\n\r\n"
        elif self.until_close:
            out = body
        else:
            if len(body) > self.left:
                raise RuntimeError("Response content longer than Content-Length")
            self.left -= len(body)
            out = body
        head, self.head = self.head, None
        if head is not None:
            if len(out) > JOIN_BODY_MAX:
                protocol.transport.write(head)
            else:
                out = head + out
        if out:
            protocol.transport.write(out)
        if not more_body:
            if self.left:
                raise RuntimeError("Response content shorter than Content-Length")
            self.complete = True
            self.wake()
            if not self.keep_alive:
                protocol.transport.close()
            protocol.answered(self)


async def _service_unavailable(scope: Any, receive: Any, send: Any) -> None:
    await _closing_text(send, 503, b"Service Unavailable")


async def _closing_text(send: Any, status: int, text: bytes) -> None:
    """A short plain-text answer after which the connection closes (500, 503)."""
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", b"%d" % len(text)),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": text})


def _address(found: Any) -> tuple[str, int] | None:
    if isinstance(found, (tuple, list)) and len(found) >= 2:
        return (str(found[0]), int(found[1]))
    return None


__all__ = ["HIGH_WATER", "Exchange", "Http1Protocol"]

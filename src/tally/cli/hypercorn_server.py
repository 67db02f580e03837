"""``tally serve --server hypercorn``: the app under hypercorn, the one server here
that speaks HTTP/3 over QUIC (aioquic), beside HTTP/1.1 and HTTP/2 over TCP.

Hypercorn runs the QUIC side with aioquic but leaves three things out that Tally
needs, added here by subclassing its classes (``_install_quic_hooks``; the
tests in tests/e2e/test_protocols.py hold each to what it promises):

- **Session tickets**, so that a returning client resumes without a full
  handshake and may send its first request in 0-RTT early data. Each ticket is
  used once and at most ``quic_session_tickets_max`` are kept, in this
  process's memory: hence one process (docs/protocols.md, HTTP/3 limits).
- **Marking early data** (RFC 8470 §5.1): a request whose headers arrived before
  the handshake completed carries ``Early-Data: 1`` into the app, whose
  middleware answers anything but GET, HEAD and OPTIONS with 425 Too Early. A
  replayed early POST could otherwise move money twice.
- **Closing QUIC connections on shutdown** once their requests are answered
  (CONNECTION_CLOSE with H3_NO_ERROR). Hypercorn alone keeps them open until the
  client's idle timeout, and its UDP loop waits for one more datagram before it
  sees that it should stop, so every shutdown would take the whole grace period.

On SIGTERM or SIGINT: no new connections or requests, requests in flight finish
(event streams are ended first by the hub), then the lifespan's shutdown commits
queued writes; whatever is still running ``GRACEFUL_SHUTDOWN_SECONDS`` later is
cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import logging.config
import signal
from collections import OrderedDict
from collections.abc import Callable
from typing import Any
from weakref import WeakSet

from aioquic.h3.connection import ErrorCode
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import HandshakeCompleted, QuicEvent
from aioquic.tls import SessionTicket
from hypercorn.config import Config
from hypercorn.events import Closed
from hypercorn.protocol import quic as hypercorn_quic
from hypercorn.protocol.events import Body, EndBody
from hypercorn.protocol.h3 import H3Protocol

from tally.cli.transport import GRACEFUL_SHUTDOWN_SECONDS, KEEP_ALIVE_SECONDS, TLS12_CIPHERS
from tally.config import Settings

log = logging.getLogger(__name__)

EARLY_DATA_HEADER = (b"early-data", b"1")
# How often a stopping server looks for QUIC connections it can close.
DRAIN_POLL_SECONDS = 0.05
# Datagrams received and not yet handled, per UDP socket: about 1.4 MB at QUIC's
# 1,350-byte datagrams; past it they are dropped and QUIC retransmits them.
QUIC_DATAGRAMS_QUEUED_MAX = 1_024
# Requests on one HTTP/1.1 or HTTP/2 connection before hypercorn closes it (its
# default, 1,000, ends an h2 connection with 100 streams in flight every ten
# rounds; h2load does not reconnect, which capped make bench-protocols' h2 row at
# 500 transfers/s). Still a bound: a long-lived connection is recycled.
REQUESTS_PER_CONNECTION_MAX = 100_000
# Alt-Svc's freshness: how long a client may remember that HTTP/3 is here.
ALT_SVC_MAX_AGE_SECONDS = 86_400


class SessionTickets:
    """The TLS session tickets this process issued, by ticket label.

    ``pop`` hands a ticket out once: a ClientHello replayed with the same ticket
    finds nothing and gets a full handshake, without early data. Bounded: past
    ``size_max`` the oldest is forgotten (its client just handshakes in full)."""

    def __init__(self, size_max: int) -> None:
        self.size_max = size_max
        self._tickets: OrderedDict[bytes, SessionTicket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._tickets)

    def add(self, ticket: SessionTicket) -> None:
        if self.size_max == 0:
            return
        self._tickets[ticket.ticket] = ticket
        while len(self._tickets) > self.size_max:
            self._tickets.popitem(last=False)

    def pop(self, label: bytes) -> SessionTicket | None:
        return self._tickets.pop(label, None)


class TicketedQuicConnection(QuicConnection):
    """A server connection that issues and accepts session tickets (hypercorn
    builds its connections without them: no resumption, no 0-RTT)."""

    tickets = SessionTickets(0)

    def __init__(
        self,
        *,
        configuration: QuicConfiguration,
        original_destination_connection_id: bytes | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            configuration=configuration,
            original_destination_connection_id=original_destination_connection_id,
            session_ticket_fetcher=self.tickets.pop,
            session_ticket_handler=self.tickets.add,
            **kwargs,
        )


class EarlyDataH3Protocol(H3Protocol):
    """Hypercorn's HTTP/3 connection, marking requests that came in 0-RTT and
    rejecting, rather than dropping, those that come once the server is stopping."""

    handshake_completed = False

    async def handle(self, quic_event: QuicEvent) -> None:
        """Hypercorn's own, except for a request that arrives while stopping:
        hypercorn ignores its headers, then fails on its body (KeyError, which ends
        the whole QUIC endpoint). Here it is reset with H3_REQUEST_REJECTED, which
        tells the client nothing ran and a retry elsewhere is safe (RFC 9114 §4.1.1)."""
        if isinstance(quic_event, HandshakeCompleted):
            self.handshake_completed = True
        for event in self.connection.handle_event(quic_event):
            if isinstance(event, HeadersReceived) and event.stream_id not in self.streams:
                if self.context.terminated.is_set():
                    self._reject(event.stream_id)
                    continue
                await self._create_stream(event)
            elif not isinstance(event, HeadersReceived | DataReceived):
                continue
            stream = self.streams.get(event.stream_id)
            if stream is None:
                continue  # rejected above, or already closed
            if isinstance(event, DataReceived):
                await stream.handle(Body(stream_id=event.stream_id, data=event.data))
            if event.stream_ended:
                await stream.handle(EndBody(stream_id=event.stream_id))

    def _reject(self, stream_id: int) -> None:
        quic = self.connection._quic  # the connection hypercorn gave H3Connection
        quic.reset_stream(stream_id, ErrorCode.H3_REQUEST_REJECTED)
        with contextlib.suppress(ValueError):  # the client already ended its side
            quic.stop_stream(stream_id, ErrorCode.H3_REQUEST_REJECTED)

    async def _create_stream(self, request: HeadersReceived) -> None:
        if not self.handshake_completed:
            # Headers before the client's Finished: early data, which an attacker
            # can replay (RFC 8446 §8). The app decides what may run (RFC 8470).
            request.headers = [*request.headers, EARLY_DATA_HEADER]
        await super()._create_stream(request)


# The QUIC endpoints of this process, so that shutdown can reach their connections.
_ENDPOINTS: WeakSet[DrainingQuicProtocol] = WeakSet()


class DrainingQuicProtocol(hypercorn_quic.QuicProtocol):
    """Hypercorn's QUIC endpoint, plus a clean close of its connections on shutdown."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # hypercorn's UDP server hands us its bound send; its queue of datagrams is
        # where the loop that serves us waits (see wake). It holds 10 datagrams and
        # drops the rest: under 64 streams' load that lost packets all the time, and
        # each loss waits for QUIC's retransmission timer (p99 1.4 s in make
        # bench-protocols). Made longer, still bounded; set before the first datagram.
        udp = getattr(self.send, "__self__", None)
        self._queue: asyncio.Queue[Any] | None = None
        if isinstance(getattr(udp, "protocol_queue", None), asyncio.Queue):
            old: asyncio.Queue[Any] = udp.protocol_queue  # type: ignore[union-attr]
            self._queue = asyncio.Queue(QUIC_DATAGRAMS_QUEUED_MAX)
            while not old.empty():
                self._queue.put_nowait(old.get_nowait())
            udp.protocol_queue = self._queue  # type: ignore[union-attr]
        _ENDPOINTS.add(self)

    async def close_answered(self) -> bool:
        """Close every connection with no request in flight; True when none is left."""
        for connection in {id(c): c for c in self.connections.values()}.values():
            if connection.h3 is None or not connection.h3.streams:
                connection.quic.close(error_code=ErrorCode.H3_NO_ERROR)
                await self.send_all(connection)
        return self.idle and self.context.terminated.is_set()

    def wake(self) -> None:
        """Let hypercorn's UDP loop see that it is stopping and idle: it checks only
        after an event, and none may come."""
        if self._queue is not None:
            with contextlib.suppress(asyncio.QueueFull):  # full: the loop has events
                self._queue.put_nowait(Closed())


def _install_quic_hooks(settings: Settings) -> None:
    """Hypercorn builds its QUIC classes by module name at run time: point the names
    at the subclasses above. Only in this process, which runs nothing else."""
    TicketedQuicConnection.tickets = SessionTickets(settings.quic_session_tickets_max)
    hypercorn_quic.QuicConnection = TicketedQuicConnection  # type: ignore[attr-defined]
    hypercorn_quic.H3Protocol = EarlyDataH3Protocol  # type: ignore[attr-defined]
    hypercorn_quic.QuicProtocol = DrainingQuicProtocol  # type: ignore[misc]


async def close_quic_connections(timeout_seconds: float) -> None:
    """Close each QUIC connection as its last request is answered, then wake the
    UDP loops; within ``timeout_seconds`` (hypercorn cancels what is left)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_seconds
    while loop.time() < deadline:
        done = [await endpoint.close_answered() for endpoint in list(_ENDPOINTS)]
        if all(done):
            break
        await asyncio.sleep(DRAIN_POLL_SECONDS)
    for endpoint in list(_ENDPOINTS):
        endpoint.wake()


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("closing QUIC connections failed", exc_info=task.exception())


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def hypercorn_config(settings: Settings, host: str, port: int) -> Config:
    config = Config()
    config.bind = [_address(host, port)]
    config.graceful_timeout = GRACEFUL_SHUTDOWN_SECONDS
    config.keep_alive_max_requests = REQUESTS_PER_CONNECTION_MAX
    config.keep_alive_timeout = KEEP_ALIVE_SECONDS
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.alpn_protocols = ["h2", "http/1.1"] if settings.http2 else ["http/1.1"]
    if settings.tls_cert is not None:
        config.certfile = settings.tls_cert
        config.keyfile = settings.tls_key
        config.ciphers = TLS12_CIPHERS  # hypercorn's context already has TLS 1.2 as floor
    if settings.quic_port is not None:
        config.quic_bind = [_address(host, settings.quic_port)]
        # Said on every HTTP/1.1 and HTTP/2 answer (and HTTP/3's, harmlessly):
        # the same host's UDP port speaks h3 (RFC 7838).
        config.alt_svc_headers = [f'h3=":{settings.quic_port}"; ma={ALT_SVC_MAX_AGE_SECONDS}']
    return config


async def _serve(settings: Settings, host: str, port: int, app_factory: Callable[[], Any]) -> None:
    from hypercorn.asyncio import serve

    config = hypercorn_config(settings, host, port)
    _install_quic_hooks(settings)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, stopping.set)

    async def shutdown_trigger() -> None:
        await stopping.wait()
        log.info("stopping: requests in flight finish (up to %s s)", GRACEFUL_SHUTDOWN_SECONDS)
        drain = loop.create_task(close_quic_connections(GRACEFUL_SHUTDOWN_SECONDS))
        drain.add_done_callback(_log_failure)

    # The app's __call__ hands back a coroutine rather than being one (Served):
    # say ASGI, or hypercorn would take it for WSGI.
    # (Starlette's ASGI types are not hypercorn's TypedDicts; the protocol is the same.)
    app: Any = app_factory()
    await serve(app, config, shutdown_trigger=shutdown_trigger, mode="asgi")


def run_hypercorn(
    settings: Settings,
    host: str,
    port: int,
    log_config: Callable[[str, str], dict[str, Any]],
    app_factory: Callable[[], Any],
) -> None:
    """``app_factory`` and ``log_config`` are tally.cli.serving's, handed in (this
    module is what serving runs, so it cannot import serving)."""
    import uvloop

    logging.config.dictConfig(log_config(settings.log_level, settings.log_format))
    uvloop.run(_serve(settings, host, port, app_factory))

"""A small HTTP/3 client on aioquic's ``H3Connection``: requests over one QUIC
connection, many at once, and 0-RTT with a session ticket from an earlier one.

Shared by tests/e2e/test_protocols.py and bench/protocols.py (the h3 row). Only
what those need: no server push, no WebSocket, bodies read whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, HandshakeCompleted, QuicEvent, StreamReset
from aioquic.tls import SessionTicket

REQUEST_TIMEOUT_SECONDS = 10.0
# The server's name in its certificate (tally dev-cert: localhost).
SERVER_NAME = "localhost"


@dataclass
class H3Response:
    status: int
    headers: dict[str, str]
    body: bytes = b""

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class _Exchange:
    done: asyncio.Future[H3Response]
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)


class H3Client(QuicConnectionProtocol):
    """One QUIC connection speaking HTTP/3; ``request`` may run concurrently."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._http = H3Connection(self._quic)
        self._exchanges: dict[int, _Exchange] = {}
        self._handshake_completed = asyncio.Event()

    async def handshake_completed(self) -> None:
        """Until the handshake is complete. (aioquic's ``wait_connected`` never
        returns when the handshake completed before it was called: with 0-RTT
        requests sent first, it usually has.)"""
        await asyncio.wait_for(self._handshake_completed.wait(), REQUEST_TIMEOUT_SECONDS)

    @property
    def early_data_accepted(self) -> bool:
        """Whether the server took this connection's 0-RTT data (after the handshake)."""
        return bool(self._quic.tls.early_data_accepted)

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
        authority: str = SERVER_NAME,
    ) -> H3Response:
        stream_id = self._quic.get_next_available_stream_id()
        fields = [
            (b":method", method.encode()),
            (b":scheme", b"https"),
            (b":authority", authority.encode()),
            (b":path", path.encode()),
            *((k.lower().encode(), v.encode()) for k, v in (headers or {}).items()),
        ]
        if body:
            fields.append((b"content-length", str(len(body)).encode()))
        exchange = _Exchange(asyncio.get_running_loop().create_future())
        self._exchanges[stream_id] = exchange
        self._http.send_headers(stream_id, fields, end_stream=not body)
        if body:
            self._http.send_data(stream_id, body, end_stream=True)
        self.transmit()
        try:
            return await asyncio.wait_for(exchange.done, REQUEST_TIMEOUT_SECONDS)
        finally:
            self._exchanges.pop(stream_id, None)

    async def json_request(
        self, method: str, path: str, payload: Any, headers: dict[str, str] | None = None
    ) -> H3Response:
        headers = {"content-type": "application/json", **(headers or {})}
        return await self.request(method, path, headers=headers, body=json.dumps(payload).encode())

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, HandshakeCompleted):
            self._handshake_completed.set()
        elif isinstance(event, StreamReset):
            # e.g. H3_REQUEST_REJECTED from a stopping server: nothing ran.
            self._fail(event.stream_id, f"stream reset by the server (0x{event.error_code:x})")
        elif isinstance(event, ConnectionTerminated):
            for stream_id in list(self._exchanges):
                self._fail(stream_id, f"connection closed (0x{event.error_code:x})")
        for h3_event in self._http.handle_event(event):
            self._h3_event(h3_event)

    def _fail(self, stream_id: int, reason: str) -> None:
        exchange = self._exchanges.get(stream_id)
        if exchange is not None and not exchange.done.done():
            exchange.done.set_exception(ConnectionResetError(reason))

    def _h3_event(self, event: H3Event) -> None:
        if not isinstance(event, HeadersReceived | DataReceived):
            return
        exchange = self._exchanges.get(event.stream_id)
        if exchange is None or exchange.done.done():
            return
        if isinstance(event, HeadersReceived):
            exchange.headers += event.headers
        else:
            exchange.body += event.data
        if event.stream_ended:
            fields = {k.decode(): v.decode() for k, v in exchange.headers}
            status = int(fields.pop(":status"))
            exchange.done.set_result(H3Response(status, fields, bytes(exchange.body)))


@contextlib.asynccontextmanager
async def h3_connect(
    host: str,
    port: int,
    *,
    ca_path: Path,
    session_ticket: SessionTicket | None = None,
    tickets: list[SessionTicket] | None = None,
    wait_connected: bool = True,
) -> AsyncIterator[H3Client]:
    """A connection to ``host:port`` (UDP) that trusts ``ca_path``. With
    ``session_ticket`` (one the server sent earlier, gathered in ``tickets``) and
    ``wait_connected=False``, the first requests go out as 0-RTT early data."""
    configuration = QuicConfiguration(
        is_client=True, alpn_protocols=H3_ALPN, server_name=SERVER_NAME
    )
    configuration.load_verify_locations(str(ca_path))
    configuration.session_ticket = session_ticket
    handler = tickets.append if tickets is not None else None
    async with connect(
        host,
        port,
        configuration=configuration,
        create_protocol=H3Client,
        session_ticket_handler=handler,
        wait_connected=wait_connected,
    ) as client:
        assert isinstance(client, H3Client)
        yield client

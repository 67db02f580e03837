"""uvicorn's HTTP/1.1 protocol, with each connection's writes gathered into one.

uvicorn (httptools) writes a response's status line and headers as soon as the
app sends ``http.response.start``, and its body on ``http.response.body``: two
``transport.write`` calls, and under uvloop two ``send(2)`` system calls and two
TCP segments on the wire for every JSON answer. On this machine a send over
loopback costs more than rendering the answer does: py-spy put uvicorn's
``send`` at the top of Tally's own time per transfer (docs/performance.md).

``CorkedTransport`` holds what a connection writes during one turn of the event
loop and hands it to the real transport in one write at the start of the next
(``call_soon``), as Linux's ``TCP_CORK`` would, but without its 200 ms ceiling
or a system call to set and clear it. A response is therefore one send: its
headers and body, and the answers to pipelined requests that finished in the
same turn. Nothing waits on a timer: the next turn comes as soon as the loop has
run what is ready, so an answer leaves microseconds later than it would have.

Everything but ``write`` and ``close`` passes through to the real transport.
Flow control is the real transport's, which is at most one turn's output behind.
A WebSocket upgrade hands the real transport to the WebSocket protocol: its
frames gain nothing from gathering.

``tally serve --server uvicorn`` (the default) runs with
``http="tally.cli.corked:CorkedHttpToolsProtocol"``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class CorkedTransport:
    """A transport whose writes within one turn of the loop leave as one."""

    __slots__ = ("_loop", "_pending", "_scheduled", "transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self._loop = loop
        self._pending: list[bytes] = []
        self._scheduled = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        self._pending.append(bytes(data))
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def flush(self) -> None:
        """Hand what is held to the real transport (unless it has closed: then
        the peer is gone and nothing can reach it)."""
        self._scheduled = False
        pending = self._pending
        if not pending:
            return
        self._pending = []
        if self.transport.is_closing():
            return
        self.transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def close(self) -> None:
        """Close after what is held has been written (a ``Connection: close``
        answer is held, then closed, in the same turn)."""
        self.flush()
        self.transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class CorkedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol over a ``CorkedTransport``."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        corked: Any = CorkedTransport(transport, self.loop)
        super().connection_made(corked)

    def handle_websocket_upgrade(self) -> None:
        corked = self.transport
        if isinstance(corked, CorkedTransport):
            corked.flush()
            self.transport = corked.transport
        super().handle_websocket_upgrade()

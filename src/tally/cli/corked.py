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
Flow control stays the real transport's: what is held is handed over at once
when it passes ``FLUSH_BYTES``, so an app that sends a large body without ever
yielding to the loop still meets uvicorn's back-pressure (the real transport
pauses it) rather than piling its body up here. After a WebSocket upgrade the
connection's writes go straight through, in the order they are made: a
pipelined answer still being written must not land after the ``101``.

``tally serve --server uvicorn`` (the default) runs with
``http="tally.cli.corked:CorkedHttpToolsProtocol"``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# Held bytes past which a write is handed over at once (and uvicorn's flow
# control sees it). A JSON answer is a few hundred bytes; a chunk of a large
# body is its own send anyway.
FLUSH_BYTES = 64 * 1024


class CorkedTransport:
    """A transport whose writes within one turn of the loop leave as one."""

    __slots__ = ("_direct", "_held", "_loop", "_pending", "_scheduled", "transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self._loop = loop
        self._pending: list[bytes] = []
        self._held = 0
        self._scheduled = False
        self._direct = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if self._direct:
            self.transport.write(data)
            return
        self._pending.append(bytes(data))
        self._held += len(data)
        if self._held >= FLUSH_BYTES:
            self.flush()
        elif not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush_soon)

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def _flush_soon(self) -> None:
        self._scheduled = False
        self.flush()

    def flush(self) -> None:
        """Hand what is held to the real transport (unless it has closed: then
        the peer is gone and nothing can reach it)."""
        pending = self._pending
        if not pending:
            return
        self._pending = []
        self._held = 0
        if self.transport.is_closing():
            return
        self.transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def uncork(self) -> None:
        """Write what is held, and every later write at once."""
        self.flush()
        self._direct = True

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
            # A pipelined request's cycle may still write through the corked
            # transport: from now on its writes go straight through, in order.
            corked.uncork()
            self.transport = corked.transport
        super().handle_websocket_upgrade()

"""A TCP proxy in front of ``tally serve`` that breaks connections on purpose.

Each client connection takes the next fault from a plan:

- ``"pass"``: relay both ways;
- ``"503"``: answer ``503`` with ``Retry-After: 0`` without reaching the server;
- ``"reset"``: close at once, before the request reaches the server;
- ``"drop"``: relay the request, wait for the server's whole answer, then close
  the client's connection without sending it. The server committed; the client
  cannot know. This is the case idempotency keys exist for.

Clients send ``Connection: close`` through it, so one connection is one request
and one fault. It runs its own event loop in a thread, on 127.0.0.1 only, and
stops when its context ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

UNAVAILABLE = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\n"
    b"retry-after: 0\r\nconnection: close\r\ncontent-length: 2\r\n\r\n{}"
)
READ_BYTES = 65536


@dataclass
class Plan:
    faults: list[str]
    default: str = "pass"
    seen: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next(self) -> str:
        with self.lock:
            fault = self.faults.pop(0) if self.faults else self.default
            self.seen.append(fault)
            return fault


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(READ_BYTES):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(ConnectionError, OSError):
        writer.write_eof()


async def _handle(
    plan: Plan, upstream_port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    fault = plan.next()
    try:
        if fault == "503":
            await reader.readuntil(b"\r\n\r\n")
            writer.write(UNAVAILABLE)
            await writer.drain()
            return
        if fault == "reset":
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
        try:
            if fault == "drop":
                # Every byte of the request on, every byte of the answer read, none sent back.
                forward = asyncio.ensure_future(_pipe(reader, up_writer))
                await up_reader.read()  # the server closes after its answer (connection: close)
                forward.cancel()
                return
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            up_writer.close()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


@contextlib.contextmanager
def faulty_proxy(upstream_port: int, plan: Plan) -> Iterator[str]:
    """Yield the proxy's base URL; stop it afterwards."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    box: dict[str, asyncio.Server] = {}

    async def serve() -> None:
        server = await asyncio.start_server(
            lambda r, w: _handle(plan, upstream_port, r, w), "127.0.0.1", 0
        )
        box["server"] = server
        started.set()
        async with server:
            await server.serve_forever()

    thread = threading.Thread(target=lambda: _run(loop, serve()), daemon=True)
    thread.start()
    if not started.wait(10):
        raise RuntimeError("the proxy did not start")
    port = box["server"].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        loop.call_soon_threadsafe(box["server"].close)
        thread.join(10)


def _run(loop: asyncio.AbstractEventLoop, main: object) -> None:
    asyncio.set_event_loop(loop)
    with contextlib.suppress(asyncio.CancelledError):
        loop.run_until_complete(main)  # type: ignore[arg-type]
    # Connections still open when the proxy stops end here, not with the loop.
    pending = asyncio.all_tasks(loop)
    for task in pending:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    loop.close()

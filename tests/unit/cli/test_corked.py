"""The HTTP/1.1 protocol ``tally serve`` runs under uvicorn (tally.cli.corked): a
response's writes leave as one, and nothing the app sends is lost, reordered or
held: pipelined requests, ``Connection: close``, a streamed body, a peer gone.

Over real loopback sockets under uvloop, as the server runs (a recording
wrapper counts the real transport's writes). tests/e2e runs it under
``tally serve`` with every route, event stream and WebSocket."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn
import uvloop

from tally.cli.corked import FLUSH_BYTES, CorkedHttpToolsProtocol, CorkedTransport

PROTOCOL = "tally.cli.corked:CorkedHttpToolsProtocol"


class Recording:
    """The real transport, counting the writes that reach it."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


def run(main: Callable[[], Awaitable[None]]) -> None:
    uvloop.run(main())


async def _pair() -> tuple[asyncio.Transport, socket.socket]:
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_connection(asyncio.Protocol, sock=ours)
    return transport, theirs  # type: ignore[return-value]


async def _corked() -> tuple[CorkedTransport, Recording, socket.socket]:
    """A corked transport over a recording of a real one, and the peer's socket."""
    transport, peer = await _pair()
    recording = Recording(transport)
    corked = CorkedTransport(recording, asyncio.get_running_loop())  # type: ignore[arg-type]
    return corked, recording, peer


async def _read_all(sock: socket.socket, size: int) -> bytes:
    loop = asyncio.get_running_loop()
    got = b""
    while len(got) < size:
        chunk = await asyncio.wait_for(loop.sock_recv(sock, 65536), 5)
        if not chunk:
            break
        got += chunk
    return got


def test_the_writes_of_one_turn_reach_the_transport_as_one_in_order() -> None:
    async def main() -> None:
        corked, recording, peer = await _corked()
        corked.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        corked.write(bytearray(b"{}"))
        corked.write(b"")
        assert recording.writes == []  # held until the loop's next turn
        await asyncio.sleep(0)
        assert recording.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
        corked.writelines([b"a", b"b"])
        await asyncio.sleep(0)
        corked.write(b"c")
        await asyncio.sleep(0)
        assert recording.writes[1:] == [b"ab", b"c"]
        sent = b"".join(recording.writes)
        assert await _read_all(peer, len(sent)) == recording.writes[0] + b"abc"
        recording.transport.close()
        peer.close()

    run(main)


def test_close_writes_what_is_held_first_and_a_closed_transport_takes_nothing() -> None:
    async def main() -> None:
        corked, recording, peer = await _corked()
        corked.write(b"last words")
        corked.close()
        assert recording.writes == [b"last words"]
        assert await _read_all(peer, 11) == b"last words"  # then EOF
        corked.write(b"after the close")
        await asyncio.sleep(0)  # the turn's flush finds the transport closing
        assert recording.writes == [b"last words"]
        assert corked.is_closing()  # everything else is the real transport's
        peer.close()

    run(main)


def test_held_bytes_past_the_threshold_are_handed_over_at_once() -> None:
    async def main() -> None:
        corked, recording, peer = await _corked()
        corked.write(b"head")
        corked.write(b"x" * FLUSH_BYTES)  # in the same turn: no waiting for the next
        assert recording.writes == [b"head" + b"x" * FLUSH_BYTES]
        corked.write(b"tail")
        await asyncio.sleep(0)
        assert recording.writes[1:] == [b"tail"]
        recording.transport.close()
        peer.close()

    run(main)


BIG_CHUNKS = 1024  # of 64 KiB: 64 MiB, if nothing held it back
sent_chunks: list[int] = []


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 1000})
        return
    if scope["type"] != "http":
        return
    if scope["path"] == "/big":  # never yields to the loop unless send makes it
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(BIG_CHUNKS):
            await send({"type": "http.response.body", "body": b"x" * 65536, "more_body": True})
            sent_chunks.append(1)
        await send({"type": "http.response.body", "body": b""})
        return
    body = f"{scope['method']} {scope['path']}".encode()
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for part in (b"one ", b"two ", b"three"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
            await asyncio.sleep(0.01)  # each part leaves in a turn of its own
        await send({"type": "http.response.body", "body": b""})
        return
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _serve(client: Callable[[int], Awaitable[None]]) -> None:
    config = uvicorn.Config(
        _app, host="127.0.0.1", port=0, http=PROTOCOL, loop="none", lifespan="off",
        log_level="warning", interface="asgi3", ws="websockets-sansio",
    )  # fmt: skip
    config.load()
    assert config.http_protocol_class is CorkedHttpToolsProtocol
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(500):  # up to 5 s
        if server.started:
            break
        await asyncio.sleep(0.01)
    assert server.started
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        await client(port)
    finally:
        server.should_exit = True
        server.force_exit = True  # a stuck reader's response is not waited for
        await task


def test_pipelined_requests_and_connection_close_are_answered_in_order_then_closed() -> None:
    async def client(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"GET /a HTTP/1.1\r\nhost: t\r\n\r\n"
            b"POST /b HTTP/1.1\r\nhost: t\r\ncontent-length: 0\r\n\r\n"
            b"GET /c HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n"
        )
        answer = await asyncio.wait_for(reader.read(), 5)  # to EOF: the server closed
        writer.close()
        bodies = [part.split(b"\r\n\r\n", 1)[1][:6] for part in answer.split(b"HTTP/1.1 ")[1:]]
        assert bodies == [b"GET /a", b"POST /", b"GET /c"]
        assert answer.count(b"HTTP/1.1 200 OK") == 3
        assert b"connection: close" in answer.split(b"HTTP/1.1 ")[3]

    run(lambda: _serve(client))


def test_a_streamed_body_arrives_whole_in_chunked_encoding() -> None:
    async def client(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /stream HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        head, body = answer.split(b"\r\n\r\n", 1)
        assert b"transfer-encoding: chunked" in head
        assert body == b"4\r\none \r\n4\r\ntwo \r\n5\r\nthree\r\n0\r\n\r\n"

    run(lambda: _serve(client))


def test_a_client_gone_before_its_answer_is_written_breaks_nothing() -> None:
    async def client(port: int) -> None:
        for _ in range(20):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /stream HTTP/1.1\r\nhost: t\r\n\r\n")
            await writer.drain()
            writer.transport.abort()
        await asyncio.sleep(0.1)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /still HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert answer.endswith(b"GET /still")

    run(lambda: _serve(client))


def test_a_body_sent_without_yielding_to_a_reader_that_never_reads_is_held_back() -> None:
    """uvicorn's back-pressure still stops the app: held bytes go to the real
    transport past FLUSH_BYTES, which pauses the app's sends when it fills."""

    async def client(port: int) -> None:
        sent_chunks.clear()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, ("127.0.0.1", port))
        await loop.sock_sendall(sock, b"GET /big HTTP/1.1\r\nhost: t\r\n\r\n")
        await asyncio.sleep(0.5)  # and never read
        assert 0 < len(sent_chunks) < BIG_CHUNKS // 4
        sock.close()

    run(lambda: _serve(client))


def test_an_answer_pipelined_before_a_websocket_upgrade_comes_before_the_101() -> None:
    async def client(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"GET /before HTTP/1.1\r\nhost: t\r\n\r\n"
            b"GET /ws HTTP/1.1\r\nhost: t\r\nupgrade: websocket\r\nconnection: upgrade\r\n"
            b"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n"
        )
        got = b""
        while b"101 Switching Protocols" not in got:
            got += await asyncio.wait_for(reader.read(4096), 5)
        writer.close()
        assert got.startswith(b"HTTP/1.1 200 OK")
        assert got.index(b"GET /before") < got.index(b"HTTP/1.1 101")

    run(lambda: _serve(client))

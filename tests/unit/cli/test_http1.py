"""Tally's HTTP/1.1 protocol (tally.cli.http1), as ``tally serve`` runs it under
uvicorn's server: over real loopback sockets, under uvloop, with raw bytes on the
client's side so every byte of the answer is seen.

What is checked: answers leave whole and in order (one write for a JSON answer,
pipelined requests in turn, a stream in chunks), request bodies arrive whole
however they are cut, back-pressure both ways, ``Expect: 100-continue``,
keep-alive and its timeout, HEAD and 204, refused requests and failing apps,
header injection, a client leaving, WebSocket upgrades and a graceful shutdown.
tests/e2e runs it under ``tally serve`` with every route, event stream and
WebSocket."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import uvicorn
import uvloop

from tally.cli.http1 import HIGH_WATER, KEEP_ALIVE_GRACE_SECONDS, Http1Protocol

PROTOCOL = "tally.cli.http1:Http1Protocol"
BIG_CHUNKS = 1024  # of 64 KiB: 64 MiB, if nothing held it back
RETRIED_CHUNKS = 64  # of 64 KiB: 4 MiB, more than the socket buffers hold
sent_chunks: list[int] = []
seen: dict[str, Any] = {}
writes: list[bytes] = []


class Recording:
    """The real transport, recording the writes that reach it and each pause
    and resume of reading."""

    def __init__(self, transport: Any) -> None:
        self.transport = transport

    def write(self, data: bytes) -> None:
        writes.append(bytes(data))
        self.transport.write(data)

    def pause_reading(self) -> None:
        writes.append(b"<pause reading>")
        self.transport.pause_reading()

    def resume_reading(self) -> None:
        writes.append(b"<resume reading>")
        self.transport.resume_reading()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class RecordingProtocol(Http1Protocol):
    def connection_made(self, transport: Any) -> None:
        super().connection_made(Recording(transport))


async def _read_body(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        assert message["type"] == "http.request"
        body += message["body"]
        if not message["more_body"]:
            return body


async def _answer(send: Any, status: int, body: bytes, extra: list[Any] | None = None) -> None:
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send(
        {"type": "http.response.start", "status": status, "headers": headers + (extra or [])}
    )
    await send({"type": "http.response.body", "body": body})


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "websocket":  # accept, echo one message, close
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        message = await receive()
        await send({"type": "websocket.send", "text": message["text"]})
        await send({"type": "websocket.close", "code": 1000})
        return
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/echo":
        await _answer(send, 200, await _read_body(receive))
    elif path == "/slow-reader":  # lets a large body pile up before reading it
        await asyncio.sleep(0.3)
        await _answer(send, 200, str(len(await _read_body(receive))).encode())
    elif path == "/refuse":  # answers without reading the body
        await _answer(send, 413, b"too large")
    elif path == "/sleep":
        seen["sleeping"] = True
        await asyncio.sleep(float(scope["query_string"] or b"0.5"))
        await _answer(send, 200, b"slept")
    elif path == "/wait-for-disconnect":
        await _read_body(receive)
        seen["read"] = True
        seen["after-body"] = await receive()
    elif path == "/retried-sends":  # each chunk's send retried after a timeout
        chunk = b"r" * 65536
        length = str(RETRIED_CHUNKS * len(chunk)).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", length)]})  # fmt: skip
        for _ in range(RETRIED_CHUNKS):
            while True:
                try:
                    await asyncio.wait_for(
                        send({"type": "http.response.body", "body": chunk, "more_body": True}),
                        0.05,
                    )
                    break
                except TimeoutError:
                    seen["timeouts"] = seen.get("timeouts", 0) + 1
        await send({"type": "http.response.body", "body": b""})
    elif path == "/not-modified":
        await send({"type": "http.response.start", "status": 304,
                    "headers": [(b"content-length", b"42"), (b"etag", b'"v1"')]})  # fmt: skip
        await send({"type": "http.response.body", "body": b""})
    elif path == "/big":  # never yields to the loop unless send makes it
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(BIG_CHUNKS):
            await send({"type": "http.response.body", "body": b"x" * 65536, "more_body": True})
            sent_chunks.append(1)
        await send({"type": "http.response.body", "body": b""})
    elif path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        seen["streaming"] = True
        for part in (b"one ", b"two ", b"three"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
            await asyncio.sleep(0.05)
        await send({"type": "http.response.body", "body": b""})
        seen["stream ended"] = True
    elif path == "/no-content":
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/raise-before":
        raise RuntimeError("before the answer")
    elif path == "/raise-after":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise RuntimeError("mid-answer")
    elif path == "/inject":
        await _answer(send, 200, b"x", [(b"x-evil", b"a\r\nset-cookie: stolen=1")])
    else:
        await _answer(
            send, 200, f"{scope['method']} {path}?{scope['query_string'].decode()}".encode()
        )


async def _start(
    http: Any = PROTOCOL, **options: Any
) -> tuple[uvicorn.Server, asyncio.Task[None], int]:
    """uvicorn's server with the protocol, listening: the server, its task, its port."""
    config = uvicorn.Config(
        _app, host="127.0.0.1", port=0, http=http, loop="none", lifespan="off",
        log_level="critical", interface="asgi3", ws="websockets-sansio", **options,
    )  # fmt: skip
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(500):  # up to 5 s
        if server.started:
            break
        await asyncio.sleep(0.01)
    assert server.started
    return server, task, server.servers[0].sockets[0].getsockname()[1]


async def _serve(client: Callable[[int], Awaitable[None]], **options: Any) -> None:
    server, task, port = await _start(**options)
    try:
        await client(port)
    finally:
        server.should_exit = True
        server.force_exit = True  # a stuck reader's response is not waited for
        await task


def run(client: Callable[[int], Awaitable[None]], **options: Any) -> None:
    writes.clear()
    seen.clear()
    uvloop.run(_serve(client, **options))


async def _until(what: str, seconds: float = 5) -> None:
    """Wait until the app has recorded ``what``."""
    for _ in range(int(seconds / 0.01)):
        if what in seen:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the app never recorded {what!r}")


def answer_to(request: bytes, **options: Any) -> bytes:
    """Serve, send the bytes on one connection, and return what the server wrote
    before it closed."""
    answers: list[bytes] = []

    async def client(port: int) -> None:
        answers.append(await _exchange(port, request))

    run(client, **options)
    return answers[0]


async def _exchange(port: int, request: bytes) -> bytes:
    """Send the bytes, read to the server's close."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return answer


def test_uvicorn_makes_this_protocol_for_each_connection() -> None:
    config = uvicorn.Config(_app, http=PROTOCOL)
    config.load()
    assert config.http_protocol_class is Http1Protocol


def test_a_small_answer_leaves_in_one_write_with_its_head() -> None:
    answer = answer_to(
        b"GET /one?x=1 HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n", http=RecordingProtocol
    )
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert answer.endswith(b"\r\n\r\nGET /one?x=1")
    assert writes == [answer]


def test_pipelined_requests_and_connection_close_are_answered_in_order_then_closed() -> None:
    answer = answer_to(
        b"GET /a HTTP/1.1\r\nhost: t\r\n\r\n"
        b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 5\r\n\r\nhello"
        b"GET /c HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n",
    )
    bodies = [part.split(b"\r\n\r\n", 1)[1] for part in answer.split(b"HTTP/1.1 ")[1:]]
    assert bodies == [b"GET /a?", b"hello", b"GET /c?"]
    assert answer.count(b"HTTP/1.1 200 OK") == 3
    assert b"connection: close" in answer.split(b"HTTP/1.1 ")[3]


def test_a_body_cut_into_pieces_arrives_whole() -> None:
    async def client(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 11\r\n")
        for piece in (b"\r\nhel", b"lo w", b"orld"):
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(piece)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200 OK") and b"content-length: 11" in head
        assert await asyncio.wait_for(reader.readexactly(11), 5) == b"hello world"
        writer.close()

    run(client)


def test_a_chunked_request_body_arrives_whole() -> None:
    answer = answer_to(
        b"POST /echo HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\nconnection: close\r\n"
        b"\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    assert answer.endswith(b"\r\n\r\nhello world")


def test_a_body_larger_than_the_high_water_mark_pauses_reading_until_the_app_takes_it() -> None:
    size = HIGH_WATER * 16

    answer = answer_to(
        b"POST /slow-reader HTTP/1.1\r\nhost: t\r\nconnection: close\r\n"
        b"content-length: %d\r\n\r\n%s" % (size, b"b" * size),
        http=RecordingProtocol,
    )
    assert answer.endswith(b"\r\n\r\n%d" % size)
    # Reading paused while the app slept on a full buffer, and resumed when it read.
    first_pause = writes.index(b"<pause reading>")
    assert b"<resume reading>" in writes[first_pause:]


def test_expect_100_continue_is_answered_when_the_app_reads_the_body() -> None:
    async def client(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 2\r\nexpect: 100-continue\r\n\r\n"
        )
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"ok")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200 OK") and b"connection: close" not in head
        assert await reader.readexactly(2) == b"ok"
        writer.close()

    run(client)


def test_an_answer_before_a_continued_body_closes_the_connection() -> None:
    answer = answer_to(
        b"POST /refuse HTTP/1.1\r\nhost: t\r\ncontent-length: 99\r\nexpect: 100-continue\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"100 Continue" not in answer
    assert b"connection: close" in answer  # and the server closed: read() reached EOF


def test_an_idle_connection_is_closed_after_the_keep_alive_timeout_and_a_busy_one_is_not() -> None:
    async def client(port: int) -> None:
        loop = asyncio.get_running_loop()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        # Busy for longer than the timeout: answered, not cut.
        writer.write(b"GET /sleep?2.5 HTTP/1.1\r\nhost: t\r\n\r\n")
        assert (await asyncio.wait_for(reader.readuntil(b"slept"), 10)).startswith(b"HTTP/1.1 200")
        # Then idle: closed after about the timeout.
        started = loop.time()
        assert await asyncio.wait_for(reader.read(), 10) == b""
        assert 0.5 < loop.time() - started < 4
        writer.close()

    run(client, timeout_keep_alive=1)


def test_a_request_head_never_finished_is_closed_after_the_keep_alive_timeout() -> None:
    async def client(port: int) -> None:
        loop = asyncio.get_running_loop()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        started = loop.time()
        writer.write(b"GET /a HTTP/1.1\r\nhost: t\r\n")  # and never the blank line
        assert await asyncio.wait_for(reader.read(), 10) == b""
        assert 0.5 < loop.time() - started < 4
        writer.close()

    run(client, timeout_keep_alive=1)


@contextlib.contextmanager
def loop_held(seconds: float) -> Iterator[Callable[[float], None]]:
    """A way for another thread to hold the running loop up for ``seconds``, from
    ``after`` seconds on, in its I/O phase (a blocking callback of a readable
    socket), as a burst of other connections' work would."""
    loop = asyncio.get_running_loop()
    hold_r, hold_w = socket.socketpair()

    def hold() -> None:
        hold_r.recv(1)
        time.sleep(seconds)

    def hold_after(after: float) -> None:
        loop.call_soon_threadsafe(loop.call_later, after, hold_w.send, b"x")

    loop.add_reader(hold_r.fileno(), hold)
    try:
        yield hold_after
    finally:
        loop.remove_reader(hold_r.fileno())
        hold_r.close()
        hold_w.close()


def test_a_request_waiting_unread_when_the_keep_alive_timeout_ends_is_answered() -> None:
    """The loop is held up across the keep-alive deadline while the client sends
    its next request on the connection it still sees open. The timer then finds
    that request unread in the kernel: it is answered, not thrown away with a
    reset."""

    async def client(port: int) -> None:
        def talk(hold_after: Callable[[float], None]) -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(b"GET /first HTTP/1.1\r\nhost: t\r\n\r\n")
                first = b""
                while not first.endswith(b"GET /first?"):
                    first += s.recv(65536)
                hold_after(0.7)  # held from 0.7 s after the answer to 1.3; the timeout ends at 1
                time.sleep(0.9)
                s.sendall(b"GET /second HTTP/1.1\r\nhost: t\r\n\r\n")
                second = b""
                while not second.endswith(b"GET /second?"):
                    got = s.recv(65536)
                    assert got, second  # closed before answering
                    second += got
                return second

        with loop_held(0.6) as hold_after:
            second = await asyncio.to_thread(talk, hold_after)
        assert second.startswith(b"HTTP/1.1 200 ")

    run(client, timeout_keep_alive=1)


def test_a_connection_given_grace_is_still_closed_if_no_request_completes() -> None:
    """Bytes waiting when the timeout ends buy one grace, not a new timeout: a
    head left unfinished is closed after it."""

    async def client(port: int) -> None:
        def talk(hold_after: Callable[[float], None]) -> float:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                started = time.monotonic()
                hold_after(
                    0.7
                )  # held from 0.7 s after the connection to 1.3; the timeout ends at 1
                time.sleep(0.8)
                s.sendall(b"GET /a HTTP/1.1\r\n")  # and never the rest of the head
                assert s.recv(65536) == b""  # closed, without a reset
                return time.monotonic() - started

        with loop_held(0.6) as hold_after:
            closed_after = await asyncio.to_thread(talk, hold_after)
        assert 1.1 + KEEP_ALIVE_GRACE_SECONDS < closed_after < 4, closed_after

    run(client, timeout_keep_alive=1)


def test_head_204_and_304_have_no_body_whatever_their_content_length_says() -> None:
    answer = answer_to(
        b"HEAD /a HTTP/1.1\r\nhost: t\r\n\r\n"
        b"GET /no-content HTTP/1.1\r\nhost: t\r\n\r\n"
        b"GET /not-modified HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n",
    )
    head, no_content, not_modified = answer.split(b"\r\n\r\n")[:3]
    assert head.startswith(b"HTTP/1.1 200 OK") and b"content-length: 8" in head
    assert no_content.startswith(b"HTTP/1.1 204 No Content")
    assert b"transfer-encoding" not in no_content
    assert not_modified.startswith(b"HTTP/1.1 304 Not Modified")
    assert b"content-length: 42" in not_modified
    assert answer.endswith(b"\r\n\r\n")


def test_an_http_1_0_stream_ends_with_the_connection_not_in_chunks() -> None:
    answer = answer_to(b"GET /stream HTTP/1.0\r\n\r\n")
    head, body = answer.split(b"\r\n\r\n", 1)
    assert b"transfer-encoding" not in head and b"connection: close" in head
    assert body == b"one two three"


def test_a_request_the_parser_refuses_is_answered_400_and_closed() -> None:
    answer = answer_to(b"GET /a HTTP/1.1\r\nhost: t\r\nbad header\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"connection: close" in answer


def test_a_refused_request_pipelined_behind_others_is_answered_400_after_them() -> None:
    answer = answer_to(
        b"GET /sleep?0.2 HTTP/1.1\r\nhost: t\r\n\r\n"
        b"GET /b HTTP/1.1\r\nhost: t\r\n\r\n"
        b"GET /c HTTP/1.1\r\nhost: t\r\nbad header\r\n\r\n",
    )
    answers = answer.split(b"HTTP/1.1 ")[1:]
    assert [a[:3] for a in answers] == [b"200", b"200", b"400"]
    assert answers[0].endswith(b"slept") and answers[1].endswith(b"GET /b?")


def test_an_app_failing_before_its_answer_gets_a_500_and_one_failing_mid_answer_a_cut() -> None:
    async def client(port: int) -> None:
        answer = await _exchange(port, b"GET /raise-before HTTP/1.1\r\nhost: t\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 500 Internal Server Error")
        assert answer.endswith(b"Internal Server Error")
        answer = await _exchange(port, b"GET /raise-after HTTP/1.1\r\nhost: t\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200 OK")  # the head of a stream leaves at once
        assert not answer.endswith(b"0\r\n\r\n")  # but never looks complete

    run(client)


def test_a_header_value_that_would_start_a_new_header_is_never_written() -> None:
    answer = answer_to(b"GET /inject HTTP/1.1\r\nhost: t\r\n\r\n")
    assert answer == b""  # the connection is closed with nothing written


def test_a_streamed_body_arrives_whole_in_chunked_encoding() -> None:
    async def client(port: int) -> None:
        answer = await _exchange(
            port, b"GET /stream HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n"
        )
        head, body = answer.split(b"\r\n\r\n", 1)
        assert b"transfer-encoding: chunked" in head
        assert body == b"4\r\none \r\n4\r\ntwo \r\n5\r\nthree\r\n0\r\n\r\n"

    run(client)


def test_a_client_gone_is_told_to_the_app_and_breaks_nothing() -> None:
    async def client(port: int) -> None:
        for path, started in ((b"/stream", "streaming"), (b"/wait-for-disconnect", "read")):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET %s HTTP/1.1\r\nhost: t\r\n\r\n" % path)
            await _until(started)
            writer.transport.abort()
        await _until("after-body")
        assert seen["after-body"] == {"type": "http.disconnect"}
        await _until("stream ended")  # its sends after the client left were no-ops
        answer = await _exchange(
            port, b"GET /still HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n"
        )
        assert answer.endswith(b"GET /still?")

    run(client)


def test_a_body_sent_without_yielding_to_a_reader_that_never_reads_is_held_back() -> None:
    async def client(port: int) -> None:
        sent_chunks.clear()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, ("127.0.0.1", port))
        await loop.sock_sendall(sock, b"GET /big HTTP/1.1\r\nhost: t\r\n\r\n")
        for _ in range(500):  # until the app has begun to send, and never read
            if sent_chunks:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.5)  # time to send it all, were it not held back
        assert 0 < len(sent_chunks) < BIG_CHUNKS // 4
        sock.close()

    run(client)


def test_a_send_retried_after_timing_out_on_back_pressure_waits_and_the_body_arrives_whole() -> (
    None
):
    async def client(port: int) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, ("127.0.0.1", port))
        await loop.sock_sendall(
            sock, b"GET /retried-sends HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n"
        )
        await _until("timeouts")  # not reading: the server's sends time out
        got = b""
        while chunk := await asyncio.wait_for(loop.sock_recv(sock, 1 << 20), 10):
            got += chunk
        sock.close()
        assert got.split(b"\r\n\r\n", 1)[1] == b"r" * (RETRIED_CHUNKS * 65536)

    run(client)


def _masked_text_frame(text: bytes) -> bytes:
    mask = b"\x01\x02\x03\x04"
    return (
        b"\x81"
        + bytes([0x80 | len(text)])
        + mask
        + bytes(c ^ mask[i % 4] for i, c in enumerate(text))
    )


def test_a_websocket_upgrade_pipelined_behind_a_request_waits_for_its_answer() -> None:
    async def client(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"GET /sleep?0.2 HTTP/1.1\r\nhost: t\r\n\r\n"
            b"GET /ws HTTP/1.1\r\nhost: t\r\nupgrade: websocket\r\nconnection: upgrade\r\n"
            b"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n"
        )
        got = await asyncio.wait_for(reader.readuntil(b"101 Switching Protocols"), 5)
        assert got.index(b"slept") < got.index(b"HTTP/1.1 101")
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)  # the 101's headers
        # Reading, paused while the upgrade waited, resumed for the WebSocket.
        writer.write(_masked_text_frame(b"hello"))
        echo = await asyncio.wait_for(reader.readexactly(7), 5)
        assert echo == b"\x81\x05hello"
        writer.close()

    run(client)


def test_shutdown_closes_idle_connections_and_lets_an_answer_in_progress_finish() -> None:
    async def main() -> None:
        async def client(port: int) -> None:
            idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
            idle_writer.write(b"GET /a HTTP/1.1\r\nhost: t\r\n\r\n")
            await asyncio.wait_for(idle_reader.readuntil(b"GET /a?"), 5)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /sleep HTTP/1.1\r\nhost: t\r\n\r\n")
            await _until("sleeping")
            server.should_exit = True  # as SIGTERM does
            answer = await asyncio.wait_for(reader.read(), 5)
            assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(b"slept")
            assert b"connection: close" in answer
            assert await asyncio.wait_for(idle_reader.read(), 5) == b""
            idle_writer.close()
            writer.close()

        server, task, port = await _start()
        await asyncio.gather(client(port), task)

    seen.clear()
    uvloop.run(main())

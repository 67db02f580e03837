"""The least an HTTP/1.1 server on asyncio and httptools does per request: a yardstick.

``bench/http_protocols.py``'s ``floor`` arm runs its bare ASGI app under this
protocol (through uvicorn's ``http=`` hook), beside uvicorn's own protocol and
Tally's (``tally.cli.http1``). It parses each request with httptools, builds an ASGI scope,
runs the app in a task and writes the answer's status line, headers and body in
one write. It leaves out everything a real server must do besides: checks of
the headers an app sends, Content-Length and chunked bodies, request bodies and
``Expect: 100-continue``, keep-alive timeouts, flow control, pipelined requests
held in order, errors answered 400 or 500, upgrades, graceful shutdown. So it
is not a server to run: the difference between it and uvicorn is the most a
leaner server could save, not what it would (docs/performance.md).
"""

from __future__ import annotations

import asyncio
from typing import Any

import httptools

_REASONS = {200: b"OK", 201: b"Created"}


class FloorProtocol(asyncio.Protocol):
    def __init__(
        self, config: Any, server_state: Any, app_state: Any = None, _loop: Any = None
    ) -> None:
        self.app = config.loaded_app
        self.loop = _loop or asyncio.get_event_loop()
        self.connections = server_state.connections
        self.parser = httptools.HttpRequestParser(self)
        self.transport: Any = None
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # uvloop's, not an asyncio.Transport subclass
        self.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)

    def shutdown(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    # httptools' callbacks
    def on_message_begin(self) -> None:
        self.headers = []

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": self.parser.get_method().decode(),
            "path": self.url.decode(),
            "raw_path": self.url,
            "query_string": b"",
            "root_path": "",
            "scheme": "http",
            "headers": self.headers,
            "server": None,
            "client": None,
        }
        self.loop.create_task(self._run(scope))

    async def _run(self, scope: dict[str, Any]) -> None:
        parts: list[bytes] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status = message["status"]
                parts.append(b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"")))
                parts.extend(b"%s: %s\r\n" % (n, v) for n, v in message["headers"])
                parts.append(b"\r\n")
            else:
                parts.append(message.get("body", b""))
                self.transport.write(b"".join(parts))

        await self.app(scope, receive, send)

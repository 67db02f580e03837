"""A real webhook receiver for the tests: an HTTP server on 127.0.0.1, in a thread,
that records every request and answers as the test scripts it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

WAIT_POLL_SECONDS = 0.05


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Answer:
    status: int = 204
    headers: dict[str, str] = field(default_factory=dict)
    delay_seconds: float = 0.0


class Receiver:
    """Answers each request with the next scripted ``Answer`` (then ``default``)."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.script: list[Answer] = []
        self.default = Answer()
        self.hold = threading.Event()  # while set... see hold_requests
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                with receiver._lock:
                    receiver.received.append(
                        Received(self.path, {k.lower(): v for k, v in self.headers.items()},
                                 body, time.monotonic())
                    )  # fmt: skip
                    answer = receiver.script.pop(0) if receiver.script else receiver.default
                if answer.delay_seconds:
                    time.sleep(answer.delay_seconds)
                try:
                    self.send_response(answer.status)
                    for name, value in answer.headers.items():
                        self.send_header(name, value)
                    self.send_header("content-length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the sender gave up (its timeout): nothing to answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hooks"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def wait_for(
        self, predicate: Callable[[list[Received]], bool], timeout_seconds: float = 20.0
    ) -> list[Received]:
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            with self._lock:
                seen = list(self.received)
            if predicate(seen):
                return seen
            time.sleep(WAIT_POLL_SECONDS)
        raise AssertionError(f"receiver: condition not met in {timeout_seconds} s; got {seen}")

    def wait_count(self, count: int, timeout_seconds: float = 20.0) -> list[Received]:
        return self.wait_for(lambda seen: len(seen) >= count, timeout_seconds)


@contextmanager
def receiving() -> Iterator[Receiver]:
    receiver = Receiver()
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.close()

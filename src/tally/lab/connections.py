"""Lab: many idle connections, held by a thread each or by one event loop.

The C10k problem in one table. Two small echo servers, each in a process of its
own: one starts a thread per accepted connection (the classic blocking model),
the other holds every connection in one asyncio event loop (Tally's model:
uvicorn on uvloop). The lab opens the same number of idle connections to each,
then reads the server's resident memory and thread count from ``/proc`` and
checks that every connection still answers.

A thread costs a kernel thread and its stack (8 MiB reserved, touched in
pages); a connection in an event loop costs a socket and a few hundred bytes of
Python objects. Both answer an idle connection; only one does so at 10,000.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from tally.lab import tables

MODELS = ("threads", "event-loop")
READY = b"ready\n"
THREAD_STACK_BYTES = 256 * 1024  # smaller than the 8 MiB default, as a tuned server would


@dataclass(frozen=True)
class Held:
    model: str
    connections: int
    rss_mib_before: float
    rss_mib_after: float
    threads: int
    connect_seconds: float
    answered: int

    @property
    def kib_per_connection(self) -> float:
        return (self.rss_mib_after - self.rss_mib_before) * 1024 / max(1, self.connections)


def _serve_threads(listener: socket.socket) -> None:
    threading.stack_size(THREAD_STACK_BYTES)

    def handle(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(64):
                conn.sendall(data)

    while True:
        conn, _ = listener.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


async def _serve_loop(listener: socket.socket) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(64):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, sock=listener, backlog=4096)
    await server.serve_forever()


def serve(model: str) -> None:
    """The child process: listen on a free loopback port, print it, serve forever."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    sys.stdout.write(f"{listener.getsockname()[1]}\n")
    sys.stdout.flush()
    if model == "threads":
        _serve_threads(listener)
    else:
        asyncio.run(_serve_loop(listener))


def _status(pid: int) -> tuple[float, int]:
    """(resident MiB, threads) of a process, from /proc."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["Threads"])


def raise_open_files_limit(wanted: int) -> int:
    """Raise this process's soft limit on open files toward ``wanted``; return it."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(hard, max(soft, wanted))
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def hold(model: str, connections: int) -> Held:
    """Open ``connections`` idle connections to a fresh server of ``model``."""
    child = subprocess.Popen(  # noqa: S603 (our own interpreter and module, no input)
        [sys.executable, "-c", f"from tally.lab.connections import serve; serve({model!r})"],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        time.sleep(0.2)
        before, _ = _status(child.pid)
        started = time.perf_counter()
        socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(connections)]
        connected = time.perf_counter() - started
        time.sleep(0.5)  # let the server take every connection in
        after, threads = _status(child.pid)
        answered = _ping_all(socks)
        for s in socks:
            s.close()
        return Held(model, connections, before, after, threads, connected, answered)
    finally:
        child.kill()
        child.wait(10)


def _ping_all(socks: list[socket.socket]) -> int:
    answered = 0
    for s in socks:
        s.settimeout(5)
        s.sendall(b"x")
        if s.recv(1) == b"x":
            answered += 1
    return answered


def table(results: list[Held]) -> str:
    headers = ["model", "connections", "RSS before MiB", "RSS after MiB", "KiB/connection"]
    headers += ["threads", "connect s", "answered"]
    rows = [
        [r.model, r.connections, r.rss_mib_before, r.rss_mib_after, r.kib_per_connection,
         r.threads, r.connect_seconds, r.answered]
        for r in results
    ]  # fmt: skip
    return tables.render(headers, rows)

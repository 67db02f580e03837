"""HTTP/1.1 protocols side by side on a bare app: what each costs per request.

    .venv/bin/python bench/http_protocols.py [--rounds 4] [--seconds 5] [--clients 64]

A process serves one bare app (``bench/bare_app.py``: a 201 with a transfer-sized
JSON body and the headers Tally sends; nothing else runs, so the difference is the
HTTP layer's) under uvicorn's server and uvloop with ``http="httptools"``
(uvicorn's own protocol), ``http="tally.cli.http1:Http1Protocol"`` (Tally's, the
one ``tally serve`` runs) or the ``floor`` of ``bench/floor_protocol.py`` (not a
server: the least one does per request, to show what a protocol costs above it);
or under granian (one worker, HTTP/1.1, uvloop, as ``tally serve --server
granian`` runs it) through its ASGI interface and through RSGI, its own, where
the app hands the whole answer to granian's Rust side in one call. Alternating,
one server per run; wrk sends ``GET /`` over ``--clients`` connections. Reported
per run: requests/s and the server's CPU µs per request (user + system of the
process and its children, from psutil: the system calls and granian's Rust
threads are part of it). Only 127.0.0.1 is contacted. (Until 2026-12-07 this was
``bench/corked_writes.py``, with an arm for ``tally.cli.corked``, the protocol
``tally.cli.http1`` replaced.)
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from harness import load, procs

PROTOCOLS = {
    "httptools": "httptools",
    "http1": "tally.cli.http1:Http1Protocol",
    # Not a server: the least one does per request (bench/floor_protocol.py).
    "floor": "floor_protocol:FloorProtocol",
    # granian (`tally serve --server granian`): its Rust HTTP/1.1 under the same
    # ASGI app, and the same answer through its own interface, RSGI.
    "granian-asgi": "asgi",
    "granian-rsgi": "rsgi",
}
BENCH_DIR = Path(__file__).resolve().parent
_REQUESTS = re.compile(r"(\d+) requests in ([0-9.]+)s")


def _cpu_seconds(pid: int) -> float:
    """The process's CPU and its children's (granian serves from a child process)."""
    process = procs.psutil.Process(pid)
    total = 0.0
    for p in [process, *process.children(recursive=True)]:
        times = p.cpu_times()
        total += times.user + times.system
    return total


def _server_argv(protocol: str, port: int) -> list[str]:
    if protocol.startswith("granian-"):
        granian = str(Path(sys.executable).parent / "granian")
        return [
            granian, "--interface", PROTOCOLS[protocol], "--workers", "1", "--http", "1",
            "--loop", "uvloop", "--host", "127.0.0.1", "--port", str(port), "--no-ws",
            "--log-level", "warning",
            f"bare_app:{'rsgi' if protocol.endswith('rsgi') else 'app'}",
        ]  # fmt: skip
    return [sys.executable, str(BENCH_DIR / "bare_app.py"), PROTOCOLS[protocol], str(port)]


def _wait_listening(port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listened on {port}")


def one_run(protocol: str, clients: int, seconds: int) -> tuple[float, float]:
    """(requests/s, CPU µs per request) of one server process under wrk."""
    port = procs.free_port()
    env = {**os.environ, "PYTHONPATH": str(BENCH_DIR)}  # bare_app, floor_protocol
    server = subprocess.Popen(_server_argv(protocol, port), env=env, cwd=BENCH_DIR)
    try:
        _wait_listening(port, time.monotonic() + 20)
        if protocol.startswith("granian-"):
            time.sleep(0.5)  # its worker process: started, listening, then counted
        before = _cpu_seconds(server.pid)
        argv = [
            load.wrk_path(),
            "-t1",
            f"-c{clients}",
            f"-d{seconds}s",
            f"http://127.0.0.1:{port}/",
        ]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30).stdout
        cpu = _cpu_seconds(server.pid) - before
    finally:
        server.terminate()
        server.wait(10)
    found = _REQUESTS.search(out)
    if found is None or "Socket errors" in out or "Non-2xx" in out:
        raise RuntimeError(f"wrk against {protocol}:\n{out}")
    n = int(found.group(1))
    return n / float(found.group(2)), cpu / n * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4, help="runs per protocol (4)")
    parser.add_argument("--seconds", type=int, default=5, help="seconds per run (5)")
    parser.add_argument("--clients", type=int, default=64, help="wrk connections (64)")
    args = parser.parse_args(argv)
    if not (1 <= args.rounds <= 20 and 1 <= args.seconds <= 60 and 1 <= args.clients <= 1000):
        parser.error("--rounds 1…20, --seconds 1…60, --clients 1…1000")
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in PROTOCOLS}
    for round_n in range(1, args.rounds + 1):
        for name in PROTOCOLS:
            rps, cpu = one_run(name, args.clients, args.seconds)
            runs[name].append((rps, cpu))
            print(f"round {round_n} {name:12} {rps:>9,.0f} req/s  {cpu:>6.1f} µs CPU/request",
                  flush=True)  # fmt: skip
    print(f"\n{args.clients} connections, medians of {args.rounds}:")
    for name, mine in runs.items():
        rps = statistics.median(r for r, _ in mine)
        cpu = statistics.median(c for _, c in mine)
        print(f"  {name:12} {rps:>9,.0f} req/s  {cpu:>6.1f} µs CPU/request")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""HTTP/1.1 protocols side by side on a bare app: what each costs per request.

    .venv/bin/python bench/http_protocols.py [--rounds 4] [--seconds 5] [--clients 64]

A process serves one ASGI app (a 201 with a transfer-sized JSON body and the
headers Tally sends: nothing else runs, so the difference is the HTTP layer's)
under uvicorn's server and uvloop with ``http="httptools"`` (uvicorn's own
protocol), ``http="tally.cli.http1:Http1Protocol"`` (Tally's, the one ``tally
serve`` runs) or the ``floor`` of ``bench/floor_protocol.py`` (not a server: the
least one does per request, to show what a protocol costs above it),
alternating, one process per run; wrk sends ``GET /`` over ``--clients``
connections. Reported per run: requests/s and the server process's CPU µs per
request (user + system, from psutil: the system calls are part of it). Only
127.0.0.1 is contacted. (Until 2026-12-07 this was ``bench/corked_writes.py``,
with an arm for ``tally.cli.corked``, the protocol ``tally.cli.http1`` replaced.)
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
}
BENCH_DIR = Path(__file__).resolve().parent
_REQUESTS = re.compile(r"(\d+) requests in ([0-9.]+)s")

# The app each server runs, as a -c program: the body and headers of a transfer's 201.
APP = """
import json, sys, uvicorn
BODY = json.dumps({
    "id": "tr_01JEXAMPLE0000000000000000", "debit_account_id": "acc_01JEXAMPLE000000000000000",
    "credit_account_id": "acc_01JEXAMPLE000000000000001", "amount": 100, "currency": "USD",
    "status": "posted", "pending": False, "metadata": {},
    "created_at": "2026-12-06T20:00:00.000000Z",
}, separators=(",", ":")).encode()
HEADERS = [
    (b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode()),
    (b"location", b"/v1/transfers/tr_01JEXAMPLE0000000000000000"),
    (b"ratelimit", b'"default";r=999;t=0'), (b"ratelimit-policy", b'"default";q=1000;w=1'),
    (b"request-id", b"req_01JEXAMPLE00000000000000"), (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-store"), (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 201, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), loop="uvloop", http=sys.argv[1],
    interface="asgi3", lifespan="off", access_log=False, log_level="warning")
"""


def _cpu_seconds(pid: int) -> float:
    times = procs.psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


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
    env = {**os.environ, "PYTHONPATH": str(BENCH_DIR)}  # floor_protocol
    server = subprocess.Popen([sys.executable, "-c", APP, PROTOCOLS[protocol], str(port)], env=env)
    try:
        _wait_listening(port, time.monotonic() + 20)
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
            print(f"round {round_n} {name:9} {rps:>9,.0f} req/s  {cpu:>6.1f} µs CPU/request",
                  flush=True)  # fmt: skip
    print(f"\n{args.clients} connections, medians of {args.rounds}:")
    for name, mine in runs.items():
        rps = statistics.median(r for r, _ in mine)
        cpu = statistics.median(c for _, c in mine)
        print(f"  {name:9} {rps:>9,.0f} req/s  {cpu:>6.1f} µs CPU/request")
    return 0


if __name__ == "__main__":
    sys.exit(main())

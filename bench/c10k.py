"""C10k: ten thousand live event streams on one ``tally serve`` process.

For each protocol (Server-Sent Events, then WebSocket), on a fresh SQLite
database and a fresh single-process server:

1. open N streams (default 10,000) from this process, all to one tenant, each
   from ``after=<the last sequence>``, a few hundred handshakes at a time;
2. read the server's RSS (``/proc/<pid>/status``) before and with the N open;
3. post a burst of transfers (``--transfers``, from ``--posters`` concurrent
   clients), each timed from the moment its request is sent;
4. wait until every stream has every event, and check each got each event once,
   in sequence order: the fan-out time of an (event, stream) pair is from the
   request that made the event being sent to the stream reading it.

The clients are raw asyncio sockets (a request line, then the bytes scanned for
``id: N`` or ``{"sequence":N``), so that the measuring side stays small next to
the server on a 2-core machine. Everything is on 127.0.0.1, and every wait is
bounded. It raises the open-file limit to its hard limit (the server inherits
it). Results: printed, and written as JSON to ``--out`` (bench/results/).

    make bench-c10k
    .venv/bin/python bench/c10k.py --streams 2000 --protocols sse
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import resource
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import uvloop

ROOT = Path(__file__).resolve().parents[1]
TALLY = Path(sys.executable).with_name("tally")
RESULTS = ROOT / "bench" / "results"
HANDSHAKES_AT_ONCE = 200
CONNECT_TIMEOUT_SECONDS = 300.0
DELIVERY_TIMEOUT_SECONDS = 120.0
SETTLE_SECONDS = 3.0
POST_SECONDS: list[float] = []
SSE_ID = re.compile(rb"\nid: (\d+)\n")
WS_SEQUENCE = re.compile(rb'\{"sequence":(\d+),')


class Stream(asyncio.Protocol):
    """One client connection: reads the response head, then scans what follows
    for event sequences (SSE: ``id: N`` lines, which never span two chunks;
    WebSocket: each unmasked text frame's ``{"sequence":N``), noting when each
    arrived. A protocol, not a StreamReader and a task: the measuring side must
    stay small next to the server it shares two cores with."""

    def __init__(self, protocol: str, request: bytes, expected: int) -> None:
        self.protocol = protocol
        self.request = request
        self.expected = expected
        self.sequences: list[int] = []
        self.times: list[float] = []
        self.buffer = b""
        loop = asyncio.get_running_loop()
        self.head: asyncio.Future[bytes] = loop.create_future()
        self.done: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        # The verdict counts a stream closed early as one without every event.
        if not self.head.done():
            self.head.set_exception(ConnectionError(f"closed: {exc}"))
        if not self.done.done():
            self.done.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.head.done():
            head, found, rest = self.buffer.partition(b"\r\n\r\n")
            if not found:
                return
            self.head.set_result(head)
            self.buffer = (b"\n" + rest) if self.protocol == "sse" else rest
        if self.protocol == "sse":
            self._scan_sse()
        else:
            self._scan_ws()
        if len(self.sequences) >= self.expected and not self.done.done():
            self.done.set_result(None)

    def _scan_sse(self) -> None:
        end = self.buffer.rfind(b"\n\n")
        if end < 0:
            return
        now = time.time()
        for found in SSE_ID.finditer(self.buffer, 0, end + 1):
            self.sequences.append(int(found.group(1)))
            self.times.append(now)
        self.buffer = self.buffer[end + 1 :]

    def _pong(self, payload: bytes) -> None:
        mask = secrets.token_bytes(4)  # a client's frames are masked (RFC 6455 §5.3)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        assert self.transport is not None
        assert len(payload) < 126
        self.transport.write(bytes([0x8A, 0x80 | len(payload)]) + mask + masked)

    def _scan_ws(self) -> None:
        buffer, at, now = self.buffer, 0, time.time()
        while len(buffer) - at >= 2:
            length, start = buffer[at + 1] & 0x7F, at + 2
            if length == 126:
                length, start = int.from_bytes(buffer[at + 2 : at + 4], "big"), at + 4
            elif length == 127:
                length, start = int.from_bytes(buffer[at + 2 : at + 10], "big"), at + 10
            if len(buffer) < start + length:
                break
            if buffer[at] & 0x0F == 0x9:  # a ping: the server closes a client that never pongs
                self._pong(buffer[start : start + length])
            found = WS_SEQUENCE.match(buffer, start)
            if found:
                self.sequences.append(int(found.group(1)))
                self.times.append(now)
            at = start + length
        self.buffer = buffer[at:]


# -- the server ------------------------------------------------------------------------------


def raise_open_files() -> int:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tally_env(database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLY_")}
    env.update(
        TALLY_DATABASE_URL=database_url,
        TALLY_LOG_LEVEL="warning",
        # One API key opens every stream: its rate limit is raised out of the way.
        TALLY_RATE_LIMIT_PER_SECOND="1000000",
        TALLY_RATE_LIMIT_BURST="1000000",
    )
    return env


def start_server(workdir: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    """A migrated SQLite database, a tenant, and ``tally serve`` (one process)."""
    database_url = f"sqlite:///{workdir / 'c10k.db'}"
    env = tally_env(database_url)
    subprocess.run([TALLY, "migrate"], env=env, check=True, capture_output=True, timeout=60)
    created = subprocess.run(
        [TALLY, "tenants", "create", "c10k", "--json"],
        env=env, check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    key = json.loads(created.stdout)["api_key"]
    port = free_port()
    log = (workdir / f"serve-{port}.log").open("wb")
    process = subprocess.Popen(
        [TALLY, "serve", "--no-migrate", "--port", str(port), "--workers", "1"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/readyz", timeout=2) as r:
                if r.status == 200:
                    return process, base, key
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit(f"tally serve did not start: {(workdir / f'serve-{port}.log').read_text()}")


def stop_server(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


# -- the clients -------------------------------------------------------------------------------


def _request(path: str, key: str, extra: str = "") -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n{extra}\r\n"
    ).encode()


def stream_request(protocol: str, key: str, after: int) -> bytes:
    if protocol == "sse":
        return _request(f"/v1/events/stream?after={after}", key)
    nonce = base64.b64encode(secrets.token_bytes(16)).decode()
    extra = (
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {nonce}\r\nSec-WebSocket-Version: 13\r\n"
    )
    return _request(f"/v1/events/ws?after={after}", key, extra)


async def connect_all(
    protocol: str, port: int, key: str, after: int, count: int, expected: int
) -> list[Stream]:
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(HANDSHAKES_AT_ONCE)
    status = b"HTTP/1.1 200" if protocol == "sse" else b"HTTP/1.1 101"

    async def one() -> Stream:
        async with gate:
            for attempt in range(6):
                request = stream_request(protocol, key, after)
                try:
                    _, stream = await loop.create_connection(
                        lambda r=request: Stream(protocol, r, expected),  # type: ignore[misc]
                        "127.0.0.1",
                        port,
                    )
                    head = await stream.head
                except OSError:
                    await asyncio.sleep(0.2 * (attempt + 1))
                    continue
                if not head.startswith(status):
                    raise RuntimeError(head.decode(errors="replace"))
                return stream
            raise RuntimeError("could not connect")

    async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS):
        return await asyncio.gather(*(one() for _ in range(count)))


# -- the burst ---------------------------------------------------------------------------------


async def post(port: int, key: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    data = json.dumps(body).encode()
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
        "Connection: close\r\n\r\n".encode()
        + data
    )
    response = await reader.read()
    writer.close()
    head, _, payload = response.partition(b"\r\n\r\n")
    if not head.startswith((b"HTTP/1.1 200", b"HTTP/1.1 201")):
        raise RuntimeError(response[:500].decode(errors="replace"))
    return json.loads(payload) if payload else {}


async def burst(port: int, key: str, transfers: int, posters: int) -> dict[str, float]:
    """Post the transfers; the time each request was sent, by transfer id."""
    sent: dict[str, float] = {}

    async def poster(n: int) -> None:
        for i in range(n, transfers, posters):
            transfer_id = f"t{i:06}"
            body = {"id": transfer_id, "debit_account_id": "src", "credit_account_id": "dst",
                    "amount": 1}  # fmt: skip
            sent[transfer_id] = time.time()
            await post(port, key, "/v1/transfers", body)
            POST_SECONDS.append(time.time() - sent[transfer_id])

    await asyncio.gather(*(poster(n) for n in range(posters)))
    return sent


async def event_ids(port: int, key: str, after: int) -> dict[int, tuple[str, float]]:
    """Sequence -> (transfer id, commit time) of the events after ``after``."""
    found: dict[int, tuple[str, float]] = {}
    cursor = after
    while True:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        path = f"/v1/events?after={cursor}&limit=1000"
        writer.write(_request(path, key, "Connection: close\r\n"))
        response = await reader.read()
        writer.close()
        page = json.loads(response.partition(b"\r\n\r\n")[2])
        for event in page["data"]:
            committed = datetime.fromisoformat(event["created_at"].replace("Z", "+00:00"))
            found[event["sequence"]] = (event["data"]["id"], committed.timestamp())
            cursor = event["sequence"]
        if not page["has_more"]:
            return found


# -- one protocol ------------------------------------------------------------------------------


async def measure(protocol: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    process, base, key = start_server(workdir / protocol)
    port = int(base.rpartition(":")[2])
    print(f"{protocol}: tally serve at {base}, pid {process.pid}", file=sys.stderr, flush=True)
    try:
        for account in ("src", "dst"):
            await post(port, key, "/v1/accounts", {"id": account, "currency": "USD",
                                                   "normal_balance": "debit"})  # fmt: skip
        after = 2
        await asyncio.sleep(1.0)
        rss_before = rss_bytes(process.pid)
        started = time.monotonic()
        streams = await connect_all(protocol, port, key, after, args.streams, args.transfers)
        connect_seconds = time.monotonic() - started
        await asyncio.sleep(SETTLE_SECONDS)
        rss_open = rss_bytes(process.pid)
        cpu = (cpu_seconds(process.pid), own_cpu_seconds(), time.monotonic())
        sent = await burst(port, key, args.transfers, args.posters)
        _, pending = await asyncio.wait([s.done for s in streams], timeout=DELIVERY_TIMEOUT_SECONDS)
        burst_cpu = {
            "wall": round(time.monotonic() - cpu[2], 2),
            "server": round(cpu_seconds(process.pid) - cpu[0], 2),
            "clients": round(own_cpu_seconds() - cpu[1], 2),
        }
        rss_after = rss_bytes(process.pid)
        ids = await event_ids(port, key, after)
        result = verdict(protocol, args, streams, ids, sent, after)
        result.update(
            rss_before_mib=round(rss_before / 2**20, 1),
            rss_open_mib=round(rss_open / 2**20, 1),
            rss_after_burst_mib=round(rss_after / 2**20, 1),
            rss_per_stream_kib=round((rss_open - rss_before) / args.streams / 1024, 2),
            connect_seconds=round(connect_seconds, 1),
            streams_unfinished=len(pending),
            burst_seconds=burst_cpu,
            post_ms=_percentiles(sorted(POST_SECONDS)),
        )
        POST_SECONDS.clear()
        for stream in streams:
            if stream.transport is not None:
                stream.transport.close()
        return result
    finally:
        stop_server(process)


def verdict(
    protocol: str,
    args: argparse.Namespace,
    streams: list[Stream],
    ids: dict[int, tuple[str, float]],
    sent: dict[str, float],
    after: int,
) -> dict[str, Any]:
    """Every stream got every event once, in order? And the fan-out times: from
    the event's commit (its created_at) to a stream reading it, and (an upper
    bound, as a client sees it) from the request that made it being sent."""
    expected = list(range(after + 1, after + args.transfers + 1))
    complete = sum(1 for s in streams if s.sequences == expected)
    pairs = [(seq, t) for s in streams for seq, t in zip(s.sequences, s.times, strict=True)]
    from_commit = sorted(t - ids[seq][1] for seq, t in pairs)
    from_request = sorted(t - sent[ids[seq][0]] for seq, t in pairs)

    return {
        "protocol": protocol,
        "streams": args.streams,
        "transfers": args.transfers,
        "streams_with_every_event_once_in_order": complete,
        "ok": complete == args.streams,
        "deliveries": len(pairs),
        "fan_out_ms_from_commit": _percentiles(from_commit),
        "fan_out_ms_from_request_sent": _percentiles(from_request),
    }


def _percentiles(times: list[float]) -> dict[str, float] | None:
    """p50, p99 and max of sorted times, in milliseconds."""
    if not times:
        return None
    names = (("p50", 0.5), ("p99", 0.99), ("max", 1.0))
    return {n: round(times[min(len(times) - 1, int(p * len(times)))] * 1000, 1) for n, p in names}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=10_000)
    parser.add_argument("--transfers", type=int, default=100)
    parser.add_argument("--posters", type=int, default=4)
    parser.add_argument("--protocols", default="sse,ws")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    limit = raise_open_files()
    if args.streams + 200 > limit:
        raise SystemExit(f"open-file limit {limit} is too low for {args.streams} streams")
    results = []
    with tempfile.TemporaryDirectory(prefix="tally-c10k-") as tmp:
        for protocol in args.protocols.split(","):
            (Path(tmp) / protocol).mkdir()
            result = uvloop.run(measure(protocol, args, Path(tmp)))
            print(json.dumps(result, indent=2), flush=True)
            results.append(result)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"c10k-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written: {path}")
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

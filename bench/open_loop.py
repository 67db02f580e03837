"""Group commit under an open loop: latency at a fixed arrival rate, with the
writer's wait and without it.

    .venv/bin/python bench/open_loop.py [--rates 500,1500,3000] [--seconds 8]
        [--rounds 2] [--connections 64]

wrk is a closed loop: each connection sends its next request when the last is
answered, which is the load group commit is built for (the writer waits for the
clients it just answered). Clients that do not wait for their answers, arriving
at a rate of their own, are the case where the wait can cost latency: every
cycle may wait out its window (docs/architecture.md). This drives single
transfers at a fixed rate (one every 1/rate seconds, sent on whichever of
``--connections`` keep-alive connections is free) and measures each one's
latency from the moment it was due, not from when it was sent, so a generator
that falls behind shows as latency rather than hiding it.

For each round, ``tally serve --workers 1`` on one throwaway ``tally_bench_*``
database runs with ``TALLY_WRITER_GATHER_MS=0`` and then with the default
(5), each through every rate. Printed per point: the rate reached, p50 and p99
latency, mean commands per writer transaction (from ``/metrics``), Tally's CPU
µs per transfer, and errors (answers other than 201 and 422). The generator
shares the two cores with the server and PostgreSQL: compare the settings at
the same rate, not the absolute figures. Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import statistics
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import uvloop
from batch_sizes import scrape
from harness import ledger, postgres, procs, server

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
ACCOUNTS = 1000
SETTINGS = (("writer_gather_ms", "0"), ("writer_gather_ms", "5"))
_LENGTH = re.compile(rb"content-length: *(\d+)", re.I)


def _request(api_key: str, rng: random.Random) -> bytes:
    debit = rng.randrange(ACCOUNTS)
    credit = (debit + rng.randrange(1, ACCOUNTS)) % ACCOUNTS
    body = b'{"debit_account_id":"%s","credit_account_id":"%s","amount":%d}' % (
        ledger.account_id(debit).encode(),
        ledger.account_id(credit).encode(),
        1,
    )
    return (
        b"POST /v1/transfers HTTP/1.1\r\nhost: bench\r\nauthorization: Bearer %s\r\n"
        b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
        % (api_key.encode(), len(body), body)
    )


async def _connection(
    host: str, port: int, api_key: str, due_times: asyncio.Queue[float | None],
    latencies: list[float], errors: list[int],
) -> None:  # fmt: skip
    rng = random.Random()
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while (due := await due_times.get()) is not None:
            writer.write(_request(api_key, rng))
            head = await reader.readuntil(b"\r\n\r\n")
            found = _LENGTH.search(head)
            await reader.readexactly(int(found.group(1)) if found else 0)
            latencies.append(time.perf_counter() - due)
            if head[9:12] not in (b"201", b"422"):
                errors[0] += 1
    finally:
        writer.close()


async def _drive(
    base_url: str, api_key: str, rate: int, seconds: float, connections: int
) -> tuple[list[float], int, float]:
    """(latencies in seconds, errors, seconds taken) of rate x seconds transfers."""
    address = urlsplit(base_url)
    due_times: asyncio.Queue[float | None] = asyncio.Queue()
    latencies: list[float] = []
    errors = [0]
    workers = [
        asyncio.create_task(
            _connection(
                address.hostname or "127.0.0.1", address.port or 80, api_key, due_times,
                latencies, errors,
            )
        )
        for _ in range(connections)
    ]  # fmt: skip
    count = int(rate * seconds)
    start = time.perf_counter()
    for i in range(count):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        due_times.put_nowait(due)
    for _ in workers:
        due_times.put_nowait(None)
    await asyncio.wait_for(asyncio.gather(*workers), seconds + 60)
    return latencies, errors[0], time.perf_counter() - start


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU of the server and its workers so far."""
    return sum(sum(p.cpu_times()[:2]) for p in procs.tree(pid)())


def _point(base_url: str, pid: int, api_key: str, rate: int, args: argparse.Namespace) -> str:
    before, cpu_before = scrape(base_url), _cpu_seconds(pid)
    latencies, errors, took = uvloop.run(
        _drive(base_url, api_key, rate, args.seconds, args.connections)
    )
    after, cpu = scrape(base_url), _cpu_seconds(pid) - cpu_before
    commands = after["sum"] - before.get("sum", 0.0)
    transactions = after["count"] - before.get("count", 0.0)
    cuts = statistics.quantiles(latencies, n=100)
    return (
        f"{len(latencies) / took:>7,.0f}/s  p50 {cuts[49] * 1e3:6.2f} ms  "
        f"p99 {cuts[98] * 1e3:6.2f} ms  {commands / max(transactions, 1):5.1f} commands/tx  "
        f"Tally {cpu / len(latencies) * 1e6:6.1f} µs/transfer  errors {errors}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="500,1500,3000", help="transfers/s (500,1500,3000)")
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds per point (8)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of both settings (2)")
    parser.add_argument("--connections", type=int, default=64, help="keep-alive connections (64)")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    if not all(1 <= r <= 20_000 for r in rates) or not 1 <= args.seconds <= 60:
        parser.error("--rates 1…20000 each, --seconds 1…60")
    work = Path(tempfile.mkdtemp(prefix="tally-open-loop-"))
    children = procs.Children()
    pg = postgres.Server(args.postgres_url)
    database = pg.create_database("tally_bench_open_loop")
    try:
        url = pg.url_for(database)
        server.migrate(url)
        _, api_key = server.create_tenant(url, "open loop")
        for round_n in range(1, args.rounds + 1):
            for name, value in SETTINGS:
                running = server.serve(children, url, 1, work / "tally.log", **{name: value})
                if round_n == 1 and value == SETTINGS[0][1]:
                    ledger.set_up(ledger.Ledger(running.base_url, api_key, ACCOUNTS))
                for rate in rates:
                    line = _point(running.base_url, running.pid, api_key, rate, args)
                    print(f"round {round_n}  {name}={value}  at {rate:>6,}/s: {line}", flush=True)
                server.stop(children, running)
    finally:
        children.stop_all()
        pg.drop_database(database)


if __name__ == "__main__":
    main()

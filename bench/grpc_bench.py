"""gRPC transfers on ``make bench``'s workload: ``python bench/grpc_bench.py [--smoke]
[--duration S] [--backends sqlite,postgresql] [--out DIR]`` (``make bench-grpc``).

Tally runs as an operator runs it (``tally serve --grpc-port``; on PostgreSQL with
``--workers`` processes sharing the gRPC port, on SQLite one), with the same book
as ``bench/run.py``: a bank and 1,000 funded accounts that may not be overdrawn,
money moved between random pairs. Two ways of sending it:

- **gRPC unary**: ``CreateTransfer`` from ``--clients`` concurrent callers, the
  mix of bench/lua/transfers.lua (85 % single-phase, half with a client id; 15 %
  pending with an id, each later posted, or voided one time in four, by the same
  caller).
- **gRPC streaming**: ``CreateTransfers`` from ``--stream-clients`` callers, each
  call 1,000 single-phase transfers (the REST batch's size; a stream cannot post
  or void, so no two-phase items), answered when the caller half-closes.

For each: transfers per second (answered and created), p50/p99 latency of a call,
and Tally's CPU µs per transfer (every process of the server, sampled as
bench/run.py samples it: harness.procs). The load generator is Python (grpc.aio on
uvloop, in this process): on this 2-core machine it takes CPU the server could
use, so throughput is a floor; CPU per transfer is the server's alone. Every
point ends with double entry checked over the API (Σ debits = Σ credits, posted
and pending; no limit broken).

``rows()`` returns the points as the protocol table's rows (bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc
import uvloop
from harness import ledger, postgres, procs, report, server

from tally.grpc.v1 import ledger_pb2 as pb
from tally.grpc.v1 import ledger_pb2_grpc as pb_grpc

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
ACCOUNTS_N = 1_000
AMOUNT_MAX = 10_000  # bench/lua/transfers.lua's BENCH_AMOUNT_MAX
PENDING_PCT, WITH_ID_PCT, VOID_PCT, RESOLVE_PCT = 15, 50, 25, 50  # as the Lua script
STREAM_ITEMS = 1_000
CALL_TIMEOUT_SECONDS = 30.0
READY_TIMEOUT_SECONDS = 30.0


@dataclass(slots=True)
class Point:
    protocol: str  # "gRPC unary" or "gRPC streaming"
    backend: str
    clients: int
    duration_s: float
    calls: int
    transfers: int
    refused: int  # business refusals (exceeds_credits): answered, not errors
    errors: int
    transfers_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    tally_cpu_us_per_transfer: float | None
    invariants_ok: bool


def _percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000, 3)


class Load:
    """What the callers counted."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.transfers = 0
        self.refused = 0
        self.errors = 0


def _pair(rng: random.Random) -> tuple[str, str]:
    a, b = rng.sample(range(ACCOUNTS_N), 2)
    return ledger.account_id(a), ledger.account_id(b)


async def _unary_caller(
    stub: pb_grpc.LedgerStub, md: Any, tag: str, deadline: float, load: Load
) -> None:
    """The Lua script's mix, one call at a time: pending transfers wait in this
    caller's queue until it posts or voids them."""
    rng = random.Random(tag)
    waiting: list[tuple[str, int]] = []
    n = 0
    while time.monotonic() < deadline:
        n += 1
        if waiting and rng.randrange(100) < RESOLVE_PCT:
            pending_id, _ = waiting.pop(0)
            call = (
                stub.VoidTransfer(pb.VoidTransferRequest(pending_id=pending_id), metadata=md)
                if rng.randrange(100) < VOID_PCT
                else stub.PostTransfer(pb.PostTransferRequest(pending_id=pending_id), metadata=md)
            )
            pending = None
        else:
            debit, credit = _pair(rng)
            amount = rng.randint(1, AMOUNT_MAX)
            pending = rng.randrange(100) < PENDING_PCT
            request = pb.CreateTransferRequest(
                debit_account_id=debit, credit_account_id=credit, amount=amount, pending=pending
            )
            if pending or rng.randrange(100) < WITH_ID_PCT:
                request.id = f"{tag}-{n}"
            call = stub.CreateTransfer(request, metadata=md)
        started = time.perf_counter()
        try:
            answer = await asyncio.wait_for(call, CALL_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError as error:
            if error.code() is grpc.StatusCode.FAILED_PRECONDITION:
                load.refused += 1
            else:
                load.errors += 1
            continue
        load.latencies.append(time.perf_counter() - started)
        load.transfers += 1
        if pending:
            waiting.append((answer.id, answer.amount))


async def _stream_caller(
    stub: pb_grpc.LedgerStub, md: Any, tag: str, deadline: float, load: Load
) -> None:
    rng = random.Random(tag)
    n = 0
    while time.monotonic() < deadline:
        items = []
        for _ in range(STREAM_ITEMS):
            n += 1
            debit, credit = _pair(rng)
            items.append(
                pb.CreateTransferRequest(
                    id=f"{tag}-{n}" if rng.randrange(100) < WITH_ID_PCT else None,
                    debit_account_id=debit,
                    credit_account_id=credit,
                    amount=rng.randint(1, AMOUNT_MAX),
                )
            )
        started = time.perf_counter()
        try:
            response = await stub.CreateTransfers(iter(items), metadata=md, timeout=60)
        except grpc.aio.AioRpcError:
            load.errors += 1
            continue
        load.latencies.append(time.perf_counter() - started)
        for result in response.results:
            if result.status == "failed":
                load.refused += 1
            else:
                load.transfers += 1


async def _drive(
    grpc_port: int, api_key: str, streaming: bool, clients: int, seconds: float, run: str
) -> tuple[Load, float]:
    load = Load()
    md = (("authorization", f"Bearer {api_key}"),)
    caller = _stream_caller if streaming else _unary_caller
    async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        stub = pb_grpc.LedgerStub(channel)
        await stub.GetAccount(pb.GetAccountRequest(id=ledger.BANK_ID), metadata=md, timeout=10)
        started = time.monotonic()
        deadline = started + seconds
        await asyncio.gather(
            *(caller(stub, md, f"{run}-{i}", deadline, load) for i in range(clients))
        )
        return load, time.monotonic() - started


def _double_entry_holds(book: ledger.Ledger) -> bool:
    with book.client() as client:
        accounts = ledger._walk(client, "/v1/accounts")
    sums = {k: sum(a[k] for a in accounts) for k in ("debits_posted", "credits_posted")}
    pending = {k: sum(a[k] for a in accounts) for k in ("debits_pending", "credits_pending")}
    overdrawn = [
        a["id"]
        for a in accounts
        if a["flags"]["debits_must_not_exceed_credits"]
        and a["debits_posted"] + a["debits_pending"] > a["credits_posted"]
    ]
    return (
        sums["debits_posted"] == sums["credits_posted"]
        and pending["debits_pending"] == pending["credits_pending"]
        and not overdrawn
    )


def run_point(
    running: server.Server,
    grpc_port: int,
    database_url: str,
    backend: str,
    streaming: bool,
    clients: int,
    seconds: float,
) -> Point:
    protocol = "gRPC streaming" if streaming else "gRPC unary"
    _, api_key = server.create_tenant(database_url, f"bench {protocol} {backend} c={clients}")
    book = ledger.Ledger(running.base_url, api_key, ACCOUNTS_N)
    ledger.set_up(book)
    sampler = procs.Sampler({"tally": (procs.tree(running.pid), False)})
    sampler.start()
    run = f"g{int(time.time() * 1000) % 10**9}"
    load, wall = uvloop.run(_drive(grpc_port, api_key, streaming, clients, seconds, run))
    resources = sampler.stop()
    time.sleep(ledger.SETTLE_PAUSE_SECONDS)
    ok = _double_entry_holds(book)
    return Point(
        protocol=protocol,
        backend=backend,
        clients=clients,
        duration_s=round(wall, 2),
        calls=len(load.latencies),
        transfers=load.transfers,
        refused=load.refused,
        errors=load.errors,
        transfers_per_s=round(load.transfers / wall, 1),
        p50_ms=_percentile(load.latencies, 0.50),
        p99_ms=_percentile(load.latencies, 0.99),
        tally_cpu_us_per_transfer=report.cpu_us_per(resources, "tally", load.transfers),
        invariants_ok=ok,
    )


def _serve(
    children: procs.Children, url: str, workers: int, log_path: Path
) -> tuple[server.Server, int]:
    """``tally serve --grpc-port`` (TALLY_GRPC_PORT), ready."""
    grpc_port = procs.free_port()
    running = server.serve(children, url, workers, log_path, grpc_port=str(grpc_port))
    return running, grpc_port


def rows(
    *,
    backends: tuple[str, ...] = ("postgresql", "sqlite"),
    seconds: float = 10.0,
    clients: int = 64,
    stream_clients: int = 4,
    workers: int = 2,
    postgres_url: str = DEFAULT_POSTGRES_URL,
    work: Path,
) -> list[dict[str, Any]]:
    """Every point, as the protocol table's rows: protocol, backend, clients,
    transfers/s, p99 ms, Tally CPU µs per transfer (and the rest of the point)."""
    points: list[Point] = []
    children = procs.Children()
    try:
        for backend in backends:
            pg = postgres.Server(postgres_url) if backend == "postgresql" else None
            if pg is not None:
                database = pg.create_database("tally_bench_grpc")
                url, n = pg.url_for(database), workers
            else:
                url, n = f"sqlite:///{work / 'tally-grpc-bench.db'}", 1
            try:
                server.migrate(url)
                running, grpc_port = _serve(children, url, n, work / f"tally-grpc-{backend}.log")
                try:
                    for streaming, c in ((False, clients), (True, stream_clients)):
                        point = run_point(running, grpc_port, url, backend, streaming, c, seconds)
                        log(json.dumps(asdict(point)))
                        points.append(point)
                finally:
                    server.stop(children, running)
            finally:
                if pg is not None:
                    pg.drop_database(database)
    finally:
        children.stop_all()
    return [asdict(p) for p in points]


def markdown(points: list[dict[str, Any]]) -> str:
    lines = [
        "| protocol | backend | clients | transfers/s | p50 ms | p99 ms "
        "| Tally CPU µs/transfer | refused | errors | invariants |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for p in points:
        lines.append(
            f"| {p['protocol']} | {p['backend']} | {p['clients']} | "
            f"{p['transfers_per_s']:,.0f} | {p['p50_ms']} | {p['p99_ms']} | "
            f"{p['tally_cpu_us_per_transfer']} | {p['refused']} | {p['errors']} | "
            f"{'ok' if p['invariants_ok'] else 'VIOLATED'} |"
        )
    return "\n".join(lines)


def log(message: str) -> None:
    print(f"[bench-grpc {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="3 s per point")
    parser.add_argument("--duration", type=float, help="seconds per point (10; smoke: 3)")
    parser.add_argument("--backends", default="postgresql,sqlite")
    parser.add_argument("--clients", type=int, default=64, help="unary callers (64)")
    parser.add_argument("--stream-clients", type=int, default=4, help="streaming callers (4)")
    parser.add_argument("--workers", type=int, default=2, help="tally processes on PostgreSQL")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results")
    args = parser.parse_args(argv)
    seconds = args.duration or (3.0 if args.smoke else 10.0)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tally-grpc-bench-") as tmp:
        points = rows(
            backends=tuple(b for b in args.backends.split(",") if b),
            seconds=seconds,
            clients=args.clients,
            stream_clients=args.stream_clients,
            workers=args.workers,
            postgres_url=args.postgres_url,
            work=Path(tmp),
        )
    table = markdown(points)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    (args.out / f"grpc-{stamp}.json").write_text(json.dumps(points, indent=2) + "\n")
    (args.out / f"grpc-{stamp}.md").write_text(table + "\n")
    print(table)
    return 0 if all(p["invariants_ok"] and not p["errors"] for p in points) else 1


if __name__ == "__main__":
    sys.exit(main())

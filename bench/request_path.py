"""The request path in process: CPU per transfer, with no HTTP server and no TCP.

Builds the real ASGI app (``tally.api.create_app``: authentication, rate limits,
the batching writer, audit rows, events, balance history, all on) on a fresh
database, starts it through the ASGI lifespan, funds ``--accounts`` accounts, and
then calls the app directly (scope, receive, send) from concurrent coroutines on
uvloop:

- **single**: ``POST /v1/transfers``, ``--clients`` coroutines, one transfer each;
- **batch**: ``POST /v1/transfers/batch``, ``--batch-clients`` coroutines, ``--batch``
  transfers per request (``"atomic": false``).

For each it reports transfers/s, **Tally CPU µs per transfer** (this process's
``time.process_time`` over the window / transfers: every thread, SQLite's writer
included) and **PostgreSQL CPU µs per transfer** (the postmaster, this database's
backends and the shared WAL writer, checkpointer and background writer, read with
psutil before and after the window). The driver's own share is measured too, on a
null ASGI app that answers 201 at once, and printed beside the table: the Tally
column includes it.

    .venv/bin/python bench/request_path.py                      # PostgreSQL, ~30 s
    .venv/bin/python bench/request_path.py --backend sqlite
    .venv/bin/python bench/request_path.py --clients 16 --batch 0 --seconds 5
    make bench-path BENCH_PATH_ARGS='--hot-pct 50'

Settings come from ``TALLY_*`` variables as for ``tally serve`` (so a lever behind a
setting can be compared by running this twice), except the database, which is
always a fresh ``tally_bench_*`` database (dropped at the end) or a temporary
SQLite file, and the per-key rate limit, raised out of the way (it still runs).
Ends with an invariant check: Σ debits = Σ credits, no limited account overdrawn,
and the money moved equals the sum of the transfers answered created. Exit 1 on
an error answer or a violated invariant.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import psutil
import uvloop
from harness import postgres, procs

from tally.api import create_app
from tally.cli.admin import new_tenant
from tally.config import Settings
from tally.storage.schema import migrate

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
BANK_ID = "bank"
FUNDING_AMOUNT = 1_000_000_000
AMOUNT_MAX = 10_000
CURRENCY = "USD"
SETUP_CONCURRENCY = 16
PAGE_LIMIT = 1000
LIFESPAN_TIMEOUT_SECONDS = 60.0
WARM_UP_SECONDS = 1.0
RATE_LIMIT_OUT_OF_THE_WAY = 1_000_000_000
NULL_APP_REQUESTS = 20_000

App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


# -- calling the app ---------------------------------------------------------------


class Client:
    """HTTP requests as ASGI calls: the scope a server would build, one body, and a
    ``receive`` that reports a disconnect only once the response has ended (a
    server reports one only when the client goes away, and the writer shields a
    write from a client that hangs up)."""

    def __init__(self, app: App, api_key: str, state: dict[str, Any]) -> None:
        self.app = app
        self.state = state
        self.headers = [
            (b"host", b"bench"),
            (b"authorization", f"Bearer {api_key}".encode()),
            (b"content-type", b"application/json"),
        ]

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        path, _, query = path.partition("?")
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": [*self.headers, (b"content-length", str(len(body)).encode())],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
            "state": dict(self.state),
        }
        ended = asyncio.Event()
        body_sent = False
        status = 0
        chunks: list[bytes] = []

        async def receive() -> dict[str, Any]:
            nonlocal body_sent
            if not body_sent:
                body_sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await ended.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    ended.set()

        try:
            await self.app(scope, receive, send)
        finally:
            ended.set()
        return status, b"".join(chunks)

    async def json(self, method: str, path: str, payload: Any = None, expect: int = 200) -> Any:
        body = b"" if payload is None else msgspec.json.encode(payload)
        status, data = await self.request(method, path, body)
        if status != expect:
            raise RuntimeError(f"{method} {path} answered {status}: {data[:500]!r}")
        return msgspec.json.decode(data)


@contextlib.asynccontextmanager
async def lifespan(app: App) -> AsyncIterator[dict[str, Any]]:
    """The ASGI lifespan, as a server runs it: startup, then shutdown at the end."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    scope: dict[str, Any] = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    task = asyncio.create_task(app(scope, inbox.get, outbox.put))
    await inbox.put({"type": "lifespan.startup"})
    started = await asyncio.wait_for(outbox.get(), LIFESPAN_TIMEOUT_SECONDS)
    if started["type"] != "lifespan.startup.complete":
        raise RuntimeError(f"the app did not start: {started}")
    try:
        yield scope["state"]
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        await asyncio.wait_for(outbox.get(), LIFESPAN_TIMEOUT_SECONDS)
        await asyncio.wait_for(task, LIFESPAN_TIMEOUT_SECONDS)


# -- the ledger --------------------------------------------------------------------


def account_id(n: int) -> str:
    return f"a{n:04d}"


async def set_up(client: Client, accounts_n: int) -> None:
    """A debit-normal bank account, ``accounts_n`` no-overdraft accounts, each funded."""
    await client.json(
        "POST",
        "/v1/accounts",
        {"id": BANK_ID, "currency": CURRENCY, "normal_balance": "debit"},
        201,
    )
    gate = asyncio.Semaphore(SETUP_CONCURRENCY)

    async def create(n: int) -> None:
        body = {
            "id": account_id(n),
            "currency": CURRENCY,
            "flags": {"debits_must_not_exceed_credits": True},
        }
        async with gate:
            await client.json("POST", "/v1/accounts", body, 201)

    await asyncio.gather(*(create(n) for n in range(accounts_n)))
    for start in range(0, accounts_n, 1000):
        items = [
            {
                "id": f"fund-{n}",
                "debit_account_id": BANK_ID,
                "credit_account_id": account_id(n),
                "amount": FUNDING_AMOUNT,
            }
            for n in range(start, min(start + 1000, accounts_n))
        ]
        answer = await client.json(
            "POST", "/v1/transfers/batch", {"transfers": items, "atomic": True}, 201
        )
        assert all(r["status"] == "created" for r in answer["results"]), answer


async def verify(client: Client, accounts_n: int, moved_amount: int) -> list[str]:
    """Double entry, no overdraft, and exactly the money the answers said moved."""
    accounts: list[dict[str, Any]] = []
    path = f"/v1/accounts?limit={PAGE_LIMIT}"
    while True:
        page = await client.json("GET", path)
        accounts += page["data"]
        if not page["has_more"]:
            break
        path = f"/v1/accounts?limit={PAGE_LIMIT}&cursor={page['next_cursor']}"
    violations = []
    if len(accounts) != accounts_n + 1:
        violations.append(f"{len(accounts)} accounts, expected {accounts_n + 1}")
    for kind in ("posted", "pending"):
        debits = sum(a[f"debits_{kind}"] for a in accounts)
        credits = sum(a[f"credits_{kind}"] for a in accounts)
        if debits != credits:
            violations.append(f"Σ debits_{kind} {debits} ≠ Σ credits_{kind} {credits}")
    moved = sum(a["debits_posted"] for a in accounts) - FUNDING_AMOUNT * accounts_n
    if moved != moved_amount:
        violations.append(f"{moved} moved, but the created transfers add up to {moved_amount}")
    for a in accounts:
        limited = a["flags"]["debits_must_not_exceed_credits"]
        if limited and a["debits_posted"] + a["debits_pending"] > a["credits_posted"]:
            violations.append(f"account {a['id']} overdrawn")
    return violations


# -- the load ----------------------------------------------------------------------


@dataclass(slots=True)
class Transfers:
    """Random transfers between the funded accounts; with ``hot_pct``, that share of
    them has account a0000 on one side (Blnk's hot-account test)."""

    accounts_n: int
    hot_pct: int
    seq: int = 0
    run: str = field(default_factory=lambda: secrets.token_hex(3))

    def one(self) -> tuple[dict[str, Any], int]:
        self.seq += 1
        debit = random.randrange(self.accounts_n)
        credit = random.randrange(self.accounts_n - 1)
        credit += credit >= debit
        if self.hot_pct and random.randrange(100) < self.hot_pct:
            other = random.randrange(1, self.accounts_n)
            debit, credit = (0, other) if random.randrange(2) else (other, 0)
        amount = random.randint(1, AMOUNT_MAX)
        item: dict[str, Any] = {
            "debit_account_id": account_id(debit),
            "credit_account_id": account_id(credit),
            "amount": amount,
        }
        if self.seq % 2:  # half with a client id, as the wrk script does
            item["id"] = f"rp{self.run}-{self.seq}"
        return item, amount


@dataclass(slots=True)
class Outcome:
    requests: int = 0
    transfers: int = 0
    moved_amount: int = 0
    exceeds_credits: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)

    def error(self, sample: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(sample[:300])


async def single(client: Client, transfers: Transfers, out: Outcome) -> None:
    item, amount = transfers.one()
    status, data = await client.request("POST", "/v1/transfers", msgspec.json.encode(item))
    out.requests += 1
    if status == 201:
        out.transfers += 1
        out.moved_amount += amount
    elif status == 422 and b"exceeds_credits" in data:
        out.exceeds_credits += 1
    else:
        out.error(f"{status} {data[:200]!r}")


def batch_sender(size: int) -> Callable[[Client, Transfers, Outcome], Awaitable[None]]:
    async def send(client: Client, transfers: Transfers, out: Outcome) -> None:
        items, amounts = zip(*(transfers.one() for _ in range(size)), strict=True)
        body = msgspec.json.encode({"transfers": items, "atomic": False})
        status, data = await client.request("POST", "/v1/transfers/batch", body)
        out.requests += 1
        if status not in (200, 201):
            out.error(f"{status} {data[:200]!r}")
            return
        for result, amount in zip(msgspec.json.decode(data)["results"], amounts, strict=True):
            if result["status"] == "created":
                out.transfers += 1
                out.moved_amount += amount
            elif result.get("code") == "exceeds_credits":
                out.exceeds_credits += 1
            else:
                out.error(f"item {result}")

    return send


Send = Callable[[Client, Transfers, Outcome], Awaitable[None]]


async def drive(
    client: Client,
    send: Send,
    transfers: Transfers,
    clients: int,
    *,
    seconds: float | None,
    requests_max: int | None,
) -> Outcome:
    """``clients`` coroutines sending until the time is up or ``requests_max`` were
    sent; every request sent is answered before this returns."""
    out = Outcome()
    deadline = time.perf_counter() + seconds if seconds is not None else None
    sent = 0

    async def worker() -> None:
        nonlocal sent
        while True:
            if deadline is not None and time.perf_counter() >= deadline:
                return
            if requests_max is not None and sent >= requests_max:
                return
            sent += 1
            await send(client, transfers, out)

    await asyncio.gather(*(worker() for _ in range(clients)))
    return out


# -- measuring ---------------------------------------------------------------------


@dataclass(slots=True)
class Window:
    """CPU seconds of this process and of PostgreSQL over one stretch of load."""

    postgres: procs.Finder | None
    wall_started: float = 0.0
    cpu_started: float = 0.0
    pg_started: dict[int, float] = field(default_factory=dict)
    machine_started: Any = None

    def start(self) -> None:
        self.pg_started = self._postgres_cpu()
        self.machine_started = psutil.cpu_times()
        self.wall_started = time.time()
        self.cpu_started = time.process_time()

    def stop(self) -> dict[str, float | None]:
        cpu = time.process_time() - self.cpu_started
        wall = time.time() - self.wall_started
        machine = psutil.cpu_times()
        pg_now = self._postgres_cpu()
        pg = None
        if self.postgres is not None:
            # A backend born inside the window counts from zero; one that exited inside
            # it is lost (the pool keeps its connections, so that is rare).
            pg = sum(now - self.pg_started.get(pid, 0.0) for pid, now in pg_now.items())
        busy = procs._busy_seconds(machine) - procs._busy_seconds(self.machine_started)
        return {"wall_s": wall, "tally_cpu_s": cpu, "postgres_cpu_s": pg, "machine_cpu_s": busy}

    def _postgres_cpu(self) -> dict[int, float]:
        if self.postgres is None:
            return {}
        found = {}
        for proc in self.postgres():
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                times = proc.cpu_times()
                found[proc.pid] = times.user + times.system
        return found


@dataclass(slots=True)
class Row:
    """One scenario over its rounds: totals, and each per-transfer figure as the
    median of the rounds' (with the Tally figure's range, the noise to read it by)."""

    scenario: str
    clients: int
    rounds: int
    requests: int
    transfers: int
    wall_s: float
    transfers_per_s: float
    tally_cpu_us_per_transfer: float | None
    tally_cpu_us_per_transfer_min: float | None
    tally_cpu_us_per_transfer_max: float | None
    postgres_cpu_us_per_transfer: float | None
    tally_cpu_percent: float
    machine_cpu_percent: float
    exceeds_credits: int
    errors: int
    error_samples: list[str]
    per_round: list[dict[str, float | None]]


def _per_round(out: Outcome, window: dict[str, float | None]) -> dict[str, float | None]:
    wall = window["wall_s"] or 1e-9
    tally = window["tally_cpu_s"] or 0.0
    pg = window["postgres_cpu_s"]
    n = out.transfers
    return {
        "transfers": n,
        "wall_s": round(wall, 3),
        "transfers_per_s": round(n / wall, 1),
        "tally_cpu_us_per_transfer": round(tally / n * 1e6, 1) if n else None,
        "postgres_cpu_us_per_transfer": round(pg / n * 1e6, 1) if n and pg is not None else None,
        "tally_cpu_percent": round(100 * tally / wall, 1),
        "machine_cpu_percent": round(100 * (window["machine_cpu_s"] or 0.0) / wall, 1),
    }


def _median(rounds: list[dict[str, float | None]], name: str) -> float | None:
    values = [v for r in rounds if (v := r[name]) is not None]
    return round(statistics.median(values), 1) if values else None


def row(
    scenario: str, clients: int, measured: list[tuple[Outcome, dict[str, float | None]]]
) -> Row:
    rounds = [_per_round(out, window) for out, window in measured]
    tally = [v for r in rounds if (v := r["tally_cpu_us_per_transfer"]) is not None]
    errors = [sample for out, _ in measured for sample in out.error_samples]
    return Row(
        scenario=scenario,
        clients=clients,
        rounds=len(rounds),
        requests=sum(out.requests for out, _ in measured),
        transfers=sum(out.transfers for out, _ in measured),
        wall_s=round(sum(r["wall_s"] or 0.0 for r in rounds), 2),
        transfers_per_s=_median(rounds, "transfers_per_s") or 0.0,
        tally_cpu_us_per_transfer=_median(rounds, "tally_cpu_us_per_transfer"),
        tally_cpu_us_per_transfer_min=min(tally, default=None),
        tally_cpu_us_per_transfer_max=max(tally, default=None),
        postgres_cpu_us_per_transfer=_median(rounds, "postgres_cpu_us_per_transfer"),
        tally_cpu_percent=_median(rounds, "tally_cpu_percent") or 0.0,
        machine_cpu_percent=_median(rounds, "machine_cpu_percent") or 0.0,
        exceeds_credits=sum(out.exceeds_credits for out, _ in measured),
        errors=sum(out.errors for out, _ in measured),
        error_samples=errors[:5],
        per_round=rounds,
    )


async def measure(
    client: Client,
    send: Send,
    transfers: Transfers,
    clients: int,
    postgres_cpu: procs.Finder | None,
    args: argparse.Namespace,
    per_request: int,
) -> tuple[list[tuple[Outcome, dict[str, float | None]]], Outcome]:
    """A warm-up (caches, prepared statements, the pool), then ``--rounds`` windows."""
    warm = await drive(client, send, transfers, clients, seconds=WARM_UP_SECONDS, requests_max=None)
    requests_max = -(-args.count // per_request) if args.count else None
    measured = []
    for _ in range(args.rounds):
        window = Window(postgres_cpu)
        window.start()
        out = await drive(
            client,
            send,
            transfers,
            clients,
            seconds=None if requests_max else args.seconds,
            requests_max=requests_max,
        )
        measured.append((out, window.stop()))
    return measured, warm


async def null_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """What the driver costs on its own: read the body, answer 201."""
    await receive()
    await send({"type": "http.response.start", "status": 201, "headers": []})
    await send({"type": "http.response.body", "body": b'{"id":"x"}'})


async def driver_overhead_us(clients: int, accounts_n: int) -> float:
    client = Client(null_app, "none", {})
    transfers = Transfers(accounts_n, 0)
    started = time.process_time()
    out = await drive(
        client, single, transfers, clients, seconds=None, requests_max=NULL_APP_REQUESTS
    )
    return (time.process_time() - started) / out.requests * 1e6


# -- the run -----------------------------------------------------------------------


def settings_for(database_url: str) -> Settings:
    # Settings() reads the TALLY_* environment like `tally serve`; these override it.
    return Settings(
        database_url=database_url,
        rate_limit_per_second=RATE_LIMIT_OUT_OF_THE_WAY,
        rate_limit_burst=RATE_LIMIT_OUT_OF_THE_WAY,
    )


async def run_app(settings: Settings, args: argparse.Namespace, pg: procs.Finder | None) -> Any:
    _, api_key = await new_tenant(settings, "bench request path")
    app = create_app(settings)
    results: dict[str, Any] = {"rows": [], "violations": []}
    async with lifespan(app) as state:
        client = Client(app, api_key, state)
        await set_up(client, args.accounts)
        transfers = Transfers(args.accounts, args.hot_pct)
        moved = 0
        plans: list[tuple[str, Send, int, int]] = []
        if args.clients:
            plans.append(("single", single, args.clients, 1))
        if args.batch:
            plans.append(
                (f"batch {args.batch:,}", batch_sender(args.batch), args.batch_clients, args.batch)
            )
        for name, send, clients, per_request in plans:
            log(f"{name}: {clients} clients, warm-up {WARM_UP_SECONDS:g} s, then measuring")
            measured, warm = await measure(client, send, transfers, clients, pg, args, per_request)
            moved += warm.moved_amount + sum(out.moved_amount for out, _ in measured)
            results["rows"].append(row(name, clients, measured))
            if warm.errors:
                results["violations"].append(f"{name} warm-up: {warm.errors} errors")
        results["violations"] += await verify(client, args.accounts, moved)
    return results


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.backend == "sqlite":
        work = Path(tempfile.mkdtemp(prefix="tally-request-path-"))
        try:
            settings = settings_for(f"sqlite:///{work / 'tally.db'}")
            migrate(settings)
            return uvloop.run(run_app(settings, args, None))
        finally:
            shutil.rmtree(work, ignore_errors=True)
    server = postgres.Server(args.postgres_url)
    database = server.create_database("tally_bench_path")
    try:
        settings = settings_for(server.url_for(database))
        migrate(settings)
        finder = procs.postgres(server.postmaster_pid(), database)
        return uvloop.run(run_app(settings, args, finder))
    finally:
        server.drop_database(database)


def table(results: dict[str, Any]) -> str:
    header = ["scenario", "clients", "transfers", "s", "transfers/s",
              "Tally CPU µs/transfer (min-max)", "PostgreSQL CPU µs/transfer", "Tally CPU %",
              "machine CPU %", "errors"]  # fmt: skip
    rows = [
        [
            r.scenario,
            str(r.clients),
            f"{r.transfers:,}",
            f"{r.wall_s:.1f}",
            f"{r.transfers_per_s:,.0f}",
            _figure_range(
                r.tally_cpu_us_per_transfer,
                r.tally_cpu_us_per_transfer_min,
                r.tally_cpu_us_per_transfer_max,
            ),
            "—"
            if r.postgres_cpu_us_per_transfer is None
            else f"{r.postgres_cpu_us_per_transfer:,.1f}",
            f"{r.tally_cpu_percent:.0f}",
            f"{r.machine_cpu_percent:.0f}",
            str(r.errors),
        ]
        for r in results["rows"]
    ]
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]
    lines = [_line(header, widths), *(_line(r, widths) for r in rows)]
    meta = results["meta"]
    lines.insert(
        0,
        f"request path in process ({meta['backend']}, {meta['git']}, {meta['cpus']} CPUs, "
        f"load {meta['load_1m']:.1f}, hot {meta['hot_pct']} %; medians of {meta['rounds']} "
        "rounds):",
    )
    lines.append(
        f"the driver alone (a null app): {meta['driver_us_per_request']:.1f} µs per request, "
        "included in Tally CPU above"
    )
    violations = results["violations"]
    lines.append(
        "invariants: " + ("ok" if not violations else "VIOLATED: " + "; ".join(violations))
    )
    return "\n".join(lines)


def _figure_range(median: float | None, low: float | None, high: float | None) -> str:
    if median is None or low is None or high is None:
        return "—"
    return f"{median:,.1f} ({low:,.0f}-{high:,.0f})"


def _line(cells: list[str], widths: list[int]) -> str:
    """The first column left-aligned, the figures right-aligned."""
    return "  ".join(
        c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
    )


def git_head() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(Path(__file__).parent), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "commit unknown"
    return f"commit {head}"


def log(message: str) -> None:
    print(f"[request-path {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument(
        "--clients", type=int, default=64, help="single-transfer coroutines (64; 0: skip)"
    )
    parser.add_argument(
        "--batch", type=int, default=1000, help="transfers per batch request (1000; 0: skip)"
    )
    parser.add_argument("--batch-clients", type=int, default=4, help="batch coroutines (4)")
    parser.add_argument("--rounds", type=int, default=3, help="measured windows per scenario (3)")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds per window (4)")
    parser.add_argument("--count", type=int, help="each window: this many transfers instead")
    parser.add_argument("--accounts", type=int, default=1000, help="funded accounts (1000)")
    parser.add_argument("--hot-pct", type=int, default=0, help="%% of transfers touching a0000 (0)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("TALLY_BENCH_POSTGRES_URL")
        or os.environ.get("TALLY_TEST_POSTGRES_URL")
        or DEFAULT_POSTGRES_URL,
        help="an administrative URL; the throwaway database is made beside it",
    )
    args = parser.parse_args(argv)
    if not (
        0 <= args.clients <= 1000 and 0 <= args.batch <= 1000 and 1 <= args.batch_clients <= 64
    ):
        parser.error("--clients 0…1000, --batch 0…1000, --batch-clients 1…64")
    if not 2 <= args.accounts <= 10_000 or not 0 <= args.hot_pct <= 100:
        parser.error("--accounts 2…10000, --hot-pct 0…100")
    if args.count is not None and args.count < 1:
        parser.error("--count must be ≥ 1")
    if not 1 <= args.rounds <= 20 or not 0 < args.seconds <= 600:
        parser.error("--rounds 1…20, --seconds up to 600")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    results = run(args)
    results["meta"] = {
        "backend": args.backend,
        "git": git_head(),
        "cpus": os.cpu_count(),
        "load_1m": os.getloadavg()[0],
        "hot_pct": args.hot_pct,
        "rounds": args.rounds,
        "driver_us_per_request": uvloop.run(driver_overhead_us(args.clients or 1, args.accounts)),
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    print(table(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        serialisable = {**results, "rows": [asdict(r) for r in results["rows"]]}
        args.json.write_text(json.dumps(serialisable, indent=2) + "\n")
    failed = results["violations"] or any(r.errors for r in results["rows"])
    for r in results["rows"]:
        for sample in r.error_samples:
            log(f"{r.scenario}: error: {sample}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

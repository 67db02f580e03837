"""Tally over HTTP/1.1, HTTP/2 and HTTP/3, on one transfer workload.

    .venv/bin/python bench/protocols.py [--seconds 8] [--clients 64] [--out DIR]

One ``tally serve`` process per server (SQLite in a temporary directory, TLS from
``tally dev-cert``, rate limits out of the way): granian with ``--http2`` and
hypercorn with ``--http2 --quic-port``. Every request is ``POST /v1/transfers``
of 1 minor unit from a bank account to one other account, answered 201. The load
is ``--clients`` requests in flight at once on every row:

- h1: h2load ``--h1``, one request per connection at a time (``--clients``
  connections); HTTP/1.1 over TLS 1.3.
- h2: h2load, ``--clients`` streams over ``H2_CONNECTIONS`` connections (ALPN h2).
- h3: the aioquic client of tests/h3_client.py, the same streams over the same
  number of QUIC connections, in this process.

Reported per row: transfers/s, p99 latency, **Tally CPU µs per transfer** (every
process of the server, sampled with psutil) and the load generator's CPU (a
generator near 100 % of a core limits the row, not Tally). After each row the
receiving account's credits must equal the 201s counted, give or take the
requests still in flight when the load stopped: a fast wrong answer fails.

``ROW_SOURCES`` is the hook for more rows: a function from a ``Bench`` to
``Row``s. ``grpc_rows`` adds gRPC unary and client-streaming from
bench/grpc_bench.py, on that script's own workload (make bench's mix over 1,000
accounts), so read those rows beside the others, not against them to the unit.
``bench/run.py`` runs this table at the end of ``make bench``; ``make
bench-protocols`` runs it alone. Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
from harness import procs, server

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
sys.path.insert(0, str(REPO_DIR))  # tests/h3_client.py, shared with the tests

from tests.h3_client import h3_connect  # noqa: E402

TALLY = Path(sys.executable).parent / "tally"
H2_CONNECTIONS = 4
H2LOAD_GRACE_SECONDS = 30.0
BANK, PAYEE = "bank", "payee"
TRANSFER = {"debit_account_id": BANK, "credit_account_id": PAYEE, "amount": 1}


@dataclass(slots=True)
class Row:
    """One line of the table: a protocol on a server, under the shared workload."""

    protocol: str  # h1, h2, h3 (later: grpc unary, grpc stream)
    server: str
    transport: str  # what carries it: "TLS 1.3 / TCP", "QUIC / UDP"
    concurrency: str
    transfers: int
    seconds: float
    p99_ms: float
    tally_cpu_us_per_transfer: float
    load_generator_cpu_percent: float | None  # None: not measured apart
    errors: int = 0
    error_statuses: dict[str, int] = field(default_factory=dict)  # "0": no answer
    note: str = ""

    @property
    def transfers_per_s(self) -> float:
        return self.transfers / self.seconds if self.seconds else 0.0


@dataclass(slots=True)
class Bench:
    """What every row source gets: the run's sizes, a place for files, the TLS
    pair, and the children to start servers and load generators with."""

    seconds: int
    clients: int
    work: Path
    children: procs.Children
    ca: Path
    cert: Path
    key: Path
    failures: list[str] = field(default_factory=list)

    def tls_settings(self) -> dict[str, str]:
        return {"tls_cert": str(self.cert), "tls_key": str(self.key)}

    def verify(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))


def log(message: str) -> None:
    print(f"[protocols {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- the ledger the workload moves money in --------------------------------------------


def set_up_ledger(bench: Bench, base_url: str, database_url: str, name: str) -> str:
    """A tenant with a bank (no limit) and a payee; its API key."""
    _, api_key = server.create_tenant(database_url, name)
    headers = {"Authorization": f"Bearer {api_key}"}
    with httpx.Client(base_url=base_url, verify=bench.verify(), headers=headers) as client:
        for body in (
            {"id": BANK, "currency": "USD", "normal_balance": "debit"},
            {"id": PAYEE, "currency": "USD"},
        ):
            answer = client.post("/v1/accounts", json=body)
            if answer.status_code != 201:
                raise RuntimeError(f"creating {body['id']}: {answer.status_code} {answer.text}")
    return api_key


def credited(bench: Bench, base_url: str, api_key: str) -> int:
    headers = {"Authorization": f"Bearer {api_key}"}
    with httpx.Client(base_url=base_url, verify=bench.verify(), headers=headers) as client:
        answer = client.get(f"/v1/accounts/{PAYEE}")
        answer.raise_for_status()
        return int(answer.json()["credits_posted"])


def check_ledger(bench: Bench, row: Row, moved: int, in_flight_max: int) -> None:
    """What the ledger moved must be what was answered 201, plus at most what was
    still in flight when the load generator stopped."""
    if not row.transfers <= moved <= row.transfers + in_flight_max:
        bench.failures.append(
            f"{row.protocol} on {row.server}: the ledger moved {moved} transfers, "
            f"the load generator counted {row.transfers} (+ up to {in_flight_max} in flight)"
        )


# -- h1 and h2: h2load ------------------------------------------------------------------


def p99_ms(latencies_us: list[float]) -> float:
    if not latencies_us:
        return 0.0
    ordered = sorted(latencies_us)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] / 1000


def h2load_row(
    bench: Bench, running: server.Server, api_key: str, protocol: str, name: str
) -> tuple[Row, int]:
    """h2load for ``bench.seconds``; the row and how many requests may have been in flight."""
    h2load = shutil.which("h2load")
    if h2load is None:
        raise RuntimeError("h2load is not installed (apt-get install nghttp2-client)")
    body = bench.work / "transfer.json"
    body.write_text(json.dumps(TRANSFER))
    log_file = bench.work / f"h2load-{name}-{protocol}.tsv"
    if protocol == "h1":
        shape, concurrency = ["--h1", "-c", str(bench.clients), "-m", "1"], "connections"
        described = f"{bench.clients} connections"
    else:
        per = max(1, bench.clients // H2_CONNECTIONS)
        shape = ["-c", str(H2_CONNECTIONS), "-m", str(per)]
        concurrency = "streams"
        described = f"{H2_CONNECTIONS} connections x {per} streams"
    argv = [
        h2load, "-t", "1", *shape, "-D", str(bench.seconds),
        "-d", str(body),
        "-H", "content-type: application/json", "-H", f"authorization: Bearer {api_key}",
        "--log-file", str(log_file), f"{running.base_url}/v1/transfers",
    ]  # fmt: skip
    out_path = bench.work / f"h2load-{name}-{protocol}.out"
    with out_path.open("wb") as out:
        started = time.time()
        proc = bench.children.start(argv, log=out)
        sampler = procs.Sampler(
            {
                "tally": (procs.tree(running.pid), False),
                "load": (procs.single(proc.pid), False),
            }
        )
        sampler.start(since=started)
        exited = procs.wait_exited(proc, bench.seconds + H2LOAD_GRACE_SECONDS)
        usage = sampler.stop()
        bench.children.stop(proc)
    text = out_path.read_text(errors="replace")
    if not exited or proc.returncode != 0:
        raise RuntimeError(f"h2load {protocol} failed ({proc.returncode}):\n{text[-2000:]}")
    latencies, created, errors = [], 0, 0
    statuses: dict[str, int] = {}
    for line in log_file.read_text().splitlines():
        _, status, duration_us = line.split("\t")[:3]
        if status == "201":
            created += 1
            latencies.append(float(duration_us))
        else:
            errors += 1
            statuses[status] = statuses.get(status, 0) + 1
    wanted = "h2" if protocol == "h2" else "http/1.1"
    if f"Application protocol: {wanted}" not in text:
        raise RuntimeError(f"h2load did not negotiate {wanted}:\n{text[-2000:]}")
    seconds = float(bench.seconds)
    row = Row(
        protocol=protocol,
        server=name,
        transport="TLS 1.3 / TCP",
        concurrency=described,
        transfers=created,
        seconds=seconds,
        p99_ms=round(p99_ms(latencies), 2),
        tally_cpu_us_per_transfer=round(usage["tally"]["cpu_seconds"] / max(created, 1) * 1e6, 1),
        load_generator_cpu_percent=usage["load"]["cpu_percent"],
        errors=errors,
        error_statuses=statuses,
        note=concurrency,
    )
    return row, bench.clients


# -- h3: the aioquic client --------------------------------------------------------------


async def _h3_load(
    bench: Bench, port: int, api_key: str
) -> tuple[int, int, list[float], float, int]:
    """``bench.clients`` streams over H2_CONNECTIONS QUIC connections, for
    ``bench.seconds``: (201s, errors, latencies µs, seconds, in flight)."""
    headers = {"authorization": f"Bearer {api_key}"}
    per = max(1, bench.clients // H2_CONNECTIONS)
    loop = asyncio.get_running_loop()
    stop_at = loop.time() + bench.seconds
    latencies: list[float] = []
    counts = {"created": 0, "errors": 0, "in_flight": 0}

    async def stream(client: Any) -> None:
        while loop.time() < stop_at:
            started = loop.time()
            counts["in_flight"] += 1
            try:
                answer = await client.json_request("POST", "/v1/transfers", TRANSFER, headers)
            except (ConnectionError, TimeoutError):
                counts["errors"] += 1
                continue
            finally:
                counts["in_flight"] -= 1
            if answer.status == 201:
                counts["created"] += 1
                latencies.append((loop.time() - started) * 1e6)
            else:
                counts["errors"] += 1

    async def connection() -> None:
        async with h3_connect("127.0.0.1", port, ca_path=bench.ca) as client:
            await asyncio.gather(*(stream(client) for _ in range(per)))

    await asyncio.gather(*(connection() for _ in range(H2_CONNECTIONS)))
    return counts["created"], counts["errors"], latencies, float(bench.seconds), bench.clients


def h3_row(bench: Bench, running: server.Server, port: int, api_key: str) -> tuple[Row, int]:
    me = psutil.Process()
    sampler = procs.Sampler({"tally": (procs.tree(running.pid), False)})
    cpu_before = sum(me.cpu_times()[:2])
    started = time.time()
    sampler.start(since=started)
    created, errors, latencies, seconds, in_flight = asyncio.run(_h3_load(bench, port, api_key))
    usage = sampler.stop()
    wall = time.time() - started
    load_cpu_percent = round(100 * (sum(me.cpu_times()[:2]) - cpu_before) / wall, 1)
    per = max(1, bench.clients // H2_CONNECTIONS)
    row = Row(
        protocol="h3",
        server="hypercorn",
        transport="QUIC / UDP",
        concurrency=f"{H2_CONNECTIONS} connections x {per} streams",
        transfers=created,
        seconds=seconds,
        p99_ms=round(p99_ms(latencies), 2),
        tally_cpu_us_per_transfer=round(usage["tally"]["cpu_seconds"] / max(created, 1) * 1e6, 1),
        load_generator_cpu_percent=load_cpu_percent,
        errors=errors,
        note="streams; aioquic client (Python) in the bench process",
    )
    return row, in_flight


# -- the rows ----------------------------------------------------------------------------


def _serve(bench: Bench, name: str, **settings: str) -> tuple[server.Server, str, str]:
    url = f"sqlite:///{bench.work / f'{name}.db'}"
    server.migrate(url)
    running = server.serve(
        bench.children,
        url,
        1,
        bench.work / f"tally-{name}.log",
        name,
        tls_ca=bench.ca,
        http2="true",
        **bench.tls_settings(),
        **settings,
    )
    return running, url, set_up_ledger(bench, running.base_url, url, f"protocols {name}")


def _measured(
    bench: Bench, running: server.Server, api_key: str, measure: Callable[[], tuple[Row, int]]
) -> Row:
    before = credited(bench, running.base_url, api_key)
    row, in_flight = measure()
    time.sleep(0.5)  # what was in flight commits
    check_ledger(bench, row, credited(bench, running.base_url, api_key) - before, in_flight)
    log(
        f"{row.protocol} on {row.server}: {row.transfers_per_s:,.0f} transfers/s, "
        f"p99 {row.p99_ms} ms, Tally {row.tally_cpu_us_per_transfer} µs CPU/transfer, "
        f"load generator {row.load_generator_cpu_percent} % CPU, errors {row.errors}"
    )
    return row


def http_rows(bench: Bench) -> list[Row]:
    """h1 and h2 on granian; h2 and h3 on hypercorn."""
    rows = []
    running, _, key = _serve(bench, "granian")
    try:
        for protocol in ("h1", "h2"):
            rows.append(
                _measured(
                    bench,
                    running,
                    key,
                    lambda p=protocol: h2load_row(bench, running, key, p, "granian"),
                )
            )
    finally:
        server.stop(bench.children, running)
    quic_port = procs.free_port()  # a TCP port free now; hypercorn binds UDP on it
    running, _, key = _serve(bench, "hypercorn", quic_port=str(quic_port))
    try:
        # No h1 row here: h2load (1.52) counts none of hypercorn's HTTP/1.1
        # answers as succeeded (status 0 in its log), though curl and httpx read
        # them; HTTP/1.1 is granian's row.
        rows.append(
            _measured(
                bench, running, key, lambda: h2load_row(bench, running, key, "h2", "hypercorn")
            )
        )
        rows.append(_measured(bench, running, key, lambda: h3_row(bench, running, quic_port, key)))
    finally:
        server.stop(bench.children, running)
    return rows


def grpc_rows(bench: Bench) -> list[Row]:
    """gRPC unary and client-streaming, from bench/grpc_bench.py (``make bench-grpc``)
    on SQLite, one process: its own workload, make bench's mix over 1,000 accounts
    (unary: --clients callers; streaming: 4 callers of 1,000 transfers per call,
    whose p99 is a whole call's). Its load generator runs in this process and is
    not measured apart. Plain HTTP/2 (h2c) under gRPC, on a port of its own."""
    import grpc_bench

    rows = []
    for p in grpc_bench.rows(
        backends=("sqlite",), seconds=bench.seconds, clients=bench.clients, work=bench.work
    ):
        if not p["invariants_ok"]:
            bench.failures.append(f"{p['protocol']}: double entry violated")
        streaming = "stream" in p["protocol"]
        rows.append(
            Row(
                protocol=p["protocol"].replace("gRPC", "grpc"),
                server="grpcio",
                transport="h2c / TCP",
                concurrency=f"{p['clients']} calls" + (" x 1,000 transfers" if streaming else ""),
                transfers=p["transfers"],
                seconds=p["duration_s"],
                p99_ms=p["p99_ms"] or 0.0,
                tally_cpu_us_per_transfer=p["tally_cpu_us_per_transfer"] or 0.0,
                load_generator_cpu_percent=None,
                errors=p["errors"],
                note="bench/grpc_bench.py's workload",
            )
        )
    return rows


# Each source gets the Bench and returns its rows, appended to the table in order.
ROW_SOURCES: list[Callable[[Bench], list[Row]]] = [http_rows, grpc_rows]


def table(rows: list[Row]) -> str:
    """The rows as a Markdown table."""
    lines = [
        "| protocol | server | transport | in flight | transfers/s | p99 ms "
        "| Tally CPU µs/transfer | load generator CPU % | errors |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        load = (
            "—" if r.load_generator_cpu_percent is None else f"{r.load_generator_cpu_percent:.0f}"
        )
        lines.append(
            f"| {r.protocol} | {r.server} | {r.transport} | {r.concurrency} "
            f"| {r.transfers_per_s:,.0f} | {r.p99_ms:.2f} | {r.tally_cpu_us_per_transfer:,.1f} "
            f"| {load} | {r.errors} |"
        )
    return "\n".join(lines) + "\n"


def make_tls(work: Path) -> tuple[Path, Path, Path]:
    directory = work / "tls"
    subprocess.run(
        [str(TALLY), "dev-cert", "--dir", str(directory)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return directory / "ca.pem", directory / "cert.pem", directory / "key.pem"


def run(seconds: int, clients: int, children: procs.Children, work: Path) -> dict[str, Any]:
    """Every source's rows; what ``bench/run.py`` stores under ``protocols``."""
    ca, cert, key = make_tls(work)
    bench = Bench(seconds, clients, work, children, ca, cert, key)
    rows: list[Row] = []
    for source in ROW_SOURCES:
        try:
            rows += source(bench)
        except Exception as exc:
            log(f"{source.__name__} failed: {exc}")
            bench.failures.append(f"{source.__name__}: {type(exc).__name__}: {exc}"[:2000])
    return {
        "seconds": seconds,
        "clients": clients,
        "rows": [{**asdict(r), "transfers_per_s": round(r.transfers_per_s, 1)} for r in rows],
        "table": table(rows),
        "failures": bench.failures,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=8, help="seconds per row (8)")
    parser.add_argument("--clients", type=int, default=64, help="requests in flight (64)")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results", help="results dir")
    args = parser.parse_args(argv)
    if not (1 <= args.seconds <= 120 and H2_CONNECTIONS <= args.clients <= 1000):
        parser.error(f"--seconds 1…120, --clients {H2_CONNECTIONS}…1000")
    children = procs.Children()
    work = Path(tempfile.mkdtemp(prefix="tally-protocols-"))
    try:
        results = run(args.seconds, args.clients, children, work)
    finally:
        children.stop_all()
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = args.out / f"protocols-{stamp}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(
        f"\nPOST /v1/transfers (gRPC: CreateTransfer, CreateTransfers), {args.clients} in "
        f"flight, {args.seconds} s per row, "
        f"one tally process on SQLite, {os.cpu_count()} CPUs:\n"
    )
    print(results["table"])
    log(f"wrote {path}")
    if results["failures"]:
        for failure in results["failures"]:
            log(f"FAILED: {failure}")
        log(f"logs kept in {work}")
        return 1
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

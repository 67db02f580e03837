"""Tally's benchmark: ``python bench/run.py [--smoke] [--workers N] [--duration S] [--out DIR]``.

In one run on this machine: pgbench TPC-B on the local PostgreSQL as the
yardstick; Tally on the same PostgreSQL (``--workers`` processes) driven by wrk
through ``POST /v1/transfers`` and ``POST /v1/transfers/batch``; Tally on SQLite
(one worker). Every point ends with the ledger's invariants checked. Writes
``<out>/<timestamp>.json``, ``.md`` (also printed) and ``.png``. See
``bench/README.md`` for what is measured and how to read it.

Exit status: 0 when every point ran and every invariant held (and, with
``--smoke``, its loose bounds held too); 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import core_book
import protocols
import psutil
from harness import ledger, load, postgres, procs, report, server

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
CLIENTS = (1, 16, 64, 256)
PGBENCH_CLIENTS = (1, 16, 64)
PGBENCH_CLIENTS_MAX = 64  # PostgreSQL's max_connections is 100 here, shared with others
BATCH_SIZES = (100, 1000)
# The hot-account point (Blnk's test): this share of transfers touches account a0000.
HOT_PCT = 50
HOT_CLIENTS = (64,)
# Tally's per-process write queue (TALLY_WRITER_QUEUE_COMMANDS_MAX, default 20,000).
# Past it, writes are answered 503 by design; a batch point whose transfers in
# flight (clients x batch size) could fill half the server's queues is skipped.
WRITER_QUEUE_COMMANDS_MAX = 20_000
# The smoke run's CPU ceilings, µs of Tally CPU per transfer: loose enough for a
# noisy 2-core CI machine (issue 10 measured ~540 single, ~80 batched, and targets
# 100 and 20), tight enough to catch a request path several times slower.
SMOKE_CPU_US_PER_SINGLE_MAX = 2_000.0
SMOKE_CPU_US_PER_BATCHED_MAX = 600.0


@dataclass(slots=True)
class Plan:
    smoke: bool
    duration_seconds: int
    workers: int
    http_server: str
    wrk_threads: int
    accounts_n: int
    postgres_url: str
    out_dir: Path
    pgbench_scale: int
    pgbench_clients: list[int]
    single_clients: list[int]
    batch_clients: dict[int, list[int]]
    hot_clients: list[int]
    hot_pct: int
    sqlite_clients: list[int]
    keep_logs: bool = False
    protocols: bool = True
    skipped: list[str] = field(default_factory=list)
    # TALLY_* settings of every server the run starts (--set), by lower-case name.
    settings: dict[str, str] = field(default_factory=dict)


def parse_args(argv: list[str] | None) -> Plan:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="the short CI run (< 60 s)")
    parser.add_argument("--workers", type=int, default=2, help="tally processes on PostgreSQL (2)")
    parser.add_argument(
        "--server",
        choices=("uvicorn", "granian"),
        default="uvicorn",
        help="tally serve --server: the HTTP server (uvicorn)",
    )
    parser.add_argument("--duration", type=int, help="seconds per point (15; smoke: 3)")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results", help="results dir")
    parser.add_argument("--clients", help="comma-separated client counts (1,16,64,256)")
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (1)")
    parser.add_argument("--accounts", type=int, default=1000, help="accounts (1000)")
    parser.add_argument("--pgbench-scale", type=int, help="pgbench scale (10; smoke: 1)")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("TALLY_BENCH_POSTGRES_URL")
        or os.environ.get("TALLY_TEST_POSTGRES_URL")
        or DEFAULT_POSTGRES_URL,
        help="an administrative URL; throwaway databases are made beside it",
    )
    parser.add_argument("--no-pgbench", action="store_true", help="skip pgbench")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a Tally setting for the servers, e.g. writer_gather_ms=0 (TALLY_WRITER_GATHER_MS)",
    )
    parser.add_argument(
        "--keep-logs", action="store_true", help="keep the servers' logs even when the run passes"
    )
    parser.add_argument("--no-postgres", action="store_true", help="skip Tally on PostgreSQL")
    parser.add_argument("--no-sqlite", action="store_true", help="skip Tally on SQLite")
    parser.add_argument(
        "--no-protocols",
        action="store_true",
        help="skip the protocol table (h1, h2, h3; never in --smoke)",
    )
    parser.add_argument(
        "--hot-clients",
        help="client counts of the hot-account point (64; smoke: none; '' for none)",
    )
    parser.add_argument(
        "--hot-pct", type=int, default=HOT_PCT, help=f"hot point: %% touching a0000 ({HOT_PCT})"
    )
    args = parser.parse_args(argv)
    if args.workers < 1 or args.wrk_threads < 1 or not 2 <= args.accounts <= 10_000:
        parser.error("--workers and --wrk-threads must be ≥ 1, --accounts 2…10000")
    smoke = args.smoke
    given = [int(c) for c in args.clients.split(",")] if args.clients else None
    if given is not None and not all(1 <= c <= 1000 for c in given):
        parser.error("--clients: each count must be 1…1000")
    if args.hot_clients is None:
        hot = [] if smoke else list(HOT_CLIENTS)
    else:
        hot = [int(c) for c in args.hot_clients.split(",") if c.strip()]
    if not all(1 <= c <= 1000 for c in hot) or not 1 <= args.hot_pct <= 100:
        parser.error("--hot-clients: each count 1…1000; --hot-pct 1…100")
    clients = given or ([16] if smoke else list(CLIENTS))
    settings = server.parse_settings(args.set)
    if settings is None:
        parser.error("--set takes NAME=VALUE, NAME a Tally setting, e.g. writer_gather_ms=0")
    plan = Plan(
        smoke=smoke,
        duration_seconds=args.duration or (3 if smoke else 15),
        workers=args.workers,
        http_server=args.server,
        settings=settings,
        wrk_threads=args.wrk_threads,
        accounts_n=args.accounts,
        postgres_url=args.postgres_url,
        out_dir=args.out,
        pgbench_scale=args.pgbench_scale or (1 if smoke else 10),
        pgbench_clients=[]
        if args.no_pgbench
        else [
            c for c in (given or ([16] if smoke else PGBENCH_CLIENTS)) if c <= PGBENCH_CLIENTS_MAX
        ],
        single_clients=[] if args.no_postgres else clients,
        batch_clients={},
        hot_clients=[] if args.no_postgres else hot,
        hot_pct=args.hot_pct,
        sqlite_clients=[] if args.no_sqlite else clients,
        keep_logs=args.keep_logs,
        protocols=not (args.no_protocols or smoke),
    )
    if not args.no_postgres:
        sizes = (100,) if smoke else BATCH_SIZES
        for size in sizes:
            plan.batch_clients[size] = []
            for c in clients:
                if c * size <= plan.workers * WRITER_QUEUE_COMMANDS_MAX // 2:
                    plan.batch_clients[size].append(c)
                else:
                    plan.skipped.append(
                        f"batch {size} at {c} clients: {c * size:,} transfers in flight would "
                        f"fill half of {plan.workers} x {WRITER_QUEUE_COMMANDS_MAX:,}-command "
                        "write queues (503 by design past that)"
                    )
    return plan


# -- one benchmark point -------------------------------------------------------------

# (transfers per request, 0 for POST /v1/transfers; clients; % of transfers touching a0000)
Point = tuple[int, int, int]


@dataclass(slots=True)
class Target:
    """A running Tally and what to sample beside it."""

    backend: str
    database_url: str
    server: server.Server
    groups: dict[str, tuple[procs.Finder, bool]]


def run_point(
    plan: Plan, children: procs.Children, target: Target, point: Point, work: Path
) -> dict[str, Any]:
    """A fresh tenant with funded accounts, one wrk run, then the invariant check."""
    batch_size, clients, hot_pct = point
    label = f"{target.backend} {report.endpoint(batch_size, hot_pct)} c={clients}"
    log(f"{label}: setting up {plan.accounts_n:,} accounts")
    _, api_key = server.create_tenant(target.database_url, f"bench {label}")
    book = ledger.Ledger(target.server.base_url, api_key, plan.accounts_n)
    ledger.set_up(book)
    log(f"{label}: wrk for {plan.duration_seconds} s")
    summary = load.run_wrk(
        children,
        base_url=target.server.base_url,
        api_key=api_key,
        clients=clients,
        threads=plan.wrk_threads,
        duration_seconds=plan.duration_seconds,
        batch_size=batch_size,
        accounts_n=plan.accounts_n,
        hot_pct=hot_pct,
        groups=target.groups,
        work_dir=work,
    )
    verdict = ledger.verify(book, summary)
    point = report.point_record(
        backend=target.backend,
        batch_size=batch_size,
        clients=clients,
        hot_pct=hot_pct,
        summary=summary,
        verdict=asdict(verdict),
    )
    lat, cpu = point["latency_ms"], point["cpu_us_per_transfer"]
    log(
        f"{label}: {point['transfers_per_s']:,.0f} transfers/s, p50 {lat['p50']} ms, "
        f"p99 {lat['p99']} ms, errors {point['errors_total']}, CPU µs/transfer Tally "
        f"{cpu['tally']} PostgreSQL {cpu['postgres']}, "
        f"invariants {'ok' if verdict.ok else 'VIOLATED: ' + '; '.join(verdict.violations)}"
    )
    return point


def run_points(
    plan: Plan,
    children: procs.Children,
    target: Target,
    points: list[Point],
    work: Path,
    results: dict[str, Any],
) -> None:
    for point in points:
        batch_size, clients, hot_pct = point
        try:
            results["points"].append(run_point(plan, children, target, point, work))
        except Exception as exc:
            log(f"point failed: {exc}")
            traceback.print_exc()
            results["points"].append(
                {
                    "backend": target.backend,
                    "endpoint": report.endpoint(batch_size, hot_pct),
                    "batch_size": batch_size,
                    "clients": clients,
                    "hot_pct": hot_pct,
                    "error": f"{type(exc).__name__}: {exc}"[:2000],
                }
            )


# -- scenarios -----------------------------------------------------------------------


def run_pgbench(
    plan: Plan, pg: postgres.Server, postmaster: int, children: procs.Children, work: Path
) -> dict[str, Any]:
    out: dict[str, Any] = {"scale": plan.pgbench_scale, "runs": []}
    if not plan.pgbench_clients:
        return out
    database = pg.create_database("tally_bench_pgbench")
    try:
        log(f"pgbench: initialising scale {plan.pgbench_scale}")
        out["init_seconds"] = postgres.pgbench_init(
            pg, database, plan.pgbench_scale, work / "pgbench-init.out"
        )
        for clients in plan.pgbench_clients:
            log(f"pgbench: {clients} clients for {plan.duration_seconds} s")
            run = postgres.pgbench_run(
                pg,
                children,
                database=database,
                clients=clients,
                duration_seconds=plan.duration_seconds,
                postmaster_pid=postmaster,
                work_dir=work,
            )
            p99 = run["latency_ms"]["p99"]
            log(
                f"pgbench: {clients} clients: {run['tps']:,.0f} tps, p99 {p99} ms, PostgreSQL "
                f"CPU {run['postgres_cpu_us_per_transaction']} µs/transaction"
            )
            out["runs"].append(run)
    finally:
        pg.drop_database(database)
    return out


def run_tally_postgres(
    plan: Plan,
    pg: postgres.Server,
    postmaster: int,
    children: procs.Children,
    work: Path,
    results: dict[str, Any],
) -> None:
    points = [(0, c, 0) for c in plan.single_clients]
    points += [(0, c, plan.hot_pct) for c in plan.hot_clients]
    points += [(size, c, 0) for size, cs in plan.batch_clients.items() for c in cs]
    if not points:
        return
    database = pg.create_database("tally_bench")
    url = pg.url_for(database)
    try:
        server.migrate(url)
        log(f"tally on PostgreSQL ({database}), {plan.workers} {plan.http_server} workers")
        log_path = work / "tally-postgresql.log"
        running = server.serve(
            children, url, plan.workers, log_path, plan.http_server, **plan.settings
        )
        try:
            groups = {
                "tally": (procs.tree(running.pid), False),
                "postgres": (procs.postgres(postmaster, database), True),
            }
            target = Target("postgresql", url, running, groups)
            run_points(plan, children, target, points, work, results)
        finally:
            server.stop(children, running)
            results["server_logs"]["postgresql"] = server.log_problems(running.log_path)
    finally:
        pg.drop_database(database)


def run_tally_sqlite(
    plan: Plan, children: procs.Children, work: Path, results: dict[str, Any]
) -> None:
    if not plan.sqlite_clients:
        return
    url = f"sqlite:///{work / 'tally-bench.db'}"
    server.migrate(url)
    log(f"tally on SQLite, 1 {plan.http_server} worker")
    running = server.serve(
        children, url, 1, work / "tally-sqlite.log", plan.http_server, **plan.settings
    )
    try:
        target = Target("sqlite", url, running, {"tally": (procs.tree(running.pid), False)})
        points = [(0, c, 0) for c in plan.sqlite_clients]
        run_points(plan, children, target, points, work, results)
    finally:
        server.stop(children, running)
        results["server_logs"]["sqlite"] = server.log_problems(running.log_path)


# -- the run -------------------------------------------------------------------------


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _git() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO_DIR), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(REPO_DIR), "status", "--porcelain", "--", "src"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "commit unknown"
    return f"commit {head}{' (src modified)' if dirty else ''}"


def _machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gib = psutil.virtual_memory().total / 2**30
    system = f"{platform.system()} {platform.release()}"
    return f"{os.cpu_count()} CPUs ({model or platform.machine()}), {memory_gib:.1f} GiB, {system}"


def smoke_failures(results: dict[str, Any]) -> list[str]:
    """The smoke run's loose bounds: no errors, and batching pays."""
    failures = [
        f"the {name} server logged {problems['tracebacks']} tracebacks: {problems['samples'][:2]}"
        for name, problems in results["server_logs"].items()
        if problems["tracebacks"]
    ]
    for p in results["points"]:
        if "error" in p:
            continue
        if p["errors_total"]:
            failures.append(
                f"{p['backend']} {p['endpoint']} c={p['clients']}: {p['errors_total']} errors "
                f"(statuses {p['statuses']}, socket {p['socket_errors']})"
            )
    failures += cpu_ceiling_failures(results)
    singles = {
        p["clients"]: p
        for p in results["points"]
        if "error" not in p
        and p["backend"] == "postgresql"
        and p["batch_size"] == 0
        and not p.get("hot_pct")
    }
    for p in results["points"]:
        if "error" in p or p["batch_size"] != 100:
            continue
        single = singles.get(p["clients"])
        if single and p["transfers_per_s"] <= single["transfers_per_s"]:
            failures.append(
                f"batch 100 at {p['clients']} clients: {p['transfers_per_s']:,.0f} transfers/s, "
                f"not above single transfers' {single['transfers_per_s']:,.0f}"
            )
    return failures


def cpu_ceiling_failures(results: dict[str, Any]) -> list[str]:
    """The smoke run's ceilings on Tally CPU per transfer, each figure logged."""
    failures = []
    for p in results["points"]:
        if "error" in p:
            continue
        ceiling = SMOKE_CPU_US_PER_BATCHED_MAX if p["batch_size"] else SMOKE_CPU_US_PER_SINGLE_MAX
        cpu = p["cpu_us_per_transfer"]["tally"]
        label = f"{p['backend']} {p['endpoint']} c={p['clients']}"
        ok = cpu is not None and cpu <= ceiling
        log(
            f"CPU ceiling: {label}: Tally {'—' if cpu is None else f'{cpu:,.0f}'} µs/transfer "
            f"(ceiling {ceiling:,.0f}): {'ok' if ok else 'EXCEEDED'}"
        )
        if not ok:
            failures.append(
                f"{label}: Tally CPU {cpu} µs per transfer, above the smoke ceiling "
                f"{ceiling:,.0f} (or not measured)"
            )
    return failures


def failures_of(results: dict[str, Any], smoke: bool) -> list[str]:
    failures = []
    for p in results["points"]:
        label = f"{p['backend']} {p['endpoint']} c={p['clients']}"
        if "error" in p:
            failures.append(f"{label}: {p['error']}")
        elif not p["invariants"]["ok"]:
            failures.append(f"{label}: invariants violated: {p['invariants']['violations']}")
    # The smoke run asserts nothing about pgbench: it only gives the ratios context.
    if results["pgbench"].get("error") and not smoke:
        failures.append(f"pgbench: {results['pgbench']['error']}")
    if smoke:
        failures += smoke_failures(results)
    return failures


def write_outputs(plan: Plan, results: dict[str, Any], stamp: str) -> list[Path]:
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    base = plan.out_dir / stamp
    paths = [base.with_suffix(".json"), base.with_suffix(".md"), base.with_suffix(".png")]
    paths[0].write_text(json.dumps(results, indent=2, default=str) + "\n")
    text = report.markdown(results)
    if "protocols" in results:
        text += (
            "\n## Protocols: POST /v1/transfers, 64 in flight, one process on SQLite\n\n"
            + results["protocols"]["table"]
        )
    paths[1].write_text(text)
    try:
        report.chart(results, paths[2])
    except Exception as exc:
        log(f"chart failed: {exc}")
        paths.pop()
    print(text)
    return paths


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _new_results(plan: Plan, stamp: str) -> dict[str, Any]:
    return {
        "meta": {
            "started_at": stamp,
            "smoke": plan.smoke,
            "machine": _machine(),
            "cpus": os.cpu_count(),
            "git": _git(),
            "workers": plan.workers,
            "http_server": plan.http_server,
            "settings": plan.settings,
            "duration_s": plan.duration_seconds,
            "wrk_threads": plan.wrk_threads,
            "accounts": plan.accounts_n,
            "postgres": {},
            # bench/core_book.py, µs per transfer: how fast Python runs on this
            # machine during the run (it drifts by half from day to day).
            "core_book_us": {},
        },
        "pgbench": {"scale": plan.pgbench_scale, "runs": []},
        "points": [],
        "skipped": plan.skipped,
        "server_logs": {},
        "scenario_errors": [],
    }


def run_all(plan: Plan, children: procs.Children, work: Path, results: dict[str, Any]) -> None:
    """pgbench, then Tally on PostgreSQL, then on SQLite. A scenario that fails (a
    server that does not start) is recorded and does not stop the next one."""
    load.wrk_path()
    results["meta"]["core_book_us"]["before"] = round(core_book.measure(), 2)
    pg = postgres.Server(plan.postgres_url)
    results["meta"]["postgres"] = pg.settings()
    postmaster = pg.postmaster_pid()
    try:
        results["pgbench"] = run_pgbench(plan, pg, postmaster, children, work)
    except Exception as exc:
        traceback.print_exc()
        results["pgbench"]["error"] = f"{type(exc).__name__}: {exc}"[:2000]
    try:
        run_tally_postgres(plan, pg, postmaster, children, work, results)
    except Exception as exc:
        traceback.print_exc()
        results["scenario_errors"].append(f"Tally on PostgreSQL: {type(exc).__name__}: {exc}")
    try:
        run_tally_sqlite(plan, children, work, results)
    except Exception as exc:
        traceback.print_exc()
        results["scenario_errors"].append(f"Tally on SQLite: {type(exc).__name__}: {exc}")
    if plan.protocols:
        # bench/protocols.py: the same transfer over h1, h2 and h3 (and the hook's rows).
        log("the protocol table")
        seconds = min(plan.duration_seconds, 10)
        table = protocols.run(seconds, 64, children, work)
        results["protocols"] = table
        results["scenario_errors"] += [f"protocols: {f}" for f in table["failures"]]
    results["meta"]["core_book_us"]["after"] = round(core_book.measure(), 2)


def main(argv: list[str] | None = None) -> int:
    plan = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    children = procs.Children()
    work = Path(tempfile.mkdtemp(prefix="tally-bench-"))
    results = _new_results(plan, stamp)
    started = time.monotonic()
    try:
        run_all(plan, children, work, results)
    except Exception as exc:
        traceback.print_exc()
        results["fatal"] = f"{type(exc).__name__}: {exc}"[:2000]
    finally:
        children.stop_all()
    results["meta"]["elapsed_s"] = round(time.monotonic() - started, 1)
    report.attach_ratios(results)
    results["targets"] = report.targets(results)
    failures = [*results["scenario_errors"], *failures_of(results, plan.smoke)]
    if results.get("fatal"):
        failures.insert(0, f"fatal: {results['fatal']}")
    results["failures"] = failures
    for path in write_outputs(plan, results, stamp):
        log(f"wrote {path}")
    if failures:
        log(f"FAILED ({len(failures)}); logs kept in {work}:")
        for failure in failures:
            log(f"  - {failure}")
        return 1
    if plan.keep_logs:
        log(f"logs kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    log(f"passed in {results['meta']['elapsed_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

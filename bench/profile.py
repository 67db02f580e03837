"""Where one benchmark point's CPU goes: py-spy on Tally, a flame graph and two tables.

    make profile                                  # wrk, PostgreSQL single transfers, 64 clients
    .venv/bin/python bench/profile.py --driver path --seconds 15
    .venv/bin/python bench/profile.py --batch 1000 --clients 4

``--driver wrk`` (the default): ``tally serve --workers 1`` on a fresh
``tally_bench_*`` database, a funded tenant as in ``make bench``, then wrk with the
same Lua script while ``py-spy record --format raw`` samples the one server process
(``--nonblocking``: it reads the process's memory without pausing it, so the CPU
figure is the server's own). Only samples taken while the process holds the GIL
count (``py-spy --gil``): py-spy's own test of idleness lets the event loop's
wait in ``epoll_pwait`` through, which then shows as work of ``Runner.run``
(``py-spy record --native`` at one client put 247 of the 275 samples that ended
there in ``epoll_pwait``; at 64 clients under wrk 41 of 91). uvloop waits without
the GIL; the work it does with it (its callbacks, asyncpg's protocol), the
Python and the system calls made from Python (a socket's ``write``) hold it. On
SQLite (``--backend sqlite``) every sample counts instead: SQLite lets go of the
GIL while it runs a statement or syncs the file, which is work, not waiting; so
there ``Runner.run``'s own samples are partly the loop's idle wait.
``--all-samples`` counts every sample on PostgreSQL too. Read the shares (and
the µs per transfer derived from them, over the process's measured CPU), not
the sample counts. The invariants are checked afterwards as for every bench
point. ``--driver path``
profiles ``bench/request_path.py`` instead (the app called in process, no HTTP
server), attaching once its measured window starts.

Writes ``bench/results/profile-<timestamp>.txt`` (py-spy's folded stacks), ``.svg``
(the flame graph) and ``.md`` (the top functions by self and total samples, each
also in µs per transfer, and the run's Tally CPU µs per transfer), and prints the
tables. Needs py-spy (the ``bench`` extra) and, as root or with ptrace allowed,
permission to read another process's memory.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import flame, ledger, load, postgres, procs, server

BENCH_DIR = Path(__file__).resolve().parent
PY_SPY = Path(sys.executable).parent / "py-spy"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
SAMPLE_RATE_HZ = 250
PY_SPY_GRACE_SECONDS = 30.0
PATH_START_TIMEOUT_SECONDS = 120.0


def log(message: str) -> None:
    print(f"[profile {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def py_spy(
    children: procs.Children, pid: int, out: Path, args: argparse.Namespace, work: Path
) -> subprocess.Popen[bytes]:
    seconds = args.seconds
    argv = [
        str(PY_SPY), "record", "--pid", str(pid), "--format", "raw", "--output", str(out),
        "--rate", str(SAMPLE_RATE_HZ), "--duration", str(seconds), "--nonblocking",
        *(() if counts_every_sample(args) else ("--gil",)), *args.py_spy_arg,
    ]  # fmt: skip
    with (work / "py-spy.log").open("ab") as log_file:
        return children.start(argv, log=log_file)


def counts_every_sample(args: argparse.Namespace) -> bool:
    """Whether samples without the GIL count too (see the module's docstring)."""
    return bool(args.all_samples or args.backend == "sqlite")


def finish(children: procs.Children, spy: subprocess.Popen[bytes], seconds: int) -> None:
    if not procs.wait_exited(spy, seconds + PY_SPY_GRACE_SECONDS):
        raise RuntimeError("py-spy did not finish")
    children.stop(spy)
    if spy.returncode:
        raise RuntimeError(f"py-spy failed with {spy.returncode}")


def profile_wrk(args: argparse.Namespace, children: procs.Children, raw: Path, work: Path) -> float:
    """tally serve --workers 1 under wrk, py-spy on it; returns Tally CPU µs/transfer."""
    pg = postgres.Server(args.postgres_url)
    database = pg.create_database("tally_bench_profile")
    url = pg.url_for(database)
    try:
        server.migrate(url)
        running = server.serve(children, url, 1, work / "tally.log")
        try:
            _, api_key = server.create_tenant(url, "bench profile")
            book = ledger.Ledger(running.base_url, api_key, args.accounts)
            ledger.set_up(book)
            log(f"wrk: {args.clients} clients, batch {args.batch}, {args.seconds} s, py-spy on")
            spy = py_spy(children, running.pid, raw, args, work)
            summary = load.run_wrk(
                children,
                base_url=running.base_url,
                api_key=api_key,
                clients=args.clients,
                threads=1,
                duration_seconds=args.seconds,
                batch_size=args.batch,
                accounts_n=args.accounts,
                hot_pct=args.hot_pct,
                groups={"tally": (procs.tree(running.pid), False)},
                work_dir=work,
            )
            finish(children, spy, args.seconds)
            verdict = ledger.verify(book, summary)
        finally:
            server.stop(children, running)
    finally:
        pg.drop_database(database)
    if not verdict.ok:
        raise RuntimeError(f"invariants violated: {verdict.violations}")
    created = summary["created"]
    cpu_s = summary["resources"]["tally"]["cpu_seconds"]
    log(
        f"{created / args.seconds:,.0f} transfers/s, Tally {cpu_s / created * 1e6:,.1f} µs/transfer"
    )
    return float(cpu_s / created * 1e6)


def profile_path(
    args: argparse.Namespace, children: procs.Children, raw: Path, work: Path
) -> float:
    """bench/request_path.py with py-spy attached for its measured window."""
    results = work / "request-path.json"
    stderr = work / "request-path.log"
    argv = [
        sys.executable, str(BENCH_DIR / "request_path.py"),
        "--clients", "0" if args.batch else str(args.clients),
        "--batch", str(args.batch), "--batch-clients", str(args.clients),
        "--seconds", str(args.seconds + 2), "--rounds", "1", "--hot-pct", str(args.hot_pct),
        "--accounts", str(args.accounts), "--postgres-url", args.postgres_url,
        "--json", str(results), "--backend", args.backend,
    ]  # fmt: skip
    with stderr.open("wb") as out:
        proc = children.start(argv, env=dict(os.environ), log=out)
    deadline = time.monotonic() + PATH_START_TIMEOUT_SECONDS
    while "then measuring" not in stderr.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"request_path.py did not start:\n{procs.tail(stderr)}")
        time.sleep(0.05)
    time.sleep(1.0)  # its warm-up
    spy = py_spy(children, proc.pid, raw, args, work)
    finish(children, spy, args.seconds)
    if not procs.wait_exited(proc, PATH_START_TIMEOUT_SECONDS) or proc.wait() != 0:
        raise RuntimeError(f"request_path.py failed:\n{procs.tail(stderr)}")
    print(procs.tail(stderr), file=sys.stderr)
    row = json.loads(results.read_text())["rows"][0]
    return float(row["tally_cpu_us_per_transfer"])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--driver", choices=("wrk", "path"), default="wrk")
    parser.add_argument(
        "--backend",
        choices=("postgresql", "sqlite"),
        default="postgresql",
        help="the database (sqlite: --driver path only)",
    )
    parser.add_argument("--clients", type=int, default=64, help="connections (64)")
    parser.add_argument("--batch", type=int, default=0, help="transfers per request (0: single)")
    parser.add_argument("--seconds", type=int, default=15, help="seconds profiled (15)")
    parser.add_argument("--accounts", type=int, default=1000, help="funded accounts (1000)")
    parser.add_argument("--hot-pct", type=int, default=0, help="%% of transfers touching a0000")
    parser.add_argument(
        "--py-spy-arg",
        action="append",
        default=[],
        help="one more py-spy record argument, e.g. --py-spy-arg=--idle (repeatable)",
    )
    parser.add_argument(
        "--all-samples",
        action="store_true",
        help="count samples without the GIL too (the loop's waits among them): "
        "the default on SQLite",
    )
    parser.add_argument("--top", type=int, default=25, help="rows per table (25)")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results", help="results dir")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("TALLY_BENCH_POSTGRES_URL")
        or os.environ.get("TALLY_TEST_POSTGRES_URL")
        or DEFAULT_POSTGRES_URL,
    )
    args = parser.parse_args(argv)
    if not (1 <= args.clients <= 1000 and 0 <= args.batch <= 1000 and 1 <= args.seconds <= 600):
        parser.error("--clients 1…1000, --batch 0…1000, --seconds 1…600")
    if args.backend == "sqlite" and args.driver != "path":
        parser.error("--backend sqlite needs --driver path")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not PY_SPY.exists():
        raise SystemExit("py-spy is not installed: pip install -e '.[dev,bench]'")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    args.out.mkdir(parents=True, exist_ok=True)
    base = args.out / f"profile-{stamp}"
    raw, svg_path, md = base.with_suffix(".txt"), base.with_suffix(".svg"), base.with_suffix(".md")
    children = procs.Children()
    work = Path(tempfile.mkdtemp(prefix="tally-profile-"))
    try:
        run = profile_wrk if args.driver == "wrk" else profile_path
        cpu_us = run(args, children, raw, work)
    finally:
        children.stop_all()
    what = (
        f"{'batch ' + str(args.batch) if args.batch else 'single transfers'}, "
        f"{args.clients} clients, {args.driver}"
        + (f", hot {args.hot_pct} %" if args.hot_pct else "")
        + (", every sample" if counts_every_sample(args) else ", samples holding the GIL")
    )
    database = "SQLite" if args.backend == "sqlite" else "PostgreSQL"
    title = f"Tally on {database}, {what}, {stamp}: {cpu_us:,.1f} µs CPU per transfer"
    text = flame.report(raw, svg_path, cpu_us, args.top, title)
    md.write_text(f"# {title}\n\n```\n{text}\n```\n")
    print(text)
    for path in (raw, svg_path, md):
        log(f"wrote {path}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

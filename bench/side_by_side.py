"""Two versions of Tally under the same load at the same moment: what a change buys,
measured on a machine whose speed drifts.

    .venv/bin/python bench/side_by_side.py BASE [NEW] [--clients 64] [--batch 0]
        [--seconds 15] [--rounds 3] [--workers 2] [--base-server S] [--new-server S]

BASE and NEW are commits (NEW defaults to the working tree, as checked out). Each
gets a ``git worktree`` (removed afterwards), a throwaway PostgreSQL database
migrated by its own code, and its own ``tally serve`` importing its own ``src``.
Each round funds a fresh tenant on both, then starts one wrk against each at the
same moment, with the same script, connections and duration as ``make bench``,
and checks the invariants of both afterwards.

Why: on this 2-core machine the speed of everything changes by half from one
minute to the next (PostgreSQL's CPU per transfer moved from 156 to 251 µs
between two runs of the same code), so runs of two commits one after the other
compare the machine's moods as much as the code. Run together, both servers
meet the same mood; each round's NEW/BASE ratio of Tally CPU µs per transfer is
the figure to quote. Both share two cores with each other, PostgreSQL and two
load generators, so each one's throughput is lower than alone; the CPU per
transfer is what is compared. PostgreSQL's figure counts each database's
backends plus the shared WAL writer and checkpointer (in both columns).

``--base-server`` and ``--new-server`` (uvicorn, granian) run each side under
that HTTP server: the same commit twice compares the servers.

Both commits must share their migrations' history as far as the older one goes
(each migrates its own database). Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness import ledger, load, postgres, procs, report, server

REPO = Path(__file__).resolve().parent.parent
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
ACCOUNTS = 1000


def log(message: str) -> None:
    print(f"[side-by-side {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass(slots=True)
class Side:
    name: str  # "base" or "new"
    rev: str
    src: Path
    http_server: str = "uvicorn"
    url: str = ""
    running: server.Server | None = None
    groups: dict[str, tuple[procs.Finder, bool]] | None = None


def _checkout(rev: str, into: Path) -> Path:
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", "--force", str(into), rev],
        check=True,
        capture_output=True,
    )
    return into / "src"


def _remove_checkout(path: Path) -> None:
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "remove", "--force", str(path)],
        check=False,
        capture_output=True,
    )


def _short(rev: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", rev],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def fund(side: Side, round_n: int) -> ledger.Ledger:
    """A new tenant with funded accounts on this side, before any load starts."""
    assert side.running is not None
    _, api_key = server.create_tenant(side.url, f"side {side.name} {round_n}", str(side.src))
    book = ledger.Ledger(side.running.base_url, api_key, ACCOUNTS)
    ledger.set_up(book)
    return book


def load_side(
    side: Side,
    book: ledger.Ledger,
    args: argparse.Namespace,
    children: procs.Children,
    work: Path,
) -> dict[str, Any]:
    assert side.running is not None
    assert side.groups is not None
    summary = load.run_wrk(
        children,
        base_url=side.running.base_url,
        api_key=book.api_key,
        clients=args.clients,
        threads=1,
        duration_seconds=args.seconds,
        batch_size=args.batch,
        accounts_n=ACCOUNTS,
        groups=side.groups,
        work_dir=work,
    )
    verdict = ledger.verify(book, summary)
    point = report.point_record(
        backend="postgresql",
        batch_size=args.batch,
        clients=args.clients,
        hot_pct=0,
        summary=summary,
        verdict=asdict(verdict),
    )
    if not verdict.ok or point["errors_total"]:
        raise RuntimeError(
            f"{side.name}: errors {point['errors_total']}, invariants {verdict.violations}"
        )
    return point


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base", help="the commit to compare against")
    parser.add_argument("new", nargs="?", default="", help="a commit (the working tree)")
    parser.add_argument("--clients", type=int, default=64, help="connections per side (64)")
    parser.add_argument("--batch", type=int, default=0, help="transfers per request (0)")
    parser.add_argument("--seconds", type=int, default=15, help="seconds per round (15)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (3)")
    parser.add_argument("--workers", type=int, default=2, help="tally serve --workers (2)")
    parser.add_argument("--base-server", default="uvicorn", choices=("uvicorn", "granian"))
    parser.add_argument("--new-server", default="uvicorn", choices=("uvicorn", "granian"))
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    args = parser.parse_args(argv)
    if not (1 <= args.rounds <= 20 and 3 <= args.seconds <= 120 and 1 <= args.clients <= 512):
        parser.error("--rounds 1…20, --seconds 3…120, --clients 1…512")
    if not 0 <= args.batch <= 1000 or not 1 <= args.workers <= 8:
        parser.error("--batch 0…1000, --workers 1…8")
    load.wrk_path()

    work = Path(tempfile.mkdtemp(prefix="tally-side-by-side-"))
    children = procs.Children()
    pg = postgres.Server(args.postgres_url)
    postmaster = pg.postmaster_pid()
    base = Side("base", _short(args.base), _checkout(args.base, work / "base"), args.base_server)
    if args.new:
        new = Side("new", _short(args.new), _checkout(args.new, work / "new"), args.new_server)
    else:
        new = Side("new", "working tree", REPO / "src", args.new_server)
    sides = (base, new)
    databases: list[str] = []
    rounds: list[dict[str, dict[str, Any]]] = []
    try:
        for side in sides:
            database = pg.create_database(f"tally_side_{side.name}")
            databases.append(database)
            side.url = pg.url_for(database)
            server.migrate(side.url, str(side.src))
            side.running = server.serve(
                children, side.url, args.workers, work / f"{side.name}.log",
                side.http_server, pythonpath=str(side.src),
            )  # fmt: skip
            side.groups = {
                "tally": (procs.tree(side.running.pid), False),
                "postgres": (procs.postgres(postmaster, database), True),
            }
        log(f"base {base.rev} and new {new.rev}: {args.rounds} rounds of {args.seconds} s")
        with ThreadPoolExecutor(max_workers=2) as pool:
            for round_n in range(1, args.rounds + 1):
                books = [fund(s, round_n) for s in sides]
                done = list(
                    pool.map(lambda sb: load_side(sb[0], sb[1], args, children, work),
                             zip(sides, books, strict=True))
                )  # fmt: skip
                rounds.append({s.name: p for s, p in zip(sides, done, strict=True)})
                b, n = done
                log(
                    f"round {round_n}: Tally µs/transfer base {b['cpu_us_per_transfer']['tally']}"
                    f" new {n['cpu_us_per_transfer']['tally']}"
                )
    finally:
        for side in sides:
            if side.running is not None:
                server.stop(children, side.running)
        children.stop_all()
        for database in databases:
            pg.drop_database(database)
        for side in sides:
            if side.src != REPO / "src":
                _remove_checkout(side.src.parent)
        shutil.rmtree(work, ignore_errors=True)

    what = "single transfers" if args.batch == 0 else f"batches of {args.batch}"
    print(
        f"\nPostgreSQL, {what}, {args.clients} connections per side, {args.workers} workers, "
        f"{args.seconds} s rounds; base {base.rev} ({base.http_server}), "
        f"new {new.rev} ({new.http_server})\n"
    )
    print("| round | transfers/s base · new | Tally CPU µs/transfer base · new | new/base "
          "| PostgreSQL CPU µs/transfer base · new | p99 ms base · new |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- |")
    ratios = []
    for i, r in enumerate(rounds, 1):
        b, n = r["base"], r["new"]
        ratio = n["cpu_us_per_transfer"]["tally"] / b["cpu_us_per_transfer"]["tally"]
        ratios.append(ratio)
        print(
            f"| {i} | {b['transfers_per_s']:,.0f} · {n['transfers_per_s']:,.0f} "
            f"| {b['cpu_us_per_transfer']['tally']} · {n['cpu_us_per_transfer']['tally']} "
            f"| {ratio:.3f} "
            f"| {b['cpu_us_per_transfer']['postgres']} · {n['cpu_us_per_transfer']['postgres']} "
            f"| {b['latency_ms']['p99']} · {n['latency_ms']['p99']} |"
        )
    print(f"\nmedian new/base Tally CPU µs per transfer: {statistics.median(ratios):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

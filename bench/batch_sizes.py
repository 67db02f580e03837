"""How many requests each writer transaction carries under wrk: the batch-size histogram.

    .venv/bin/python bench/batch_sizes.py [--clients 32] [--seconds 10]
        [--set writer_gather_ms=0]

``tally serve --workers 1`` on a throwaway ``tally_bench_*`` database, a funded
tenant as in ``make bench``, then wrk's single transfers. The worker's
``tally_writer_batch_commands`` histogram is read from ``/metrics`` before and
after the load and the difference printed: transactions, the mean commands per
transaction, and how many carried at most 1, 2, 4, 8, 16, 32 and 64. One worker,
so that every scrape reaches the process measured (with several, a scrape
reaches any of them, and two started together cannot be told apart). This is
how docs/performance.md counted the small batches that the writer's group
commit wait removes. Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path

import httpx
from harness import ledger, load, postgres, procs, server

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
ACCOUNTS = 1000
BOUNDS = ("1.0", "2.0", "4.0", "8.0", "16.0", "32.0", "64.0")
_BUCKET = re.compile(r'^tally_writer_batch_commands_bucket\{le="([^"]+)"\} (\S+)$', re.M)
_TOTAL = re.compile(r"^tally_writer_batch_commands_(count|sum) (\S+)$", re.M)


def scrape(base_url: str) -> dict[str, float]:
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    counts = {m.group(1): float(m.group(2)) for m in _BUCKET.finditer(text)}
    return counts | {m.group(1): float(m.group(2)) for m in _TOTAL.finditer(text)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    args = parser.parse_args()
    settings = server.parse_settings(args.set)
    if settings is None:
        parser.error("--set takes NAME=VALUE, NAME a Tally setting, e.g. writer_gather_ms=0")
    load.wrk_path()
    work = Path(tempfile.mkdtemp(prefix="tally-batch-sizes-"))
    children = procs.Children()
    pg = postgres.Server(args.postgres_url)
    database = pg.create_database("tally_bench_batches")
    try:
        url = pg.url_for(database)
        server.migrate(url)
        running = server.serve(children, url, 1, work / "tally.log", **settings)
        _, api_key = server.create_tenant(url, "batch sizes")
        book = ledger.Ledger(running.base_url, api_key, ACCOUNTS)
        ledger.set_up(book)
        before = scrape(running.base_url)
        summary = load.run_wrk(
            children,
            base_url=running.base_url,
            api_key=api_key,
            clients=args.clients,
            threads=1,
            duration_seconds=args.seconds,
            batch_size=0,
            accounts_n=ACCOUNTS,
            groups={"tally": (procs.tree(running.pid), False)},
            work_dir=work,
        )
        after = scrape(running.base_url)
        d = {k: v - before.get(k, 0.0) for k, v in after.items()}
        sizes = ", ".join(f"≤{float(b):.0f}: {d.get(b, 0):.0f}" for b in BOUNDS)
        mean = d["sum"] / d["count"] if d.get("count") else 0.0
        print(
            f"{args.clients} clients, 1 worker, {settings or 'default settings'}: "
            f"{summary['responses'] / (summary['duration_us'] / 1e6):,.0f} transfers/s, "
            f"{d.get('count', 0):.0f} transactions, mean {mean:.1f} commands; {sizes}"
        )
        server.stop(children, running)
    finally:
        children.stop_all()
        pg.drop_database(database)


if __name__ == "__main__":
    main()

"""The reads of one busy account: how long each takes when it has many transfers.

Builds a throwaway ledger straight in SQL (no HTTP, no writer): one tenant, 100
accounts, ``--transfers`` transfers of which half debit the busy account ``a0``
and the rest move between the others, each row with the totals migration 0007
keeps on it. Then times, for ``a0`` and for a quiet account, the reads a page
about an account makes: its newest transfers (the REST list and the GraphQL
loader), its balance history (the list, the GraphQL loader, a page deep in it)
and its balance at an instant. Medians of ``--repeat`` calls, through the real
``Store``.

    .venv/bin/python bench/hot_reads.py                       # PostgreSQL, 200,000
    .venv/bin/python bench/hot_reads.py --backend sqlite

Only 127.0.0.1 is contacted; the database (or file) is dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from harness import postgres

from tally.config import Settings
from tally.storage import make_store
from tally.storage.records import TransferFilter
from tally.storage.schema import migrate, sqlalchemy_url
from tally.storage.store import Store

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
ACCOUNTS = 100


def numbers(postgres: bool, low: int, high: int) -> str:
    """A FROM item of the integers ``i`` from ``low`` to ``high``."""
    if postgres:
        return f"generate_series({low}, {high}) AS s(i)"
    return (
        f"(WITH RECURSIVE s(i) AS (SELECT {low} UNION ALL SELECT i + 1 FROM s"
        f" WHERE i < {high}) SELECT i FROM s) AS s"
    )


def fill(url: str, transfers: int) -> None:
    """The ledger, in three statements: a series of numbers made into rows."""
    postgres = url.startswith("postgresql")
    quiet = f"'a' || (1 + (i + 7) % {ACCOUNTS - 1})"
    busy_or_quiet = f"CASE WHEN i % 2 = 0 THEN 'a0' ELSE 'a' || (1 + i % {ACCOUNTS - 1}) END"
    engine = sa.create_engine(sqlalchemy_url(url))
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO tenants (id, name, created_at_us) VALUES ('t', 't', 1)"))
        conn.execute(
            sa.text(
                "INSERT INTO accounts (tenant_id, id, sequence, currency, normal_balance,"
                " debits_must_not_exceed_credits, credits_must_not_exceed_debits, status,"
                " metadata, version, created_at_us, updated_at_us)"
                f" SELECT 't', 'a' || i, i + 1, 'USD', 'credit', false, false, 'open', '{{}}',"
                f" 0, 1, 1 FROM {numbers(postgres, 0, ACCOUNTS - 1)}"
            )
        )
        # Versions and totals are made up but well ordered: time, sequence and
        # each side's version rise together, as the writer keeps them.
        conn.execute(
            sa.text(
                "INSERT INTO transfers (tenant_id, id, sequence, debit_account_id,"
                " credit_account_id, amount, currency, pending, status, metadata,"
                " created_at_us, debit_version, debit_debits_pending, debit_debits_posted,"
                " debit_credits_pending, debit_credits_posted, credit_version,"
                " credit_debits_pending, credit_debits_posted, credit_credits_pending,"
                " credit_credits_posted)"
                f" SELECT 't', 'x' || i, i, {busy_or_quiet}, {quiet}, 1, 'USD', false, 'posted',"
                " '{}', 1000 + i, i, 0, i, 0, 0, i, 0, 0, 0, i"
                f" FROM {numbers(postgres, 1, transfers)}"
            )
        )
        conn.execute(sa.text("ANALYZE"))
    engine.dispose()


async def timed(repeat: int, call: Callable[[], Awaitable[Any]]) -> float:
    await call()  # warm: the first call also opens connections and plans
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        await call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


async def measure(store: Store, transfers: int, repeat: int) -> None:
    print(f"{'read':58} {'a0 (busy) ms':>13} {'a5 (quiet) ms':>14}")
    deep = 1000 + transfers // 2

    def reads(account: str) -> list[tuple[str, Callable[[], Awaitable[Any]]]]:
        newest = TransferFilter(account_id=account, descending=True)
        return [
            (
                "GET /v1/transfers?account_id=…&order=desc (25)",
                lambda: store.list_transfers("t", newest, cursor=None, limit=25),
            ),
            (
                "GraphQL lastTransfers (10), for it alone",
                lambda: store.last_transfers("t", [account], 10),
            ),
            (
                "GET /v1/accounts/…/balances (25)",
                lambda: store.list_balances("t", account, before=None, limit=25),
            ),
            (
                "the same, a page from the middle of its history",
                lambda: store.list_balances("t", account, before=(deep, 2**40), limit=25),
            ),
            (
                "GraphQL balanceHistory (10), for it alone",
                lambda: store.first_balances("t", [account], 10),
            ),
            (
                "GET /v1/accounts/…/balances?at= (the middle)",
                lambda: store.balance_at("t", account, deep),
            ),
        ]

    for (name, busy), (_, quiet) in zip(reads("a0"), reads("a5"), strict=True):
        print(f"{name:58} {await timed(repeat, busy):13.2f} {await timed(repeat, quiet):14.2f}")


async def run(url: str, transfers: int, repeat: int) -> None:
    store = make_store(Settings(database_url=url))
    await store.open()
    try:
        await measure(store, transfers, repeat)
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--transfers", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    print(f"{args.backend}, {args.transfers:,} transfers, half of them debiting a0")
    if args.backend == "sqlite":
        with tempfile.TemporaryDirectory() as directory:
            url = f"sqlite:///{Path(directory) / 'hot.db'}"
            migrate(Settings(database_url=url))
            fill(url, args.transfers)
            asyncio.run(run(url, args.transfers, args.repeat))
        return
    with postgres.Server(ADMIN_URL).migrated_database("tally_bench_hot") as url:
        fill(url, args.transfers)
        asyncio.run(run(url, args.transfers, args.repeat))


if __name__ == "__main__":
    main()

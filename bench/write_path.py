"""Where one write transaction spends its time, statement by statement.

Drives the ledger's write transaction on ``PostgresStore`` directly (no HTTP) with batches of N new
transfers on a throwaway database, and reports the median time of each SQL
statement the transaction sends, of the core's decision, and of the whole
transaction. This is the breakdown docs/performance.md quotes:

    .venv/bin/python bench/write_path.py --batch 1 --batch 1000

Only 127.0.0.1 is contacted; the database is dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import psycopg

from tally.config import Settings
from tally.core import CreateAccount, CreateTransfer, NormalBalance
from tally.ledger import transaction
from tally.ledger.transaction import Job, execute
from tally.storage import postgres as pg
from tally.storage.schema import migrate
from tally.support.ids import new_id

ACCOUNTS = 1000
REPETITIONS = 20

timings: dict[str, list[float]] = defaultdict(list)


def _timed(name: str, call: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def wrapper(self: Any, query: str, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await call(self, query, *args, **kwargs)
        finally:
            label = " ".join(query.split()[:4])
            timings[f"{name}: {label[:60]}"].append(time.perf_counter() - started)

    return wrapper


def _instrument() -> None:
    connection = asyncpg.connection.Connection
    connection.fetch = _timed("sql", connection.fetch)  # type: ignore[method-assign]
    connection.execute = _timed("sql", connection.execute)  # type: ignore[method-assign]
    decide = transaction.decide

    def timed_decide(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return decide(*args, **kwargs)
        finally:
            timings["python: the core decides"].append(time.perf_counter() - started)

    transaction.decide = timed_decide  # type: ignore[assignment]


async def _execute(store: pg.PostgresStore, jobs: list[Job]) -> None:
    await execute(store, jobs, time.time_ns() // 1000, retry_after_seconds=1)


async def _set_up(store: pg.PostgresStore) -> str:
    tenant = new_id("ten")
    conn = await store._writer_connection()
    await conn.execute(
        "INSERT INTO tenants (id, name, created_at_us) VALUES ($1, 'bench', 0)", tenant
    )
    accounts = [CreateAccount("bank", "USD", NormalBalance.DEBIT)] + [
        CreateAccount(f"a{i}", "USD", debits_must_not_exceed_credits=True) for i in range(ACCOUNTS)
    ]
    funding = [CreateTransfer(new_id("trf"), "bank", f"a{i}", 10**12) for i in range(ACCOUNTS)]
    await _execute(store, [Job(tenant, accounts), Job(tenant, funding)])
    return tenant


async def _measure(url: str, sizes: list[int]) -> None:
    store = pg.PostgresStore(Settings(database_url=url))
    await store.open()
    tenant = await _set_up(store)
    rng = random.Random(1)
    for size in sizes:
        timings.clear()
        for _ in range(REPETITIONS):
            commands = []
            for _ in range(size):
                a = rng.randrange(ACCOUNTS)
                b = (a + rng.randrange(1, ACCOUNTS)) % ACCOUNTS
                commands.append(CreateTransfer(new_id("trf"), f"a{a}", f"a{b}", 1))
            started = time.perf_counter()
            await _execute(store, [Job(tenant, commands)])
            timings["whole transaction"].append(time.perf_counter() - started)
        print(f"\nbatch of {size} transfer(s), median of {REPETITIONS}:")
        for label, values in timings.items():
            print(f"  {statistics.median(values) * 1000:9.3f} ms  {label}")
    await store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, action="append", help="transfers per batch")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(
            "TALLY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
        ),
    )
    args = parser.parse_args()
    name = f"tally_bench_{secrets.token_hex(4)}"
    base = args.postgres_url.rsplit("/", 1)[0]
    with psycopg.connect(args.postgres_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = f"{base}/{name}"
        migrate(Settings(database_url=url))
        _instrument()
        asyncio.run(_measure(url, args.batch or [1, 1000]))
    finally:
        with psycopg.connect(args.postgres_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    sys.exit(main())

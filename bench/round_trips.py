"""What a round trip costs a lone write transaction, three ways (PostgreSQL).

A single transfer at one client is its own write transaction: BEGIN, lock the
accounts, write, COMMIT, four round trips, each a wakeup of the database's
backend and of the client's event loop. This times a transaction of that shape
(lock two accounts, update them and insert a row, in a table of its own) on
one connection under uvloop, as Tally's writer runs, three ways in turns:

- asyncpg, four round trips, as the writer did (``Connection.transaction``);
- asyncpg with the next transaction's BEGIN sent with this one's COMMIT
  (``COMMIT; BEGIN`` in one query), as the writer does since 8c51fd5: three
  round trips, the connection "idle in transaction" until the next one;
- psycopg 3's pipeline mode: BEGIN with the lock, the write with COMMIT, two
  round trips.

It prints each way's latency (p50, p99) and the client's CPU per transaction.

    .venv/bin/python bench/round_trips.py [--transactions 3000] [--rounds 2]

Only 127.0.0.1 is contacted; the database is dropped at the end.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Awaitable, Callable

import asyncpg
import psycopg
import uvloop
from harness import postgres

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
ACCOUNTS = 1000
SET_UP = (
    "CREATE TABLE rt_accounts (id text PRIMARY KEY, balance bigint NOT NULL);"
    "CREATE TABLE rt_transfers (id bigserial PRIMARY KEY, debit text, credit text,"
    " amount bigint, metadata jsonb);"
    f"INSERT INTO rt_accounts SELECT 'a' || i, 1000000000 FROM generate_series(1, {ACCOUNTS}) AS i;"
)
LOCK = "SELECT id, balance FROM rt_accounts WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE"
WRITE = (
    "WITH moved AS (UPDATE rt_accounts SET balance = balance"
    " + CASE WHEN id = $1::text THEN -$3::bigint ELSE $3::bigint END"
    " WHERE id IN ($1::text, $2::text) RETURNING 1)"
    " INSERT INTO rt_transfers (debit, credit, amount, metadata)"
    " SELECT $1::text, $2::text, $3::bigint, $4::jsonb"
)
METADATA = '{"order": "o_1234"}'
BEGIN = "BEGIN ISOLATION LEVEL READ COMMITTED"

Way = Callable[[str, int], Awaitable[tuple[list[float], float]]]


def _pair(i: int) -> tuple[str, str]:
    return f"a{i % ACCOUNTS + 1}", f"a{(i + 7) % ACCOUNTS + 1}"


async def four_round_trips(url: str, n: int) -> tuple[list[float], float]:
    conn = await asyncpg.connect(url)
    latencies: list[float] = []
    cpu = time.thread_time()
    for i in range(n):
        debit, credit = _pair(i)
        started = time.perf_counter()
        async with conn.transaction(isolation="read_committed"):
            await conn.fetch(LOCK, [debit, credit])
            await conn.execute(WRITE, debit, credit, 1, METADATA)
        latencies.append(time.perf_counter() - started)
    cpu = time.thread_time() - cpu
    await conn.close()
    return latencies, cpu


async def begin_ahead(url: str, n: int) -> tuple[list[float], float]:
    conn = await asyncpg.connect(url)
    await conn.execute(BEGIN)
    latencies: list[float] = []
    cpu = time.thread_time()
    for i in range(n):
        debit, credit = _pair(i)
        started = time.perf_counter()
        await conn.fetch(LOCK, [debit, credit])
        await conn.execute(WRITE, debit, credit, 1, METADATA)
        await conn.execute(f"COMMIT; {BEGIN}")
        latencies.append(time.perf_counter() - started)
    cpu = time.thread_time() - cpu
    await conn.execute("ROLLBACK")
    await conn.close()
    return latencies, cpu


async def psycopg_pipeline(url: str, n: int) -> tuple[list[float], float]:
    # Autocommit: psycopg would otherwise send a BEGIN of its own, and wait for
    # it, before the first statement (a round trip more than the pipeline's two).
    conn = await psycopg.AsyncConnection.connect(url, prepare_threshold=0, autocommit=True)
    lock = LOCK.replace("$1::text[]", "%(ids)s")
    write = WRITE.replace("$1", "%(a)s").replace("$2", "%(b)s").replace("$3", "%(n)s")
    write = write.replace("$4", "%(m)s")
    latencies: list[float] = []
    cpu = time.thread_time()
    for i in range(n):
        debit, credit = _pair(i)
        started = time.perf_counter()
        async with conn.pipeline() as pipeline:
            cur = conn.cursor()
            await cur.execute(BEGIN)
            await cur.execute(lock, {"ids": [debit, credit]})
            await pipeline.sync()
            await cur.fetchall()
            await cur.execute(write, {"a": debit, "b": credit, "n": 1, "m": METADATA})
            await cur.execute("COMMIT")
            await pipeline.sync()
        latencies.append(time.perf_counter() - started)
    cpu = time.thread_time() - cpu
    await conn.close()
    return latencies, cpu


WAYS: list[tuple[str, Way]] = [
    ("asyncpg, 4 round trips", four_round_trips),
    ("asyncpg, BEGIN ahead (3)", begin_ahead),
    ("psycopg pipeline (2)", psycopg_pipeline),
]


async def measure(url: str, n: int, rounds: int) -> None:
    conn = await asyncpg.connect(url)
    await conn.execute(SET_UP)
    await conn.close()
    for round_ in range(1, rounds + 1):
        print(f"round {round_}, {n:,} transactions each:")
        for name, way in WAYS:
            latencies, cpu = await way(url, n)
            latencies.sort()
            p50, p99 = latencies[n // 2], latencies[int(n * 0.99)]
            print(
                f"  {name:<26} p50 {p50 * 1e6:5.0f} µs   p99 {p99 * 1e6:5.0f} µs"
                f"   client CPU {cpu / n * 1e6:5.1f} µs/transaction"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transactions", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    server = postgres.Server(ADMIN_URL)
    database = server.create_database("tally_bench_round_trips")
    try:
        uvloop.run(measure(server.url_for(database), args.transactions, args.rounds))
    finally:
        server.drop_database(database)


if __name__ == "__main__":
    main()

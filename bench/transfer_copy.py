"""COPY against the write statement's INSERT for a batch's transfer rows (PostgreSQL).

Issue 10 named ``COPY`` as a lever for the batch path. The writer inserts a
batch's transfers as one part of its write statement, ``INSERT … SELECT`` over
one JSON parameter (``jsonb_array_elements``). This times that against asyncpg's
``copy_records_to_table`` (binary COPY), for ``--batch`` rows of the real
``transfers`` table with all its indexes, each in a transaction of its own:
the wall time (the database's work and the round trips) and Tally's CPU
(encoding the rows: msgspec's JSON, as the writer does, or COPY's binary
format). Alternating, medians of ``--rounds``.

    .venv/bin/python bench/transfer_copy.py

COPY cannot be a part of the write statement: the rows' ``sequence`` comes from
the tenant's counter, which that statement advances, so COPY would also cost a
round trip more per batch and hold the tenant's lock across it.

Only 127.0.0.1 is contacted; the database is dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from typing import Any

import asyncpg
import msgspec
from harness import postgres

from tally.storage.rows import TRANSFER_WRITE_COLUMNS

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def transfer_rows(first: int, count: int, types: dict[str, str]) -> list[list[Any]]:
    """``count`` rows in TRANSFER_WRITE_COLUMNS' order, ids from ``first``; a
    column not named here holds a number, or text if its type is text."""
    rows = []
    for n in range(first, first + count):
        values: dict[str, Any] = {
            "id": f"trf_{n}",
            "sequence": n,
            "debit_account_id": f"a{random.randrange(1000)}",
            "credit_account_id": f"b{random.randrange(1000)}",
            "currency": "USD",
            "pending": False,
            "status": "posted",
            "metadata": "{}",
        }
        rows.append(
            [
                values.get(name, "x" if types[name] == "text" else random.randrange(1, 1_000_000))
                for name in COLUMNS
            ]
        )
    return rows


COLUMNS = list(TRANSFER_WRITE_COLUMNS)


async def measure(url: str, batch: int, rounds: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        types = dict(
            await conn.fetch(
                "SELECT column_name, data_type FROM information_schema.columns"
                " WHERE table_name = 'transfers'"
            )
        )
        casts = ", ".join(f"(e->>{i})::{types[name]}" for i, name in enumerate(COLUMNS))
        insert = (
            f"INSERT INTO transfers (tenant_id, {', '.join(COLUMNS)})"
            f" SELECT 't', {casts} FROM jsonb_array_elements($1::jsonb) AS e"
        )
        timings: dict[str, list[tuple[float, float]]] = {"INSERT from JSON": [], "COPY": []}
        first = 0
        for _ in range(rounds):
            for how, samples in timings.items():
                rows = transfer_rows(first, batch, types)
                first += batch
                wall, cpu = time.perf_counter(), time.process_time()
                async with conn.transaction():
                    if how == "COPY":
                        await conn.copy_records_to_table(
                            "transfers",
                            records=[("t", *row) for row in rows],
                            columns=["tenant_id", *COLUMNS],
                        )
                    else:
                        await conn.execute(insert, msgspec.json.encode(rows).decode())
                samples.append((time.perf_counter() - wall, time.process_time() - cpu))
        print(f"{batch:,} transfer rows a transaction, medians of {rounds} rounds:")
        for how, samples in timings.items():
            wall_ms = statistics.median(s[0] for s in samples) * 1e3
            cpu_ms = statistics.median(s[1] for s in samples) * 1e3
            print(f"  {how:<17} wall {wall_ms:6.2f} ms   Tally CPU {cpu_ms:5.2f} ms")
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=12)
    args = parser.parse_args()
    with postgres.Server(ADMIN_URL).migrated_database("tally_bench_copy") as url:
        asyncio.run(measure(url, args.batch, args.rounds))


if __name__ == "__main__":
    main()

"""What a list of ids costs Tally's CPU to send: a ``text[]`` parameter against one JSON text.

    .venv/bin/python bench/id_lists.py [--ids 3000] [--rounds 3]

The writer sends each batch's account and transfer ids (about three a transfer)
to PostgreSQL as a list. asyncpg encodes a ``text[]`` element by element in its
protocol code; msgspec writes the same list as one JSON text in one C call, and
PostgreSQL reads it back with ``json_array_elements_text`` (storage.postgres._ids).
This times both on one connection, in turns: the client's thread CPU per id,
best of 30 statements a way per round (encoding, sending and reading one small
answer; the statement does nothing with the list but count it). Only
127.0.0.1 is contacted; nothing is written.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import asyncpg
import msgspec

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
REPETITIONS = 30


async def best_cpu_per_id(conn: asyncpg.Connection, ids: list[str], as_json: bool) -> float:
    sql = (
        "SELECT json_array_length($1::text::json)" if as_json else "SELECT cardinality($1::text[])"
    )
    best = float("inf")
    for _ in range(REPETITIONS):
        started = time.thread_time()
        argument: object = msgspec.json.encode(ids).decode() if as_json else ids
        assert await conn.fetchval(sql, argument) == len(ids)
        best = min(best, time.thread_time() - started)
    return best * 1e6 / len(ids)


async def main(args: argparse.Namespace) -> None:
    conn = await asyncpg.connect(args.postgres_url)
    try:
        ids = [f"acc_{n:026d}" for n in range(args.ids)]
        for round_n in range(1, args.rounds + 1):
            array = await best_cpu_per_id(conn, ids, as_json=False)
            text = await best_cpu_per_id(conn, ids, as_json=True)
            print(
                f"round {round_n}: text[] {array:.3f} µs per id, JSON text {text:.3f} µs per id "
                f"(client thread CPU, {args.ids:,} ids, best of {REPETITIONS})"
            )
    finally:
        await conn.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ids", type=int, default=3000, help="ids per statement (3000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (3)")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("TALLY_BENCH_POSTGRES_URL") or DEFAULT_POSTGRES_URL,
    )
    asyncio.run(main(parser.parse_args()))

"""The writer's statements find rows by primary-key probes, whatever the statistics.

PostgreSQL plans from statistics that lag a table growing by thousands of rows
a second. Planned from such statistics, a plain join of the batch's ids to a
tenant's transfers became a hash of every transfer of the tenant, every batch
(docs/performance.md): correct, and slower with every row the ledger gained.
Here the statistics are made stale on purpose (ANALYZE on empty tables,
autovacuum off, then thousands of rows) and every statement the writer sends
is explained: no node may scan, hash or sort the tenant's rows.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest

from tally.storage import postgres as pg
from tests.conftest import fresh_postgres_database

TENANT = "ten_plans"
ROWS = 3_000
TABLES = ("accounts", "transfers", "idempotency_keys")
# Nodes that read a table other than by probing one key.
SCANNING = {"Seq Scan", "Bitmap Heap Scan", "Hash Join", "Merge Join"}


@pytest.fixture(scope="module")
def stale_url() -> Iterator[str]:
    yield from fresh_postgres_database()


async def _stale_ledger(conn: asyncpg.Connection) -> None:
    for table in TABLES:
        await conn.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
        await conn.execute(f"ANALYZE {table}")  # empty: the statistics say so from now on
    await conn.execute(
        "INSERT INTO tenants (id, name, created_at_us) VALUES ($1, 'plans', 0)", TENANT
    )
    await conn.execute(
        "INSERT INTO accounts (tenant_id, id, sequence, currency, normal_balance,"
        " debits_must_not_exceed_credits, credits_must_not_exceed_debits, status, metadata,"
        " version, created_at_us, updated_at_us)"
        " SELECT $1, 'a' || i, i, 'USD', 'credit', false, false, 'open', '{}', 1, 0, 0"
        " FROM generate_series(1, $2) AS i",
        TENANT,
        ROWS,
    )
    await conn.execute(
        "INSERT INTO transfers (tenant_id, id, sequence, debit_account_id, credit_account_id,"
        " amount, currency, pending, status, metadata, created_at_us)"
        " SELECT $1, 't' || i, $2 + i, 'a1', 'a2', 1, 'USD', true, 'pending', '{}', 0"
        " FROM generate_series(1, $2) AS i",
        TENANT,
        ROWS,
    )
    await conn.execute(
        "INSERT INTO idempotency_keys (tenant_id, key, fingerprint, status_code, headers, body,"
        " created_at_us, expires_at_us)"
        " SELECT $1, 'k' || i, 'f', 201, '[]', ''::bytea, 0, 1 FROM generate_series(1, $2) AS i",
        TENANT,
        ROWS,
    )


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


async def _plan(conn: asyncpg.Connection, sql: str, *args: Any) -> list[dict[str, Any]]:
    """The plan PostgreSQL runs the statement by (custom, as the writer's session plans)."""
    await conn.execute("SET plan_cache_mode = force_custom_plan")
    (row,) = await conn.fetch(f"EXPLAIN (FORMAT JSON) {sql}", *args)
    return list(_nodes(json.loads(row[0])[0]["Plan"]))


def _probes_only(nodes: list[dict[str, Any]]) -> None:
    for node in nodes:
        assert node["Node Type"] not in SCANNING, (
            node["Node Type"],
            node.get("Relation Name"),
            node.get("Filter"),
        )
        if node.get("Relation Name") in TABLES and node["Node Type"] == "Index Scan":
            assert node["Index Name"].endswith("_pkey"), node
            assert " = " in node["Index Cond"] and "id" in node["Index Cond"], node


def test_every_writer_statement_probes_by_primary_key_on_stale_statistics(
    stale_url: str,
) -> None:
    ids = [f"a{i}" for i in range(1, 65)]
    reads = [f"t{i}" for i in range(1, 65)]
    account = ["a1", 1, "USD", "credit", False, False, "open", "{}", 2, 0, 0, 0, 0, 0, 0]
    transfer = ["t1", "posted", 5]

    async def main() -> None:
        conn = await asyncpg.connect(stale_url)
        try:
            await _stale_ledger(conn)
            async with conn.transaction():
                _probes_only(await _plan(conn, pg._LOCK_AND_READ, TENANT, ids, reads))
                _probes_only(await _plan(conn, pg._LOCK_ACCOUNTS, TENANT, ids))
                _probes_only(await _plan(conn, pg._SELECT_TRANSFERS, TENANT, reads))
                keys = [f"k{i}" for i in range(1, 65)]
                _probes_only(await _plan(conn, pg._SELECT_KEYS, [TENANT] * len(keys), keys))
                write = pg._write_sql(("accounts_updated", "transfers_updated"))
                documents = [json.dumps([account] * 64), json.dumps([transfer] * 64)]
                nodes = await _plan(conn, write, TENANT, 0, *documents)
                _probes_only(nodes)
                # The updates take each row at the address its probe found.
                assert sum(n["Node Type"] == "Tid Scan" for n in nodes) == 2, nodes
        finally:
            await conn.close()

    asyncio.run(main())

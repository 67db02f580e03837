"""The writer's statements find rows by primary-key probes, whatever the statistics.

PostgreSQL plans from statistics that lag a table growing by thousands of rows
a second. Planned from such statistics, a plain join of the batch's ids to a
tenant's transfers became a hash of every transfer of the tenant, every batch
(docs/performance.md): correct, and slower with every row the ledger gained.
Here the statistics are made stale on purpose (ANALYZE on empty tables,
autovacuum off, then thousands of rows) and every statement the writer sends
is explained, planned both ways the writer's session plans it (a generic plan
for small batches, a custom one for large: postgres._WriteTx): no node may
scan, hash or sort the tenant's rows.

Then the writer's own session is asked what it did: which statements ran on a
generic plan and which on custom ones, and that a generic plan is remade after
its lifetime rather than kept from when the tables were empty: asyncpg's
statements, and the write statements the writer prepares by name to send with
their COMMIT (postgres._prepared).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest

from tally.config import Settings
from tally.core import CreateAccount, CreateTransfer, Status
from tally.ledger.transaction import Job, JobResult, execute
from tally.storage import make_store
from tally.storage import postgres as pg
from tests.conftest import create_tenant, fresh_postgres_database

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


async def _plans(conn: asyncpg.Connection, sql: str, *args: Any) -> list[dict[str, Any]]:
    """The nodes of both plans PostgreSQL may run the statement by in the writer's
    session: a custom one (for these values) and the generic one."""
    nodes: list[dict[str, Any]] = []
    for mode in ("force_custom_plan", "force_generic_plan"):
        await conn.execute(f"SET plan_cache_mode = {mode}")
        statement = await conn.prepare(f"EXPLAIN (FORMAT JSON) {sql}")
        (row,) = await statement.fetch(*args)
        nodes += _nodes(json.loads(row[0])[0]["Plan"])
    return nodes


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
    # The ids as the writer sends them: a JSON array each (storage.postgres._ids).
    ids = json.dumps([f"a{i}" for i in range(1, 65)])
    reads = json.dumps([f"t{i}" for i in range(1, 65)])
    account = ["a1", 1, "USD", "credit", False, False, "open", "{}", 2, 0, 0, 0, 0, 0, 0]
    transfer = ["t1", "posted", 5]

    async def main() -> None:
        conn = await asyncpg.connect(stale_url)
        try:
            await _stale_ledger(conn)
            async with conn.transaction():
                _probes_only(await _plans(conn, pg._LOCK_AND_READ, TENANT, ids, reads))
                _probes_only(await _plans(conn, pg._LOCK_ACCOUNTS, TENANT, ids))
                _probes_only(await _plans(conn, pg._SELECT_TRANSFERS, TENANT, reads))
                keys = [f"k{i}" for i in range(1, 65)]
                tenants = json.dumps([TENANT] * len(keys))
                _probes_only(await _plans(conn, pg._SELECT_KEYS, tenants, json.dumps(keys)))
                _probes_only(await _plans(conn, pg._DELETE_KEYS, tenants, json.dumps(keys)))
                write = pg._write_sql(("accounts_updated", "transfers_updated"))
                documents = [json.dumps([account] * 64), json.dumps([transfer] * 64)]
                nodes = await _plans(conn, write, TENANT, 0, *documents)
                _probes_only(nodes)
                # The updates take each row at the address its probe found (in
                # each of the two plans).
                assert sum(n["Node Type"] == "Tid Scan" for n in nodes) == 4, nodes
                # A batch from the writer's memory (decisions/0011): its check of
                # the accounts and of the transfers taken not to exist, alone and
                # in the write.
                known = (json.dumps([[f"a{i}", 1] for i in range(1, 65)]), reads)
                _probes_only(await _plans(conn, pg._KNOWN_ONLY, TENANT, *known))
                checked = pg._write_sql(("accounts_updated", "transfers_updated"), known=True)
                _probes_only(await _plans(conn, checked, TENANT, 0, *documents, *known))
        finally:
            await conn.close()

    asyncio.run(main())


async def _write(store: Any, job: Job) -> JobResult:
    (result,) = await execute(store, [job], 0, retry_after_seconds=1)
    assert all(o.status is Status.CREATED for o in result.outcomes), result
    return result


async def _prepared(store: Any) -> list[asyncpg.Record]:
    """The writer session's prepared statements: only that session can see them."""
    conn = await store._writer_connection()
    return list(
        await conn.fetch(
            "SELECT name, statement, generic_plans, custom_plans FROM pg_prepared_statements"
        )
    )


def _lock_and_read(prepared: list[asyncpg.Record]) -> asyncpg.Record:
    (statement,) = [p for p in prepared if p["statement"] == pg._LOCK_AND_READ]
    return statement


def test_small_batches_run_on_a_generic_plan_and_large_ones_plan_for_their_values(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant_id, _ = create_tenant(postgres_url)
    # Long enough that both batches run on the same prepared statement.
    monkeypatch.setattr(pg, "GENERIC_PLAN_LIFETIME_SECONDS", 600)
    large = [CreateAccount(f"plan{i}", "USD") for i in range(pg.CUSTOM_PLANS_FROM_ROWS)]
    # Accounts another process made: this one does not remember them, so the
    # transfer reads them (decisions/0011).
    others = [CreateAccount("plan-o0", "USD"), CreateAccount("plan-o1", "USD")]
    small = [CreateTransfer("plan-t1", "plan-o0", "plan-o1", 5)]

    async def scenario() -> list[asyncpg.Record]:
        other = make_store(Settings(database_url=postgres_url))
        await other.open()
        try:
            await _write(other, Job(tenant_id, others))
        finally:
            await other.close()
        store = make_store(Settings(database_url=postgres_url))
        await store.open()
        try:
            await _write(store, Job(tenant_id, large))
            for i in range(3):
                await _write(store, Job(tenant_id, [CreateAccount(f"plan-s{i}", "USD")]))
            await _write(store, Job(tenant_id, small))
            return await _prepared(store)
        finally:
            await store.close()

    statement = _lock_and_read(asyncio.run(scenario()))
    assert statement["custom_plans"] == 1, statement  # the large batch
    # Each small one: the large batch's SET LOCAL ended with its transaction.
    assert statement["generic_plans"] == 4, statement


def test_a_generic_plan_is_remade_after_its_lifetime(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A plan made while the tables were empty must not outlive their growth.
    tenant_id, _ = create_tenant(postgres_url)
    # asyncpg counts a statement's lifetime from when it was prepared, and drops
    # an expired one before the next query: the second write's statement must
    # outlive the rest of that write and the look at pg_prepared_statements,
    # which took over 0.2 s on a loaded, slow machine.
    lifetime = 1.0
    monkeypatch.setattr(pg, "GENERIC_PLAN_LIFETIME_SECONDS", lifetime)

    async def scenario() -> tuple[list[asyncpg.Record], list[asyncpg.Record]]:
        store = make_store(Settings(database_url=postgres_url))
        await store.open()
        try:
            await _write(store, Job(tenant_id, [CreateAccount("life0", "USD")]))
            before = await _prepared(store)
            await asyncio.sleep(lifetime * 1.5)
            await _write(store, Job(tenant_id, [CreateAccount("life1", "USD")]))
            return before, await _prepared(store)
        finally:
            await store.close()

    before, after = asyncio.run(scenario())
    for statement in (_lock_and_read, _write_statement):
        was, now = statement(before), statement(after)
        assert now["name"] != was["name"], (was, now)
        assert now["generic_plans"] == 1 and now["custom_plans"] == 0, now


def _write_statement(prepared: list[asyncpg.Record]) -> asyncpg.Record:
    """The one write statement prepared by name: an expired one is freed."""
    (statement,) = [p for p in prepared if p["name"].startswith("tally_write_")]
    return statement

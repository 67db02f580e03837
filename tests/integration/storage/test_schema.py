"""The schema: ``migrate`` applies what is missing and says what; ``serve`` refuses a
database whose schema is not this version's (tests/e2e/test_cli.py runs both
commands)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from alembic import command

from tally.audit.chain import chain_hash, seal, verify
from tally.audit.context import FIELDS, INSERT_SQL
from tally.audit.log import AuditLog
from tally.config import Settings
from tally.storage import make_store
from tally.storage.records import BalanceRecord
from tally.storage.schema import (
    SchemaNotReady,
    alembic_config,
    migrate,
    require_up_to_date,
    sqlalchemy_url,
    state,
)
from tests.conftest import BACKENDS, POSTGRES_ADMIN_URL, REQUIRE_POSTGRES, _with_database


@pytest.fixture(params=BACKENDS)
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database no Tally has migrated."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    name = f"tally_test_empty_{secrets.token_hex(4)}"
    try:
        admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        if REQUIRE_POSTGRES:
            pytest.fail(f"PostgreSQL is required but unreachable: {exc}")
        pytest.skip(f"PostgreSQL unreachable: {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _with_database(POSTGRES_ADMIN_URL, name)
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_migrate_applies_every_revision_once_and_says_which(empty_database: str) -> None:
    settings = Settings(database_url=empty_database)
    before = state(settings)
    assert before.current is None and not before.up_to_date
    applied = migrate(settings)
    assert (
        [r.id for r in applied]
        == [r.id for r in before.missing]
        == ["0001", "0002", "0003", "0004", "0005", "0006", "0007", "0008", "0009", "0010"]
    )
    assert all(r.summary for r in applied)
    after = state(settings)
    assert after.up_to_date and after.current == after.head and after.missing == ()
    assert migrate(settings) == []


# A ledger written before 0007: a posted transfer x, then a pending p that
# expired. Each account has three records: x's creation, p's creation, p's expiry.
_BEFORE_0007 = [
    "INSERT INTO tenants (id, name, created_at_us, event_sequence) VALUES ('t', 't', 1, 5)",
    *(
        "INSERT INTO accounts (tenant_id, id, sequence, currency, normal_balance,"
        " debits_must_not_exceed_credits, credits_must_not_exceed_debits, status, metadata,"
        f" version, debits_pending, debits_posted, credits_pending, credits_posted,"
        f" created_at_us, updated_at_us) VALUES ('t', '{a}', {n}, 'USD', 'credit', false, false,"
        f" 'open', '{{}}', 3, {totals}, 10, 40)"
        for a, n, totals in (("a", 1, "0, 7, 0, 0"), ("b", 2, "0, 0, 0, 7"))
    ),
    "INSERT INTO transfers (tenant_id, id, sequence, debit_account_id, credit_account_id,"
    " amount, currency, pending, status, timeout_seconds, expires_at_us, pending_id,"
    " resolved_at_us, metadata, created_at_us) VALUES"
    " ('t', 'x', 3, 'a', 'b', 7, 'USD', false, 'posted', NULL, NULL, NULL, NULL, '{}', 20),"
    " ('t', 'p', 4, 'a', 'b', 5, 'USD', true, 'expired', 1, 31, NULL, 40, '{}', 30)",
    "INSERT INTO account_balances (tenant_id, account_id, version, transfer_id, debits_pending,"
    " debits_posted, credits_pending, credits_posted, created_at_us) VALUES"
    " ('t', 'a', 1, 'x', 0, 7, 0, 0, 20), ('t', 'b', 1, 'x', 0, 0, 0, 7, 20),"
    " ('t', 'a', 2, 'p', 5, 7, 0, 0, 30), ('t', 'b', 2, 'p', 0, 0, 5, 7, 30),"
    " ('t', 'a', 3, 'p', 0, 7, 0, 0, 40), ('t', 'b', 3, 'p', 0, 0, 0, 7, 40)",
]
_HISTORY_A = [
    BalanceRecord(3, "p", 0, 7, 0, 0, 40),
    BalanceRecord(2, "p", 5, 7, 0, 0, 30),
    BalanceRecord(1, "x", 0, 7, 0, 0, 20),
]


def test_0007_moves_each_transfers_balances_onto_its_row_and_answers_the_same(
    empty_database: str,
) -> None:
    settings = Settings(database_url=empty_database)
    config = alembic_config(settings)
    command.upgrade(config, "0006")
    engine = sa.create_engine(sqlalchemy_url(empty_database))
    try:
        with engine.begin() as conn:
            for statement in _BEFORE_0007:
                conn.execute(sa.text(statement))
        migrate(settings)
        with engine.connect() as conn:
            left = conn.execute(
                sa.text("SELECT account_id, version FROM account_balances ORDER BY 1, 2")
            ).all()
            moved = conn.execute(
                sa.text(
                    "SELECT id, debit_version, debit_debits_posted, credit_version,"
                    " credit_credits_pending, credit_credits_posted FROM transfers ORDER BY id"
                )
            ).all()
        # Only the expiry, which has no transfer row of its own, stays a row.
        assert [tuple(r) for r in left] == [("a", 3), ("b", 3)]
        assert [tuple(r) for r in moved] == [("p", 2, 7, 2, 5, 7), ("x", 1, 7, 1, 0, 7)]

        async def read() -> None:
            store = make_store(settings)
            await store.open()
            try:
                assert await store.list_balances("t", "a", before=None, limit=10) == _HISTORY_A
                # A cursor made before 0007 named the version alone.
                older = await store.list_balances("t", "a", before=(None, 3), limit=10)
                assert older == _HISTORY_A[1:]
                assert await store.list_balances("t", "a", before=(30, 2), limit=10) == [
                    _HISTORY_A[2]
                ]
                assert await store.balance_at("t", "a", 35) == _HISTORY_A[1]
                assert await store.first_balances("t", ["b", "a"], 2) == [
                    ("a", _HISTORY_A[0]),
                    ("a", _HISTORY_A[1]),
                    ("b", BalanceRecord(3, "p", 0, 0, 0, 7, 40)),
                    ("b", BalanceRecord(2, "p", 0, 0, 5, 7, 30)),
                ]
            finally:
                await store.close()

        asyncio.run(read())
        # And back: the rows return to account_balances as they were.
        command.downgrade(config, "0006")
        with engine.connect() as conn:
            back = conn.execute(
                sa.text(
                    "SELECT account_id, version, transfer_id, debits_pending, debits_posted,"
                    " credits_pending, credits_posted, created_at_us FROM account_balances"
                    " ORDER BY 1, 2"
                )
            ).all()
        assert len(back) == 6
        assert [tuple(r[1:]) for r in back if r[0] == "a"] == [
            (r.version, r.transfer_id, r.debits_pending, r.debits_posted, r.credits_pending,
             r.credits_posted, r.created_at_us)
            for r in reversed(_HISTORY_A)
        ]  # fmt: skip
    finally:
        engine.dispose()


def _audit_row(n: int) -> tuple[object, ...]:
    """An audit_events row in the order of FIELDS: request ``r{n}``."""
    return ("t", 1_000 + n, "api_key", "k", "createTransfer", f"x{n}", 201, None, f"r{n}", None)


def test_0008_keeps_the_sealed_chain_and_seals_the_rest_after_it(empty_database: str) -> None:
    """Before 0008 a seal was an update of the row; rows sealed then keep their
    places, and rows not sealed yet (here 3, committed after 4 was sealed, and 5)
    are sealed after them, in id order, then new rows after those."""
    settings = Settings(database_url=empty_database)
    config = alembic_config(settings)
    command.upgrade(config, "0007")
    engine = sa.create_engine(sqlalchemy_url(empty_database))
    columns = ", ".join(FIELDS)
    previous = ""
    try:
        with engine.begin() as conn:  # ids 1 to 5
            for n in range(1, 6):
                values = ", ".join(f":v{i}" for i in range(len(FIELDS)))
                conn.execute(
                    sa.text(f"INSERT INTO audit_events ({columns}) VALUES ({values})"),
                    {f"v{i}": v for i, v in enumerate(_audit_row(n))},
                )
            for seq, n in enumerate((1, 2, 4), start=1):
                previous = chain_hash(previous, seq, list(_audit_row(n)))
                conn.execute(
                    sa.text(
                        "UPDATE audit_events SET chain_seq = :s, chain_hash = :h WHERE id = :n"
                    ),
                    {"s": seq, "h": previous, "n": n},
                )
            conn.execute(
                sa.text("UPDATE audit_chain SET head_seq = 3, head_hash = :h WHERE id = 1"),
                {"h": previous},
            )
        migrate(settings)

        async def work() -> dict[str, int | None]:
            store = make_store(settings)
            await store.open()
            try:
                assert await seal(store, 1) == 1  # 3, then the mark is past it
                assert await seal(store, 1000) >= 1
                async with store.transaction() as tx:
                    for n in (6, 7):
                        await tx.execute(INSERT_SQL, *_audit_row(n))
                while await seal(store, 1000):
                    pass
                verdict = await verify(store)
                assert verdict.ok and (verdict.sealed, verdict.unsealed) == (7, 0), verdict
                page = await AuditLog(store).list("t", limit=10, cursor=None)
                return {r.request_id or "": r.chain_seq for r in page.items}
            finally:
                await store.close()

        places = asyncio.run(work())
        assert places == {"r1": 1, "r2": 2, "r4": 3, "r3": 4, "r5": 5, "r6": 6, "r7": 7}
        # And back: each row carries its place again.
        command.downgrade(config, "0007")
        with engine.connect() as conn:
            back = conn.execute(
                sa.text("SELECT request_id, chain_seq FROM audit_events ORDER BY id")
            ).all()
        assert dict(tuple(r) for r in back) == places
    finally:
        engine.dispose()


def test_after_0007_what_an_older_process_still_writes_is_read_once(
    empty_database: str,
) -> None:
    """During a rolling update a process from before 0007 may still write: its
    transfer rows carry no totals, and it writes the records to account_balances.
    Read from there, each once, in the same order."""
    settings = Settings(database_url=empty_database)
    migrate(settings)
    engine = sa.create_engine(sqlalchemy_url(empty_database))
    try:
        with engine.begin() as conn:
            for statement in _BEFORE_0007:  # as a 0006 process writes them
                conn.execute(sa.text(statement))
    finally:
        engine.dispose()

    async def read() -> None:
        store = make_store(settings)
        await store.open()
        try:
            assert await store.list_balances("t", "a", before=None, limit=10) == _HISTORY_A
            assert await store.balance_at("t", "a", 25) == _HISTORY_A[2]
            assert await store.first_balances("t", ["a"], 10) == [("a", r) for r in _HISTORY_A]
        finally:
            await store.close()

    asyncio.run(read())


def test_an_unmigrated_database_is_refused_naming_the_fix(empty_database: str) -> None:
    settings = Settings(database_url=empty_database)
    with pytest.raises(SchemaNotReady) as refused:
        require_up_to_date(settings)
    assert "tally migrate" in str(refused.value)
    migrate(settings)
    require_up_to_date(settings)


def test_an_unreachable_database_is_not_ready() -> None:
    with pytest.raises(SchemaNotReady):
        state(Settings(database_url="postgresql://postgres@127.0.0.1:1/nowhere"))


# -- behind PgBouncer (TALLY_DB_PGBOUNCER) ------------------------------------------------


def test_migrations_refuse_to_run_through_pgbouncer_without_a_direct_url() -> None:
    settings = Settings(database_url="postgresql://tally@127.0.0.1:6432/tally", db_pgbouncer=True)
    assert settings.session_database_url is None
    with pytest.raises(SchemaNotReady, match="TALLY_DB_DIRECT_URL"):
        migrate(settings)


def test_the_direct_url_is_where_session_work_goes() -> None:
    direct = "postgresql://tally@127.0.0.1:5432/tally"
    behind = Settings(
        database_url="postgresql://tally@127.0.0.1:6432/tally",
        db_pgbouncer=True,
        db_direct_url=direct,
    )
    assert behind.session_database_url == direct
    plain = Settings(database_url=direct)
    assert plain.session_database_url == direct


def test_a_direct_url_that_is_not_postgresql_is_refused() -> None:
    with pytest.raises(ValueError, match="TALLY_DB_DIRECT_URL"):
        Settings(db_direct_url="sqlite:///x.db")


def test_a_multi_host_url_reaches_sqlalchemy_as_repeated_hosts() -> None:
    url = "postgresql://tally:pw@10.0.0.1:5432,10.0.0.2:5433/ledger?target_session_attrs=read-write"
    assert sqlalchemy_url(url) == (
        "postgresql+psycopg://tally:pw@/ledger?host=10.0.0.1:5432&host=10.0.0.2:5433"
        "&target_session_attrs=read-write"
    )
    one = "postgresql://tally@10.0.0.1:5432/ledger"
    assert sqlalchemy_url(one) == "postgresql+psycopg://tally@10.0.0.1:5432/ledger"

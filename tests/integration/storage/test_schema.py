"""The schema: ``migrate`` applies what is missing and says what; ``serve`` refuses a
database whose schema is not this version's (tests/e2e/test_cli.py runs both
commands)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tally.config import Settings
from tally.storage.schema import (
    SchemaNotReady,
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
        == ["0001", "0002", "0003", "0004", "0005", "0006"]
    )
    assert all(r.summary for r in applied)
    after = state(settings)
    assert after.up_to_date and after.current == after.head and after.missing == ()
    assert migrate(settings) == []


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

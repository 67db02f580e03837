"""Fixtures shared by every layer of tests.

PostgreSQL tests run against the real server on this machine. Each test run
creates its own database (``tally_test_<random>``) and drops it at the end, so
runs never collide; inside a run, each test makes its own tenant, so tests never
see each other's accounts. With ``TALLY_TEST_REQUIRE_POSTGRES=1`` (CI) an
unreachable PostgreSQL fails the run instead of skipping its tests.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tally.config import Settings
from tally.storage.schema import migrate

# In-process apps run their background loops on a FakeClock that tests move days
# ahead, while other tests' servers write to the same database on the wall
# clock. The idempotency purge deletes every key expired by *its* clock, in every
# tenant: one such purge emptied the crash test's keys (CI: retries after a final
# answer executed again). In production a database has one clock; here the
# in-process apps never purge on their own (tests call the purge directly), and
# servers started by the e2e tests strip TALLY_* from their environment.
os.environ["TALLY_IDEMPOTENCY_PURGE_INTERVAL_SECONDS"] = str(10**9)
# Likewise, in-process apps deliver no webhooks unless a test asks for it
# (webhooks_deliver=True, on a database of its own): a dispatcher joins the
# ring of every process on its database and would take other tests' endpoints.
os.environ["TALLY_WEBHOOKS_DELIVER"] = "false"
# Starlette's TestClient returns a response only once it has ended: an in-process
# event stream ends after this long, so every in-process test (the security
# tables call every route) gets its answer. The e2e servers strip TALLY_* and
# stream as long as production does.
os.environ["TALLY_EVENTS_STREAM_SECONDS_MAX"] = "0.5"

POSTGRES_ADMIN_URL = os.environ.get(
    "TALLY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REQUIRE_POSTGRES = os.environ.get("TALLY_TEST_REQUIRE_POSTGRES") == "1"


def _with_database(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


@pytest.fixture(scope="session")
def shared_postgres_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test run."""
    yield from fresh_postgres_database()


@pytest.fixture(scope="session")
def postgres_url(shared_postgres_url: str) -> str:
    """The run's database (tests/e2e overrides it with one of their own)."""
    return shared_postgres_url


def fresh_postgres_database() -> Iterator[str]:
    """Create and migrate a database, yield its URL, drop it afterwards."""
    name = f"tally_test_{secrets.token_hex(4)}"
    try:
        admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        if REQUIRE_POSTGRES:
            pytest.fail(f"PostgreSQL is required but unreachable: {exc}")
        pytest.skip(f"PostgreSQL unreachable at {POSTGRES_ADMIN_URL}: {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = _with_database(POSTGRES_ADMIN_URL, name)
    migrate(Settings(database_url=url))
    try:
        yield url
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    path: Path = tmp_path_factory.mktemp("sqlite") / "tally.db"
    url = f"sqlite:///{path}"
    migrate(Settings(database_url=url))
    return url


# `make check` (the inner loop) runs on SQLite alone: TALLY_TEST_BACKENDS=sqlite.
BACKENDS = [b for b in os.environ.get("TALLY_TEST_BACKENDS", "sqlite,postgresql").split(",") if b]
assert set(BACKENDS) <= {"sqlite", "postgresql"}, BACKENDS


@pytest.fixture(scope="session", params=BACKENDS)
def database_url(request: pytest.FixtureRequest) -> str:
    """Run the test once on each backend."""
    # Not "postgres_url": tests/e2e overrides that name, and this session-wide value
    # must not depend on which directory's test happened to ask for it first.
    fixture = "sqlite_url" if request.param == "sqlite" else "shared_postgres_url"
    return str(request.getfixturevalue(fixture))


def create_tenant(database_url: str, name: str = "test") -> tuple[str, str]:
    """A new tenant and its API key, made the way `tally tenants create` makes them."""
    from tally.cli.admin import new_tenant

    return asyncio.run(new_tenant(Settings(database_url=database_url), name))


class FakeClock:
    """Real time plus an offset that tests move forward (never back)."""

    def __init__(self) -> None:
        self.offset_us = 0

    def __call__(self) -> int:
        return time.time_ns() // 1000 + self.offset_us

    def advance(self, seconds: float) -> None:
        assert seconds >= 0
        self.offset_us += int(seconds * 1_000_000)

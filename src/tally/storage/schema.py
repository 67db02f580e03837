"""The database schema: bring it up to date with Alembic, or say how far behind it is.

``tally migrate`` applies what is missing and says what it applied. ``tally
serve`` refuses to start on a schema that is not at this version's head (an
empty database, or one an older Tally migrated), because every request would
fail against it: it says so in one line and names ``tally migrate``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import sqlalchemy
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import Script, ScriptDirectory

from tally.config import Settings

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


@dataclass(frozen=True, slots=True)
class Revision:
    id: str
    summary: str  # the first line of the migration's docstring


@dataclass(frozen=True, slots=True)
class SchemaState:
    current: str | None  # None: never migrated
    head: str
    missing: tuple[Revision, ...]  # oldest first; empty when up to date

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


class SchemaNotReady(Exception):
    """The database is unreachable, or its schema is not this version's."""


def sqlalchemy_url(database_url: str) -> str:
    """Our URLs name the database; SQLAlchemy's also name the driver.

    A libpq multi-host URL (``postgresql://u@h1:5432,h2:5432/db?target_session_attrs
    =read-write``, for a replicated cluster: docs/deploy.md) is one SQLAlchemy
    cannot parse; it takes the hosts as repeated ``host`` query parameters instead,
    and hands them to libpq, which tries each in turn."""
    if database_url.startswith("sqlite:///"):
        return database_url
    rest = database_url.split("://", 1)[1]
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    if "," not in hosts:
        return f"postgresql+psycopg://{rest}"
    database, _, query = path.partition("?")
    params = "&".join(f"host={h}" for h in hosts.split(",") if h)
    if query:
        params = f"{params}&{query}"
    return f"postgresql+psycopg://{userinfo}{at}/{database}?{params}"


def _scripts() -> ScriptDirectory:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(config)


def alembic_config(settings: Settings) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # ConfigParser interpolation: a literal % (in a password, say) must be doubled.
    url = sqlalchemy_url(_migration_url(settings)).replace("%", "%%")
    config.set_main_option("sqlalchemy.url", url)
    return config


def state(settings: Settings) -> SchemaState:
    """Where the database's schema stands; SchemaNotReady if it cannot be read."""
    scripts = _scripts()
    head = scripts.get_current_head()
    assert head is not None, "the migrations have a head"
    # Only a read of alembic_version: fine through PgBouncer too.
    engine = sqlalchemy.create_engine(
        sqlalchemy_url(settings.database_url), poolclass=sqlalchemy.pool.NullPool
    )
    try:
        with engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise SchemaNotReady(f"the database cannot be read: {exc.__class__.__name__}") from exc
    finally:
        engine.dispose()
    missing = [_revision(r) for r in scripts.iterate_revisions(head, current)]
    return SchemaState(current, head, tuple(reversed(missing)))


def migrate(settings: Settings) -> list[Revision]:
    """Apply every missing migration (safe to run again); returns what this call
    applied, oldest first (nothing when another process got there first)."""
    config = alembic_config(settings)
    command.upgrade(config, "head")
    scripts = ScriptDirectory.from_config(config)
    return [_revision(scripts.get_revision(r)) for r in config.attributes.get("applied", [])]


def _migration_url(settings: Settings) -> str:
    """Migrations hold a session-level advisory lock from start to end. Through a
    transaction-mode PgBouncer the lock would stay behind on whichever server
    connection took it, and the unlock go to another: refuse, naming the fix."""
    url = settings.session_database_url
    if url is None:
        raise SchemaNotReady(
            "migrations cannot run through PgBouncer in transaction mode "
            "(TALLY_DB_PGBOUNCER=true): set TALLY_DB_DIRECT_URL to PostgreSQL itself"
        )
    return url


def _revision(script: Script | None) -> Revision:
    assert script is not None
    lines = (script.doc or "").strip().splitlines()
    return Revision(script.revision, lines[0] if lines else "")


def require_up_to_date(settings: Settings) -> None:
    """SchemaNotReady, with a message naming the fix, unless the schema is at head."""
    found = state(settings)
    if found.up_to_date:
        return
    if found.current is None:
        raise SchemaNotReady("the database has no Tally schema yet: run `tally migrate` first")
    raise SchemaNotReady(
        f"the database schema is at revision {found.current}, this Tally needs"
        f" {found.head}: run `tally migrate` first"
    )

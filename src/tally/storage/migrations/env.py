"""Alembic environment: one set of migrations for SQLite and PostgreSQL.

SQLAlchemy is used here only to describe and apply the schema; the request path
talks to the databases through asyncpg and sqlite3 directly.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool, text

config = context.config
url = config.get_main_option("sqlalchemy.url")
assert url is not None, "tally.storage.schema sets sqlalchemy.url"
# tally.storage.schema.migrate reports what this run applied.
applied: list[str] = config.attributes.setdefault("applied", [])

connect_args: dict[str, object] = {}
if url.startswith("postgresql"):
    # A migration must never wait forever behind a long transaction, nor hold
    # its locks for long: fail fast and let the operator retry.
    connect_args["options"] = "-c lock_timeout=10000 -c statement_timeout=600000"

engine = create_engine(url, poolclass=pool.NullPool, connect_args=connect_args)
with engine.connect() as connection:
    if url.startswith("postgresql"):
        # Several processes may start at once (`tally serve` migrates on start):
        # one migrates, the others wait here and then find nothing to do.
        connection.execute(text("SELECT pg_advisory_lock(7240511)"))
        connection.commit()
    context.configure(
        connection=connection,
        render_as_batch=url.startswith("sqlite"),
        on_version_apply=lambda ctx, step, heads, run_args: applied.append(
            str(step.up_revision_id)
        ),
    )
    with context.begin_transaction():
        context.run_migrations()
    if url.startswith("postgresql"):
        connection.execute(text("SELECT pg_advisory_unlock(7240511)"))
        connection.commit()

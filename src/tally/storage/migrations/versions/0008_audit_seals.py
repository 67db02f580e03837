"""An audit row's place on the chain is a row of its own, not an update of it.

Every request's audit row was inserted unsealed, then updated by the sealer with
``chain_seq`` and ``chain_hash``. That update touched indexed columns (the unique
``chain_seq``, and the partial index of unsealed rows that found them), so
PostgreSQL wrote a whole new copy of the row and a new entry in every index, and
left the old copy for vacuum: about a quarter of the database's CPU per single
transfer (docs/performance.md). The sealer now inserts a narrow row into
``audit_seals`` (the event's id, its number on the chain, its hash): about a
third of the cost, and nothing left behind.

Without the partial index, the sealer needs another way to find the rows that
are not sealed yet, in an order that a row committed late cannot slip in
before. A row remembers the transaction that wrote it (``txid``, PostgreSQL's
``pg_current_xact_id()``; 0 on SQLite), and the sealer takes rows in
``(txid, id)`` order after a mark it keeps on ``audit_chain`` (through an
index on ``(txid, id)``), and only those of transactions that have finished:
every transaction still running, or yet to start, has a larger id than those
(tally.audit.chain). On SQLite one transaction writes at a time, so ids are
assigned in commit order and ``id`` alone is that order; the table is rebuilt
with AUTOINCREMENT, so that a new row never takes the id (and the seal) of a
deleted one.

Rows sealed before this revision keep their numbers and hashes (moved to
``audit_seals``); rows not sealed yet get ``txid`` 0 and are sealed first, in
id order. ``GET /v1/audit-events`` answers as before. On PostgreSQL the
migration locks the audit tables first, so that no row commits behind the mark
it sets, and copies every seal and builds the index under that lock: its time
grows with the log. As with migration 0007, stop every older process first: an
older sealer and audit list read columns that are gone.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_PG_TXID = "(pg_current_xact_id()::text::bigint)"


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    if postgresql:
        # Nothing may write or seal an audit row while the mark is chosen: a row
        # committed after it, with an id before it, would never be sealed.
        op.execute("LOCK TABLE audit_events, audit_chain IN ACCESS EXCLUSIVE MODE")
    op.create_table(
        "audit_seals",
        sa.Column("event_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("chain_seq", sa.BigInteger, nullable=False, unique=True),
        sa.Column("chain_hash", sa.Text, nullable=False),
    )
    op.execute(
        "INSERT INTO audit_seals (event_id, chain_seq, chain_hash)"
        " SELECT id, chain_seq, chain_hash FROM audit_events WHERE chain_seq IS NOT NULL"
    )
    op.add_column(
        "audit_chain", sa.Column("mark_txid", sa.BigInteger, nullable=False, server_default="0")
    )
    op.add_column(
        "audit_chain", sa.Column("mark_id", sa.BigInteger, nullable=False, server_default="0")
    )
    # Rows before the first unsealed one are all sealed: start there (or past the
    # end), so that the sealer does not walk the sealed history again.
    op.execute(
        "UPDATE audit_chain SET mark_txid = 0, mark_id = COALESCE("
        " (SELECT MIN(id) - 1 FROM audit_events WHERE chain_seq IS NULL),"
        " (SELECT MAX(id) FROM audit_events), 0)"
    )
    op.drop_index("audit_events_unsealed", "audit_events")
    # On SQLite the table is rebuilt, now with AUTOINCREMENT: an id is never used
    # twice, even after the newest rows are deleted, so a new row can never take
    # the id (and so the seal) of a deleted one.
    with op.batch_alter_table("audit_events", table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.add_column(
            sa.Column("txid", sa.BigInteger, nullable=False, server_default=sa.text("0"))
        )
        batch.drop_column("chain_seq")
        batch.drop_column("chain_hash")
    if postgresql:
        op.execute(f"ALTER TABLE audit_events ALTER COLUMN txid SET DEFAULT {_PG_TXID}")
        # SQLite takes rows by id alone (its txid is always 0): no index there.
        op.create_index("audit_events_seal_order", "audit_events", ["txid", "id"])


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("audit_events_seal_order", "audit_events")
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_column("txid")
        batch.add_column(sa.Column("chain_seq", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("chain_hash", sa.Text, nullable=True))
    op.execute(
        "UPDATE audit_events SET chain_seq = (SELECT s.chain_seq FROM audit_seals AS s"
        " WHERE s.event_id = audit_events.id), chain_hash = (SELECT s.chain_hash"
        " FROM audit_seals AS s WHERE s.event_id = audit_events.id)"
    )
    with op.batch_alter_table("audit_events") as batch:
        batch.create_unique_constraint("audit_events_chain_seq_key", ["chain_seq"])
    op.create_index(
        "audit_events_unsealed",
        "audit_events",
        ["id"],
        postgresql_where=sa.text("chain_seq IS NULL"),
        sqlite_where=sa.text("chain_seq IS NULL"),
    )
    with op.batch_alter_table("audit_chain") as batch:
        batch.drop_column("mark_id")
        batch.drop_column("mark_txid")
    op.drop_table("audit_seals")

"""A tenant's commits announce their events only while some process listens.

Every write with events sent ``NOTIFY tally_events`` from its write statement,
so that the live streams and the webhook dispatcher of the other processes
read at once. PostgreSQL delivers such a message to every listening session,
whether or not any process has a stream open for that tenant: each commit woke
every process's listener connection, its backend and its event loop. With one
client, where a commit is one transfer, that was 85-115 µs of Tally's CPU and
60-85 of PostgreSQL's per transfer (docs/performance.md).

``tenants.events_listened_until_us`` (PostgreSQL's clock, µs since the epoch)
is a lease: a process with a live stream of the tenant, or a webhook endpoint
of it, holds it (tally.storage.wakeup_leases), and the write statement notifies
only while it runs. The write statement reads it from the row it already updates
and locks, so a process taking the lease either waits for a write in flight
to commit (and then reads its events) or is seen by it.

Older processes ignore the column and keep notifying: nothing to stop first.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "tenants",
        sa.Column("events_listened_until_us", sa.BigInteger, nullable=False, server_default="0"),
    )


def downgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("events_listened_until_us")

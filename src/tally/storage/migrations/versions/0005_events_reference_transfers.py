"""Transfer events reference their transfer instead of copying it.

An event's ``data`` was the object's whole public JSON as it was after the
change: for a transfer, four hundred bytes written twice per transfer (the row
and its copy), and rendered inside the write transaction. A transfer changes at
most once after it is created (a pending one is posted, voided or expired, and
then never again), so the transfer row and the event's type together say
exactly what it was at the event: ``transfer.created`` of a pending transfer is
the transfer with status ``pending`` and no ``resolved_at``; every other
transfer event is the row as it is (tally.core.model.Transfer.as_of).

New transfer events store ``object_id`` and no ``data``; account events, whose
rows keep changing, still store their copy, and so do the rows written before
this revision. ``GET /v1/events`` answers byte for byte what it answered before.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("object_id", sa.Text, nullable=True))
        batch.alter_column("data", existing_type=sa.Text, nullable=True)
        batch.create_check_constraint(
            "events_data_or_object", "data IS NOT NULL OR object_id IS NOT NULL"
        )


def downgrade() -> None:
    # Copies cannot be made back without rendering transfers: refuse rather than lose.
    raise NotImplementedError("0005 cannot be downgraded")

"""Webhooks: endpoints, their deliveries, and the workers that deliver them.

``webhook_endpoints`` holds each endpoint with its signing secret (and the
previous one during a rotation's overlap) and its cursor into the tenant's
events: the events table is the outbox, and a delivery row is made for every
event after the cursor that the endpoint subscribes to. ``webhook_deliveries``
has one row per (endpoint, event), whose id is the ``webhook-id`` sent with
every attempt; a lease (owner and expiry) marks the attempt in flight, so that
a process killed mid-delivery leaves a lease that expires, never a lost
delivery. ``webhook_workers`` is the heartbeat table of the processes that
deliver: the live ones share the endpoints by rendezvous hashing (docs/webhooks.md).

Secrets are stored as they are: they sign, so they cannot be hashed.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("tenant_id", sa.Text, sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("event_types", sa.Text, nullable=False),  # space-separated; "*" is all
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("disabled_reason", sa.Text, nullable=True),  # "user" or "gone" (410)
        sa.Column("secret", sa.Text, nullable=False),
        sa.Column("previous_secret", sa.Text, nullable=True),
        sa.Column("previous_secret_expires_at_us", sa.BigInteger, nullable=True),
        sa.Column("event_cursor", sa.BigInteger, nullable=False),
        sa.Column("created_at_us", sa.BigInteger, nullable=False),
        sa.Column("updated_at_us", sa.BigInteger, nullable=False),
        sa.CheckConstraint("status IN ('enabled', 'disabled')", name="webhook_endpoints_status"),
    )
    op.create_index("webhook_endpoints_tenant", "webhook_endpoints", ["tenant_id", "id"])
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.Text, primary_key=True),  # the webhook-id of every attempt
        sa.Column("tenant_id", sa.Text, nullable=False),
        sa.Column("endpoint_id", sa.Text, sa.ForeignKey("webhook_endpoints.id"), nullable=False),
        sa.Column("event_sequence", sa.BigInteger, nullable=False),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at_us", sa.BigInteger, nullable=False),
        sa.Column("lease_owner", sa.Text, nullable=True),
        sa.Column("lease_expires_at_us", sa.BigInteger, nullable=True),
        sa.Column("last_attempt_at_us", sa.BigInteger, nullable=True),
        sa.Column("last_status_code", sa.Integer, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("created_at_us", sa.BigInteger, nullable=False),
        sa.Column("completed_at_us", sa.BigInteger, nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'succeeded', 'failed')", name="webhook_deliveries_status"
        ),
        sa.UniqueConstraint("endpoint_id", "event_sequence", name="webhook_deliveries_event"),
    )
    # The head of each endpoint's queue: its oldest pending delivery.
    op.create_index(
        "webhook_deliveries_pending",
        "webhook_deliveries",
        ["endpoint_id", "event_sequence"],
        postgresql_where=sa.text("status = 'pending'"),
        sqlite_where=sa.text("status = 'pending'"),
    )
    op.create_table(
        "webhook_workers",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("started_at_us", sa.BigInteger, nullable=False),
        sa.Column("heartbeat_at_us", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    for table in ("webhook_workers", "webhook_deliveries", "webhook_endpoints"):
        op.drop_table(table)

"""Identity: users, invitations, sessions with rotating refresh tokens, JWT signing
keys, and the hash-chained audit log.

Secrets are stored only as hashes: passwords with Argon2id, refresh tokens and
invitation tokens with SHA-256 (they are 256-bit random values, so a fast hash
is enough, as for API keys). Times are integer microseconds, as everywhere.

The audit log is append-only. A row is inserted unsealed (``chain_seq`` and
``chain_hash`` NULL), in the same transaction as the change it records; a sealer
then gives it the next number of the one chain and a hash over its fields and
the previous row's hash (tally.audit). ``audit_chain`` holds the head, so that
deleting the newest rows is detected as well as editing or deleting any other.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("tenant_id", sa.Text, sa.ForeignKey("tenants.id"), nullable=False),
        # Stored lower-cased; one user (one tenant) per email address.
        sa.Column("email", sa.Text, nullable=False, unique=True),
        sa.Column("password_hash", sa.Text, nullable=True),  # NULL until invited accepts
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("created_at_us", sa.BigInteger, nullable=False),
        sa.Column("updated_at_us", sa.BigInteger, nullable=False),
        sa.CheckConstraint("role IN ('owner', 'admin', 'operator', 'viewer')", name="users_role"),
        sa.CheckConstraint("status IN ('invited', 'active', 'disabled')", name="users_status"),
    )
    op.create_index("users_tenant", "users", ["tenant_id", "created_at_us"])
    op.create_table(
        "invitations",
        sa.Column("token_sha256", sa.Text, primary_key=True),
        sa.Column("user_id", sa.Text, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("created_at_us", sa.BigInteger, nullable=False),
        sa.Column("expires_at_us", sa.BigInteger, nullable=False),
        sa.Column("accepted_at_us", sa.BigInteger, nullable=True),
    )
    op.create_index("invitations_user", "invitations", ["user_id"])
    op.create_table(
        "sessions",  # one login: the family of its refresh tokens
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("user_id", sa.Text, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("created_at_us", sa.BigInteger, nullable=False),
        sa.Column("expires_at_us", sa.BigInteger, nullable=False),
        sa.Column("revoked_at_us", sa.BigInteger, nullable=True),
        sa.Column("revoked_reason", sa.Text, nullable=True),
    )
    op.create_index("sessions_user", "sessions", ["user_id"])
    op.create_table(
        "refresh_tokens",
        sa.Column("token_sha256", sa.Text, primary_key=True),
        sa.Column("session_id", sa.Text, sa.ForeignKey("sessions.id"), nullable=False),
        sa.Column("created_at_us", sa.BigInteger, nullable=False),
        sa.Column("spent_at_us", sa.BigInteger, nullable=True),
    )
    op.create_index("refresh_tokens_session", "refresh_tokens", ["session_id"])
    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.Text, primary_key=True),
        sa.Column("algorithm", sa.Text, nullable=False),
        sa.Column("private_key_pem", sa.Text, nullable=False),
        sa.Column("public_key_pem", sa.Text, nullable=False),
        sa.Column("created_at_us", sa.BigInteger, nullable=False),
        # A retired key signs nothing new; it verifies until its tokens have expired.
        sa.Column("retired_at_us", sa.BigInteger, nullable=True),
    )
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("created_by", sa.Text, nullable=True))
    op.create_table(
        "audit_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("tenant_id", sa.Text, nullable=True),  # NULL: no tenant was identified
        sa.Column("occurred_at_us", sa.BigInteger, nullable=False),
        sa.Column("actor_type", sa.Text, nullable=False),  # user, api_key, anonymous
        sa.Column("actor_id", sa.Text, nullable=True),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("object_id", sa.Text, nullable=True),
        sa.Column("status_code", sa.Integer, nullable=False),  # the HTTP status answered
        sa.Column("code", sa.Text, nullable=True),
        sa.Column("request_id", sa.Text, nullable=True),
        sa.Column("client_address", sa.Text, nullable=True),
        sa.Column("chain_seq", sa.BigInteger, nullable=True, unique=True),
        sa.Column("chain_hash", sa.Text, nullable=True),
    )
    op.create_index("audit_events_tenant", "audit_events", ["tenant_id", "id"])
    op.create_index(
        "audit_events_unsealed",
        "audit_events",
        ["id"],
        postgresql_where=sa.text("chain_seq IS NULL"),
        sqlite_where=sa.text("chain_seq IS NULL"),
    )
    op.create_table(
        "audit_chain",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("head_seq", sa.BigInteger, nullable=False),
        sa.Column("head_hash", sa.Text, nullable=False),
        sa.CheckConstraint("id = 1", name="audit_chain_one_row"),
    )
    op.execute("INSERT INTO audit_chain (id, head_seq, head_hash) VALUES (1, 0, '')")


def downgrade() -> None:
    for table in (
        "audit_chain",
        "audit_events",
        "signing_keys",
        "refresh_tokens",
        "sessions",
        "invitations",
        "users",
    ):
        op.drop_table(table)
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("created_by")

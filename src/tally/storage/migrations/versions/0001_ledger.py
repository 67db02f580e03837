"""The ledger: tenants, API keys, accounts, transfers, balance history, events.

Times are integer microseconds since the Unix epoch and money is an integer in
minor units, on both backends, so nothing is rounded on the way in or out.
The CHECK constraints repeat the ledger core's invariants in the database as a
second line of defence: a bug that slipped past the core fails its transaction
instead of corrupting a balance.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_TOTALS = ("debits_pending", "debits_posted", "credits_pending", "credits_posted")


def _totals() -> list[sa.Column[int]]:
    return [sa.Column(name, sa.BigInteger, nullable=False, server_default="0") for name in _TOTALS]


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("created_at_us", sa.BigInteger, nullable=False),
        # The last event sequence used; its row lock orders each tenant's commits.
        sa.Column("event_sequence", sa.BigInteger, nullable=False, server_default="0"),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("tenant_id", sa.Text, sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("secret_sha256", sa.Text, nullable=False),
        sa.Column("scopes", sa.Text, nullable=False),
        sa.Column("created_at_us", sa.BigInteger, nullable=False),
        sa.Column("revoked_at_us", sa.BigInteger, nullable=True),
    )
    op.create_index("api_keys_tenant", "api_keys", ["tenant_id"])
    op.create_table(
        "accounts",
        sa.Column("tenant_id", sa.Text, sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("id", sa.Text, nullable=False),
        sa.Column("sequence", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.Text, nullable=False),
        sa.Column("normal_balance", sa.Text, nullable=False),
        sa.Column("debits_must_not_exceed_credits", sa.Boolean, nullable=False),
        sa.Column("credits_must_not_exceed_debits", sa.Boolean, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("metadata", sa.Text, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        *_totals(),
        sa.Column("created_at_us", sa.BigInteger, nullable=False),
        sa.Column("updated_at_us", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "id"),
        sa.UniqueConstraint("tenant_id", "sequence", name="accounts_tenant_sequence"),
        sa.CheckConstraint(
            "debits_pending >= 0 AND debits_posted >= 0 "
            "AND credits_pending >= 0 AND credits_posted >= 0",
            name="accounts_totals_not_negative",
        ),
        sa.CheckConstraint(
            "NOT (debits_must_not_exceed_credits AND credits_must_not_exceed_debits)",
            name="accounts_flags_exclusive",
        ),
        sa.CheckConstraint(
            "NOT debits_must_not_exceed_credits "
            "OR debits_pending + debits_posted <= credits_posted",
            name="accounts_debits_within_credits",
        ),
        sa.CheckConstraint(
            "NOT credits_must_not_exceed_debits "
            "OR credits_pending + credits_posted <= debits_posted",
            name="accounts_credits_within_debits",
        ),
        sa.CheckConstraint("normal_balance IN ('credit', 'debit')", name="accounts_normal"),
        sa.CheckConstraint("status IN ('open', 'closed')", name="accounts_status"),
    )
    op.create_table(
        "transfers",
        sa.Column("tenant_id", sa.Text, nullable=False),
        sa.Column("id", sa.Text, nullable=False),
        sa.Column("sequence", sa.BigInteger, nullable=False),
        sa.Column("debit_account_id", sa.Text, nullable=False),
        sa.Column("credit_account_id", sa.Text, nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.Text, nullable=False),
        sa.Column("pending", sa.Boolean, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("timeout_seconds", sa.BigInteger, nullable=True),
        sa.Column("expires_at_us", sa.BigInteger, nullable=True),
        sa.Column("pending_id", sa.Text, nullable=True),
        sa.Column("resolved_at_us", sa.BigInteger, nullable=True),
        sa.Column("metadata", sa.Text, nullable=False),
        sa.Column("created_at_us", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "id"),
        sa.UniqueConstraint("tenant_id", "sequence", name="transfers_tenant_sequence"),
        sa.ForeignKeyConstraint(
            ["tenant_id", "debit_account_id"], ["accounts.tenant_id", "accounts.id"]
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "credit_account_id"], ["accounts.tenant_id", "accounts.id"]
        ),
        sa.CheckConstraint("amount > 0", name="transfers_amount_positive"),
        sa.CheckConstraint("debit_account_id <> credit_account_id", name="transfers_two_accounts"),
        sa.CheckConstraint(
            "status IN ('posted', 'pending', 'voided', 'expired')", name="transfers_status"
        ),
    )
    op.create_index("transfers_debit", "transfers", ["tenant_id", "debit_account_id", "sequence"])
    op.create_index("transfers_credit", "transfers", ["tenant_id", "credit_account_id", "sequence"])
    op.create_index(
        "transfers_due",
        "transfers",
        ["expires_at_us"],
        postgresql_where=sa.text("status = 'pending' AND expires_at_us IS NOT NULL"),
        sqlite_where=sa.text("status = 'pending' AND expires_at_us IS NOT NULL"),
    )
    op.create_table(
        "account_balances",
        sa.Column("tenant_id", sa.Text, nullable=False),
        sa.Column("account_id", sa.Text, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("transfer_id", sa.Text, nullable=False),
        *_totals(),
        sa.Column("created_at_us", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "account_id", "version"),
    )
    op.create_index(
        "account_balances_at",
        "account_balances",
        ["tenant_id", "account_id", "created_at_us", "version"],
    )
    op.create_table(
        "events",
        sa.Column("tenant_id", sa.Text, nullable=False),
        sa.Column("sequence", sa.BigInteger, nullable=False),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("created_at_us", sa.BigInteger, nullable=False),
        sa.Column("data", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "sequence"),
    )


def downgrade() -> None:
    for table in ("events", "account_balances", "transfers", "accounts", "api_keys", "tenants"):
        op.drop_table(table)

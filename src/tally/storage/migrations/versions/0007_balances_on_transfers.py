"""An account's balance after a transfer is kept on the transfer's row.

Every transfer moved two accounts and wrote two ``account_balances`` rows, each
with a primary-key entry and an entry in ``account_balances_at``: two heap rows
and four index entries per transfer, for a history that the transfer row can
carry itself. On PostgreSQL 15 here those rows were about a quarter of the
database's CPU per single transfer and almost half of it per transfer in
batches of 1,000 (docs/performance.md).

A transfer row now carries, for each side, the account's ``version`` and four
totals just after the transfer: ``debit_version``, ``debit_debits_pending`` …
``credit_credits_posted``. ``account_balances`` keeps only the changes that have
no transfer row of their own: a pending transfer's expiry, which releases its
hold by updating the pending row.

An account's history is then three ordered sources, merged: the transfers that
debit it, those that credit it, and its expiries. Each is read through an index
ordered by ``(created_at_us, version)`` of that account, which serves the list
(newest first), its cursor, and ``?at=`` (the newest change at or before an
instant): ``transfers_debit`` and ``transfers_credit`` change from
``(tenant_id, account_id, sequence)`` to ``(tenant_id, account_id,
created_at_us, version)``, so no index is added. Listing an account's transfers
uses their leading columns as before. The writer makes an account's change times
never go backwards (tally.ledger.transaction), so that order is version order.

The upgrade copies each transfer's two creation records onto its row (one
UPDATE) and deletes them from ``account_balances``. On a large ledger it
rewrites every transfer row under an exclusive lock: run it in a maintenance
window, with every older process stopped first (an older process would read
an account's history from ``account_balances`` alone, where only expiries
remain; what one still writes is read correctly, see
tally.storage.store._of_account), and ``VACUUM ANALYZE transfers`` after.
Measured on the 2-core build machine: 300,000 transfers in 16 s on PostgreSQL
15, 9 s on SQLite. On SQLite it needs ``UPDATE … FROM`` (SQLite 3.33; Python's
own is newer everywhere Tally runs).

The API answers what it answered before, with one exception in history
written before this revision: where two processes' batches on one account
committed in the opposite order of their clocks (microseconds apart), the list
now shows them in time order, as ``?at=`` always did. A cursor issued before (a
version alone) still works.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_SIDES = ("debit", "credit")
_BALANCE = ("version", "debits_pending", "debits_posted", "credits_pending", "credits_posted")


def _columns(side: str) -> list[str]:
    return [f"{side}_{name}" for name in _BALANCE]


def _index(side: str, order: str) -> None:
    op.drop_index(f"transfers_{side}", "transfers")
    op.create_index(
        f"transfers_{side}", "transfers", ["tenant_id", f"{side}_account_id", *order.split()]
    )


def upgrade() -> None:
    for side in _SIDES:
        for name in _columns(side):
            op.add_column("transfers", sa.Column(name, sa.BigInteger, nullable=True))
    # A transfer's creation is its accounts' first record naming it; an expiry
    # names the pending transfer again, later, and stays where it is. Those first
    # records go to a work table with an index, so that one UPDATE finds both
    # sides of each transfer by probes (joining two window queries directly was
    # planned as a nested loop over both: quadratic).
    op.execute(
        "CREATE TABLE migration_0007_first AS SELECT tenant_id, account_id, transfer_id,"
        " version, debits_pending, debits_posted, credits_pending, credits_posted FROM"
        " (SELECT b.*, ROW_NUMBER() OVER (PARTITION BY tenant_id, account_id, transfer_id"
        " ORDER BY version) AS n FROM account_balances AS b) AS f WHERE n = 1"
    )
    op.create_index(
        "migration_0007_first_key",
        "migration_0007_first",
        ["tenant_id", "transfer_id", "account_id"],
    )
    op.execute("ANALYZE migration_0007_first")
    assignments = ", ".join(
        f"{side}_{name} = {side[0]}.{name}" for side in _SIDES for name in _BALANCE
    )
    op.execute(
        f"UPDATE transfers SET {assignments}"
        " FROM migration_0007_first AS d, migration_0007_first AS c"
        " WHERE d.tenant_id = transfers.tenant_id AND d.transfer_id = transfers.id"
        " AND d.account_id = transfers.debit_account_id"
        " AND c.tenant_id = transfers.tenant_id AND c.transfer_id = transfers.id"
        " AND c.account_id = transfers.credit_account_id"
    )
    op.drop_table("migration_0007_first")
    op.execute(
        "DELETE FROM account_balances WHERE EXISTS (SELECT 1 FROM transfers AS t"
        " WHERE t.tenant_id = account_balances.tenant_id AND t.id = account_balances.transfer_id"
        " AND ((t.debit_account_id = account_balances.account_id"
        " AND t.debit_version = account_balances.version)"
        " OR (t.credit_account_id = account_balances.account_id"
        " AND t.credit_version = account_balances.version)))"
    )
    for side in _SIDES:
        _index(side, f"created_at_us {side}_version")


def downgrade() -> None:
    for side in _SIDES:
        op.execute(
            "INSERT INTO account_balances (tenant_id, account_id, version, transfer_id,"
            " debits_pending, debits_posted, credits_pending, credits_posted, created_at_us)"
            f" SELECT tenant_id, {side}_account_id, {side}_version, id,"
            f" {', '.join(_columns(side)[1:])}, created_at_us"
            f" FROM transfers WHERE {side}_version IS NOT NULL"
        )
        _index(side, "sequence")
    with op.batch_alter_table("transfers") as batch:
        for side in _SIDES:
            for name in _columns(side):
                batch.drop_column(name)

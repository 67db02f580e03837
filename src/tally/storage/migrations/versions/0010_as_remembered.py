"""A function the writer's statement calls to refuse a decision made on a stale memory.

On PostgreSQL a lone transfer was two round trips: lock and read its accounts,
then write and commit. The writer now remembers the accounts its own commits
left behind, and a batch whose accounts it all remembers skips the read: its
write statement locks those accounts itself, in the same global order, and
checks that each is still at the version the decision was made on, and that
none of the transfers its creates name exists (decisions/0011).
``tally_as_remembered(matched, expected)`` is that check's answer: true when
everything matched, and otherwise an error with SQLSTATE 40001
(``serialization_failure``), which ends the statement before anything is
written and skips the COMMIT sent with it. The writer rolls back, forgets
what it remembered and runs the batch again with the read, as for any lost
race.

Plain SQL has no statement that raises an error of one's choosing; PL/pgSQL,
which every PostgreSQL has, does. SQLite has no round trip to save: nothing
changes there.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-08
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        """
        CREATE FUNCTION tally_as_remembered(matched bigint, expected bigint)
        RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
        BEGIN
            IF matched IS DISTINCT FROM expected THEN
                RAISE EXCEPTION USING
                    ERRCODE = 'serialization_failure',
                    MESSAGE = format('%s of %s accounts and transfers not as remembered',
                                     expected - coalesce(matched, 0), expected);
            END IF;
            RETURN true;
        END
        $$
        """
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP FUNCTION tally_as_remembered(bigint, bigint)")

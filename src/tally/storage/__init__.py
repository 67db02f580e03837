"""Storage: SQLite (the embedded default) and PostgreSQL (production).

``Store`` is what the services talk to; ``unit_of_work`` is the protocol of a
ledger write transaction and its retry policy; ``records`` and ``rows`` map
between the databases and the core's values; ``schema`` migrates. The adapters
(``sqlite``, ``postgres``) hold only SQL.
"""

from tally.config import Settings
from tally.storage.records import TransferFilter
from tally.storage.store import Store


def make_store(settings: Settings) -> Store:
    if settings.is_sqlite:
        from tally.storage.sqlite import SqliteStore

        return SqliteStore(settings)
    from tally.storage.postgres import PostgresStore

    return PostgresStore(settings)


__all__ = ["Store", "TransferFilter", "make_store"]

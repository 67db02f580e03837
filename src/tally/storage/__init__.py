"""Storage adapters: SQLite (embedded default) and PostgreSQL (production)."""

from tally.config import Settings
from tally.storage.base import Store, TransferFilter
from tally.storage.batch import Job


def make_store(settings: Settings) -> Store:
    if settings.is_sqlite:
        from tally.storage.sqlite import SqliteStore

        return SqliteStore(settings)
    from tally.storage.postgres import PostgresStore

    return PostgresStore(settings)


__all__ = ["Job", "Store", "TransferFilter", "make_store"]

"""Bring a database's schema up to date with Alembic (idempotent)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from tally.config import Settings

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def sqlalchemy_url(database_url: str) -> str:
    """Our URLs name the database; SQLAlchemy's also name the driver."""
    if database_url.startswith("sqlite:///"):
        return database_url
    rest = database_url.split("://", 1)[1]
    return f"postgresql+psycopg://{rest}"


def alembic_config(settings: Settings) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # ConfigParser interpolation: a literal % (in a password, say) must be doubled.
    url = sqlalchemy_url(settings.database_url).replace("%", "%%")
    config.set_main_option("sqlalchemy.url", url)
    return config


def migrate(settings: Settings) -> None:
    command.upgrade(alembic_config(settings), "head")

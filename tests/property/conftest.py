"""Databases of their own for the model-based tests.

The model test runs the app on a clock that stands still until the test moves
it, and drives expiry rounds itself. An expiry round covers every tenant of its
database, so sharing the run's database would let this test expire other tests'
holds (its clock is not theirs), and let their servers expire this test's holds.
Each backend therefore gets a fresh database here, made and migrated the way
``tests/conftest.py`` makes the run's, and dropped afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tally.config import Settings
from tally.storage.schema import migrate
from tests.conftest import fresh_postgres_database


@pytest.fixture(params=["sqlite", "postgresql"])
def own_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database no other test uses, once per backend."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'model.db'}"
        migrate(Settings(database_url=url))
        yield url
        return
    yield from fresh_postgres_database()

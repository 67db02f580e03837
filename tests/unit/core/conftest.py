"""Fixtures for the ledger-core unit tests (the builders are in builders.py)."""

from __future__ import annotations

import pytest

from tally.core import Book
from tests.unit.core.builders import make_book


@pytest.fixture
def book() -> Book:
    """An empty ledger at NOW_US whose next event is sequence 1."""
    return make_book()

"""Fixtures for the ledger-core unit tests (the builders are in core_builders.py)."""

from __future__ import annotations

import pytest
from core_builders import make_book

from tally.core import Book


@pytest.fixture
def book() -> Book:
    """An empty ledger at NOW_US whose next event is sequence 1."""
    return make_book()

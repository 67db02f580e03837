"""The GraphQL schema is checked in (docs/schema.graphql), so every change to it
shows in a diff and is made on purpose: regenerate it with ``make schema``."""

from __future__ import annotations

from pathlib import Path

from tally.api.graphql.schema import schema_text

SCHEMA = Path(__file__).resolve().parents[2] / "docs" / "schema.graphql"


def test_the_checked_in_schema_is_the_one_the_server_runs() -> None:
    assert SCHEMA.read_text() == schema_text(), (
        "the GraphQL schema changed: review the change, then run `make schema`"
    )

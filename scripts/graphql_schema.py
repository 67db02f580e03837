"""Print the GraphQL schema the server runs, in SDL: ``make schema`` (or
``python scripts/graphql_schema.py > docs/schema.graphql``);
tests/api/test_graphql_schema.py holds the two equal."""

from __future__ import annotations

import sys

from tally.api.graphql.schema import schema_text

sys.stdout.write(schema_text())

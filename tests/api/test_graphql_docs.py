"""docs/graphql.md's examples run as written: each ```graphql block, in order, on a
new tenant with every scope (a ``# variables: {...}`` line gives its variables),
and each answers without an error."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tests.api.conftest import Api
from tests.api.graphql_client import GraphQL

DOC = Path(__file__).resolve().parents[2] / "docs" / "graphql.md"
BLOCK = re.compile(r"```graphql\n(.*?)```", re.DOTALL)
VARIABLES = re.compile(r"^# variables: (.*)$", re.MULTILINE)


def examples() -> list[tuple[str, dict[str, Any] | None]]:
    found = []
    for block in BLOCK.findall(DOC.read_text()):
        given = VARIABLES.search(block)
        variables = json.loads(given.group(1)) if given else None
        found.append((VARIABLES.sub("", block), variables))
    return found


def test_the_docs_have_examples_of_every_mutation_and_query() -> None:
    text = "".join(query for query, _ in examples())
    for field in ("createAccount", "createTransfer", "postTransfer", "createTransferBatch"):
        assert field in text, field
    for field in ("accounts", "transfers", "events", "balanceHistory", "lastTransfers"):
        assert field in text, field


def test_every_example_in_the_docs_runs(api: Api) -> None:
    gql = GraphQL(api)
    for query, variables in examples():
        gql.data(query, variables)
    alice = api.balance("alice")
    # Funded 10000; 2000 of the hold posted; the batch moved 300.
    assert alice["balance"]["posted"] == 10000 - 2000 - 300

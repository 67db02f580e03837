"""The document limits measured from the syntax tree alone: no app, no database."""

from __future__ import annotations

from typing import Any

import pytest
from graphql import parse

from tally.api.graphql.limits import LimitExceeded, Limits, check, operation_of

LIMITS = Limits(depth_max=4, cost_max=500, aliases_max=2, page_default=100, page_max=1000)


def refusal(query: str, variables: dict[str, Any] | None = None) -> str | None:
    document = parse(query)
    try:
        check(document, operation_of(document, None), variables or {}, LIMITS)
    except LimitExceeded as error:
        return str((error.extensions or {})["limit"])
    return None


def test_scalars_are_free_and_a_page_multiplies_what_it_selects() -> None:
    assert refusal("{ accounts(first: 99) { nodes { id currency version } } }") is None
    # 1 + 100 x (balance 1 + flags 1) = 201; 1 + 300 x 2 = 601 > 500.
    assert refusal("{ accounts { nodes { balance { posted } flags { x } } } }") is None
    assert (
        refusal("{ accounts(first: 300) { nodes { balance { posted } flags { x } } } }") == "cost"
    )


def test_a_page_size_in_a_variable_is_read_from_the_variables() -> None:
    query = "query Q($n: Int) { accounts(first: $n) { nodes { balance { posted } flags { x } } } }"
    assert refusal(query, {"n": 10}) is None
    assert refusal(query, {"n": 300}) == "cost"
    assert refusal(query, {"n": "not a number"}) == "cost"  # counted at the maximum


def test_depth_counts_object_fields_through_fragments() -> None:
    assert refusal("{ account { balance { posted } } }") is None
    deep = "{ a { b { c { d { e { id } } } } } }"
    assert refusal(deep) == "depth"
    spread = "{ a { ...F } } fragment F on X { b { c { d { e { id } } } } }"
    assert refusal(spread) == "depth"


def test_aliases_are_counted_everywhere() -> None:
    assert refusal("{ a: accounts { nodes { id } } b: transfers { nodes { id } } }") is None
    assert refusal("{ a: account { x: id y: id } }") == "aliases"


def test_introspection_is_neither_deep_nor_costly() -> None:
    query = "{ __schema { types { fields { type { ofType { ofType { ofType { name } } } } } } } }"
    assert refusal(query) is None


@pytest.mark.parametrize(
    ("query", "limit"),
    [
        ("query A { a { id } } query B { b { id } }", "operations"),
        ("mutation { a { id } b { id } }", "mutations"),
        ("mutation { ...F } fragment F on Mutation { a { id } b { id } }", "mutations"),
    ],
)
def test_one_operation_and_one_mutation_per_request(query: str, limit: str) -> None:
    assert refusal(query) == limit


def test_a_fragment_cycle_ends_the_walk_for_validation_to_refuse() -> None:
    assert refusal("{ ...A } fragment A on Query { ...B } fragment B on Query { ...A }") is None


def test_an_unknown_operation_name_is_an_error() -> None:
    document = parse("query A { a { id } }")
    with pytest.raises(Exception, match="Unknown operation"):
        operation_of(document, "B")

"""The limits of /graphql, on by default: depth, cost, aliases, page size, batched
operations and query size; each refused before anything runs, with a clear
message and a code; and the errors of the transport, in GraphQL's shape."""

from __future__ import annotations

import json

import pytest
from starlette.testclient import TestClient

from tally.api import create_app
from tally.config import Settings
from tests.api.conftest import Api
from tests.api.graphql_client import GraphQL, code
from tests.conftest import FakeClock


@pytest.fixture
def gql(api: Api) -> GraphQL:
    return GraphQL(api)


def refused(gql: GraphQL, query: str, limit: str) -> str:
    error = gql.error(query)
    assert code(error) == "validation_error", error
    assert error["extensions"]["limit"] == limit, error
    return str(error["message"])


def test_a_deep_query_is_refused(gql: GraphQL) -> None:
    nested = "lastTransfers(first: 1) { debitAccount { " * 6
    query = '{ account(id: "a") { ' + nested + " id " + "} } " * 6 + "} }"
    message = refused(gql, query, "depth")
    assert "at most 10" in message and "TALLY_GRAPHQL_DEPTH_MAX" in message


def test_a_costly_query_is_refused(gql: GraphQL) -> None:
    query = (
        "{ accounts(first: 1000) { nodes { lastTransfers(first: 100) {"
        " debitAccount { id } creditAccount { id } } } } }"
    )
    message = refused(gql, query, "cost")
    assert "TALLY_GRAPHQL_COST_MAX" in message


def test_a_costly_query_is_refused_when_its_page_size_is_a_variable(gql: GraphQL) -> None:
    query = (
        "query Q($n: Int) { accounts(first: $n) { nodes { lastTransfers(first: 100) { id"
        " debitAccount { id } } } } }"
    )
    error = gql.error(query, {"n": 1000})
    assert error["extensions"]["limit"] == "cost"
    assert "errors" not in gql(query, {"n": 1})


def test_a_page_of_a_thousand_accounts_is_within_the_limits(gql: GraphQL) -> None:
    data = gql.data(
        "{ accounts(first: 1000)"
        " { nodes { id balance { posted } flags { debitsMustNotExceedCredits } } } }"
    )
    assert data["accounts"]["nodes"] == []


def test_many_aliases_are_refused(gql: GraphQL) -> None:
    fields = " ".join(f"a{i}: accounts(first: 1) {{ nodes {{ id }} }}" for i in range(21))
    message = refused(gql, "{ " + fields + " }", "aliases")
    assert "at most 20" in message


def test_several_operations_in_one_document_are_refused(gql: GraphQL) -> None:
    query = "query A { accounts { nodes { id } } } query B { transfers { nodes { id } } }"
    message = refused(gql, query, "operations")
    assert "one operation" in message


def test_several_mutations_in_one_request_are_refused(gql: GraphQL) -> None:
    query = (
        'mutation { a: createAccount(input: {currency: "USD"}) { id }'
        ' b: createAccount(input: {currency: "USD"}) { id } }'
    )
    message = refused(gql, query, "mutations")
    assert "createTransferBatch" in message
    assert gql.data("{ accounts { nodes { id } } }")["accounts"]["nodes"] == []


def test_a_json_array_of_operations_is_refused(api: Api) -> None:
    r = api.post("/graphql", [{"query": "{ accounts { nodes { id } } }"}] * 2)
    assert r.status_code == 422
    (error,) = r.json()["errors"]
    assert code(error) == "validation_error"
    assert "Batched requests" in error["message"]


def test_a_page_over_the_rest_maximum_is_refused(gql: GraphQL) -> None:
    for query in (
        "{ accounts(first: 1001) { nodes { id } } }",
        "{ transfers(first: 0) { nodes { id } } }",
        '{ balanceHistory(accountId: "x", first: 5000) { nodes { version } } }',
    ):
        error = gql.error(query)
        assert code(error) in ("validation_error", "not_found"), error
    error = gql.error("{ accounts(first: 1001) { nodes { id } } }")
    assert error["extensions"]["errors"][0]["field"] == "first"
    assert "1-1000" in error["message"]


def test_an_oversized_query_is_refused_by_its_token_count(gql: GraphQL) -> None:
    query = "{ accounts { nodes { " + "id " * 3000 + "} } }"
    error = gql.error(query)
    assert code(error) == "malformed_request"
    assert "token" in error["message"].lower()


def test_a_body_over_the_limit_is_a_413(api: Api) -> None:
    r = api.post("/graphql", {"query": "{ accounts { nodes { id } } }", "x": "a" * (1 << 20)})
    assert r.status_code == 413
    assert code(r.json()["errors"][0]) == "payload_too_large"


@pytest.mark.parametrize(
    ("body", "content_type", "status", "expected"),
    [
        (b"{", "application/json", 400, "malformed_request"),
        (b"query=1", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
        (b'{"query": 1}', "application/json", 422, "validation_error"),
        (
            b'{"query": "{ accounts { nodes { id } } }", "other": 1}',
            "application/json",
            422,
            "validation_error",
        ),
        (
            b'{"query": "{ accounts { nodes { id } } }", "variables": [1]}',
            "application/json",
            422,
            "validation_error",
        ),
    ],
)
def test_a_bad_body_is_refused_in_graphqls_shape_with_the_contracts_code(
    api: Api, body: bytes, content_type: str, status: int, expected: str
) -> None:
    r = api.request("POST", "/graphql", content=body, headers={"Content-Type": content_type})
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    (error,) = r.json()["errors"]
    assert code(error) == expected


def test_bad_documents_and_variables_are_clear_errors_never_500s(gql: GraphQL) -> None:
    cases = {
        "{ accounts { nodes { id } }": "malformed_request",
        "{ nowhere }": "validation_error",
        "subscription { events { nodes { id } } }": "validation_error",
        "{ accounts(first: 99999999999) { nodes { id } } }": "validation_error",
        '{ account(id: "x\\u0000y") { id } }': "not_found",
        '{ transfers(createdAfter: "yesterday") { nodes { id } } }': "validation_error",
        '{ accounts(after: "not-a-cursor") { nodes { id } } }': "validation_error",
        "{ events(afterSequence: -1) { nodes { sequence } } }": "validation_error",
    }
    for query, expected in cases.items():
        out = gql(query)
        assert code(out["errors"][0]) == expected, (query, out)
    out = gql(
        "query Q($a: Int64!) { events(afterSequence: $a) { nodes { sequence } } }", {"a": "1"}
    )
    assert code(out["errors"][0]) == "validation_error", out


def test_unauthenticated_is_a_401_with_www_authenticate(client: TestClient) -> None:
    r = client.post("/graphql", json={"query": "{ accounts { nodes { id } } }"})
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert code(r.json()["errors"][0]) == "unauthenticated"


def test_get_runs_queries_and_refuses_mutations(api: Api) -> None:
    r = api.get("/graphql", params={"query": "{ accounts { nodes { id } } }"})
    assert r.status_code == 200, r.text
    assert r.json() == {"data": {"accounts": {"nodes": []}}}
    variables = json.dumps({"n": 1})
    r = api.get(
        "/graphql",
        params={
            "query": "query Q($n: Int) { accounts(first: $n) { nodes { id } } }",
            "variables": variables,
        },
    )
    assert r.status_code == 200, r.text
    r = api.get(
        "/graphql", params={"query": 'mutation { createAccount(input: {currency: "USD"}) { id } }'}
    )
    assert r.status_code == 405
    assert code(r.json()["errors"][0]) == "method_not_allowed"
    r = api.get("/graphql", params={"query": "{ accounts { nodes { id } } }", "limit": "1"})
    assert r.status_code == 422


def test_a_required_idempotency_key_is_required_on_mutations_only(database_url: str) -> None:
    from tests.conftest import create_tenant

    settings = Settings(database_url=database_url, require_idempotency_key=True)
    with TestClient(create_app(settings, clock=FakeClock())) as c:
        tenant_id, key = create_tenant(database_url)
        gql = GraphQL(Api(c, key, tenant_id))
        r = gql.raw('mutation { createAccount(input: {currency: "USD"}) { id } }')
        assert r.status_code == 400
        assert code(r.json()["errors"][0]) == "idempotency_key_required"
        assert "errors" not in gql("{ accounts { nodes { id } } }")
        made = gql.raw('mutation { createAccount(input: {currency: "USD"}) { id } }', key="k-1")
        assert "errors" not in made.json()


def test_introspection_follows_its_setting(api: Api, database_url: str) -> None:
    query = "{ __schema { queryType { name } } }"
    assert GraphQL(api).data(query) == {"__schema": {"queryType": {"name": "Query"}}}
    from tests.conftest import create_tenant

    settings = Settings(database_url=database_url, graphql_introspection=False)
    with TestClient(create_app(settings, clock=FakeClock())) as c:
        tenant_id, key = create_tenant(database_url)
        out = GraphQL(Api(c, key, tenant_id))(query)
        assert "data" not in out
        error = out["errors"][0]
        assert code(error) == "validation_error"
        assert "introspection" in error["message"].lower()


def test_a_post_is_held_to_rests_header_and_parameter_rules_whatever_its_operation(
    api: Api,
) -> None:
    query = {"query": "{ accounts { nodes { id } } }"}
    r = api.post("/graphql", query, headers={"Idempotency-Key": "bad\tkey"})
    assert r.status_code == 400, r.text
    assert code(r.json()["errors"][0]) == "idempotency_key_invalid"
    r = api.post("/graphql", query, headers={"Idempotency-Key": "fine"})
    assert r.status_code == 200, r.text  # a query ignores a well-formed key
    r = api.post("/graphql?debug=1", query)
    assert r.status_code == 422, r.text
    assert "debug" in r.json()["errors"][0]["message"]

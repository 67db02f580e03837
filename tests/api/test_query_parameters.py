"""Query parameters are strict, like bodies: a parameter a route does not list, or one
given twice, is a 422 ``validation_error`` naming it, on every ``/v1`` route, and
nothing runs. The allowed set is each route's own ``RouteSpec.params`` (the ones the
OpenAPI document publishes), so these tests walk the route table rather than a list
of their own, and a route added later is covered without a change here.
"""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from tally.api.parsing import QUERY_ERRORS_MAX
from tally.api.routes import ROUTES, RouteSpec
from tests.api.conftest import Api
from tests.api.test_bad_input import assert_problem, snapshot
from tests.conftest import create_tenant

# One valid value for every query parameter any route declares (a parameter added
# to a route without a value here fails test_every_declared_parameter_is_accepted).
VALID_VALUES = {
    "limit": "10",
    "currency": "USD",
    "account_id": "src",
    "created_after": "2020-01-01T00:00:00Z",
    "created_before": "2100-01-01T00:00:00Z",
    "order": "desc",
    "after": "0",
    "at": "2100-01-01T00:00:00Z",
    "wait_seconds": "0",
    "types": "transfer.created,account.created",
}
STATUS_VALUES = {
    "/v1/accounts": "open",
    "/v1/transfers": "posted",
    "/v1/webhook-endpoints/{id}/deliveries": "failed",
}
# The books' webhook endpoint (its id is the server's to choose).
WEBHOOK: dict[str, str] = {}


def _path(spec: RouteSpec) -> str:
    if spec.path.startswith("/v1/webhook-endpoints/{id}") and WEBHOOK:
        return spec.path.replace("{id}", WEBHOOK["id"])
    return spec.path.replace("{id}", "src")


def _id(spec: RouteSpec) -> str:
    return f"{spec.method} {spec.path}"


@pytest.fixture(scope="module")
def books(client: TestClient, database_url: str) -> Api:
    tenant_id, api_key = create_tenant(database_url, "strict-query")
    api = Api(client, api_key, tenant_id)
    api.account("src")
    api.account("dst")
    api.transfer("src", "dst", 100)
    r = api.post(
        "/v1/webhook-endpoints", {"url": "https://1.1.1.1/strict-query", "event_types": ["*"]}
    )
    assert r.status_code == 201, r.text
    WEBHOOK["id"] = r.json()["webhook_endpoint"]["id"]
    return api


@pytest.mark.parametrize("spec", ROUTES, ids=_id)
def test_every_route_refuses_an_unknown_query_parameter_naming_it(
    books: Api, spec: RouteSpec
) -> None:
    before = snapshot(books)
    r = books.request(spec.method, _path(spec), params={"bogus": "1"}, json={})
    problem = assert_problem(r, 422, "validation_error")
    assert problem["errors"] == [
        {
            "field": "bogus",
            "code": "unknown_field",
            "message": problem["errors"][0]["message"],
        }
    ]
    message = problem["errors"][0]["message"]
    assert message.startswith("bogus is not a query parameter of this route; it takes ")
    for name in spec.query.form:
        assert name in message, message
    assert snapshot(books) == before


def test_a_mistyped_filter_is_refused_and_the_right_name_suggested(books: Api) -> None:
    # The issue's own example: before, this listed every transfer.
    r = books.get("/v1/transfers", params={"acount_id": "zzz"})
    problem = assert_problem(r, 422, "validation_error")
    (error,) = problem["errors"]
    assert error["field"] == "acount_id"
    assert error["code"] == "unknown_field"
    assert error["message"].endswith("Did you mean account_id?")
    assert "acount_id" in problem["detail"]


def test_wait_on_the_event_list_is_refused_the_parameter_is_wait_seconds(books: Api) -> None:
    problem = assert_problem(books.get("/v1/events", params={"wait": "5"}), 422, "validation_error")
    assert [e["field"] for e in problem["errors"]] == ["wait"]
    assert "wait_seconds" in problem["errors"][0]["message"]


def test_a_route_without_query_parameters_says_it_takes_none(books: Api) -> None:
    problem = assert_problem(books.get("/v1/accounts/src?expand=1"), 422, "validation_error")
    assert problem["errors"][0]["message"] == (
        "expand is not a query parameter of this route; it takes none."
    )


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/v1/transfers", "status=posted&status=pending"),
        ("/v1/transfers", "limit=1&limit=2"),
        ("/v1/accounts", "metadata[k]=a&metadata[k]=b"),
        ("/v1/events", "after=0&after=0"),
    ],
)
def test_a_parameter_given_twice_is_refused_even_with_the_same_value(
    books: Api, path: str, query: str
) -> None:
    problem = assert_problem(books.get(f"{path}?{query}"), 422, "validation_error")
    (error,) = problem["errors"]
    assert error["field"] == query.partition("=")[0]
    assert error["code"] == "invalid"
    assert "more than once" in error["message"]


def test_a_metadata_filter_without_a_key_is_refused_saying_how_to_write_it(books: Api) -> None:
    problem = assert_problem(books.get("/v1/accounts?metadata=x"), 422, "validation_error")
    assert problem["errors"][0]["field"] == "metadata"
    assert "metadata[key]=value" in problem["errors"][0]["message"]


def test_metadata_filters_on_different_keys_are_accepted(books: Api) -> None:
    r = books.get("/v1/accounts?metadata[a]=1&metadata[b]=2")
    assert r.status_code == 200, r.text
    assert r.json()["data"] == []


def test_every_declared_parameter_is_accepted(books: Api) -> None:
    for spec in ROUTES:
        if spec.method != "GET" or not spec.query.form | spec.query.deep:
            continue
        params: dict[str, Any] = {
            name: VALID_VALUES.get(name) for name in spec.query.form - {"cursor", "status"}
        }
        assert None not in params.values(), (spec.path, params)
        if "status" in spec.query.form:
            params["status"] = STATUS_VALUES[spec.path]
        params.update({f"{name}[k]": "v" for name in spec.query.deep})
        r = books.get(_path(spec), params=params)
        assert r.status_code == 200, (spec.path, r.text)
        if spec.media_type != "application/json":
            continue  # the event stream: no page to walk
        cursor = r.json().get("next_cursor") if "cursor" in spec.query.form else None
        if cursor is not None:
            assert books.get(_path(spec), params={**params, "cursor": cursor}).status_code == 200


def test_each_unknown_parameter_is_named_up_to_the_bound(books: Api) -> None:
    query = "&".join(f"x{i}=1" for i in range(QUERY_ERRORS_MAX + 5))
    problem = assert_problem(books.get(f"/v1/transfers?{query}"), 422, "validation_error")
    assert [e["field"] for e in problem["errors"]] == [f"x{i}" for i in range(QUERY_ERRORS_MAX)]


def test_a_very_long_unknown_name_is_cut_in_the_answer(books: Api) -> None:
    problem = assert_problem(books.get(f"/v1/transfers?{'y' * 5000}=1"), 422, "validation_error")
    (error,) = problem["errors"]
    assert len(error["field"]) < 100
    assert len(problem["detail"]) < 500


def test_a_write_with_an_unknown_parameter_applies_nothing(books: Api) -> None:
    before = snapshot(books)
    body = {"debit_account_id": "src", "credit_account_id": "dst", "amount": 1}
    r = books.post("/v1/transfers?dry_run=true", body)
    assert_problem(r, 422, "validation_error")
    assert snapshot(books) == before


def test_credentials_are_checked_before_the_query(client: TestClient) -> None:
    r = client.get("/v1/transfers?acount_id=zzz")
    assert_problem(r, 401, "unauthenticated")


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"])
def test_operational_routes_ignore_a_query_string(client: TestClient, path: str) -> None:
    # Probes and scrapers add cache-busting parameters; these routes take none and
    # filter nothing, so there is nothing a mistyped parameter could widen.
    assert client.get(f"{path}?_=1700000000").status_code == 200

"""The operational surface: health, readiness, metrics, the OpenAPI document and
its viewer, and what every response carries (api.md §2, §4).

The OpenAPI checks are an inventory in both directions: every route of
``ROUTES`` is documented with its method, and every route the app actually
serves is in the document, so a route cannot be added to one without the other.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from starlette.routing import Route
from starlette.testclient import TestClient

from tally.api.endpoint import RouteSpec
from tally.api.routes import LEDGER_ROUTES as ROUTES
from tests.api.conftest import Api

PROBLEM = "application/problem+json"
SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def assert_problem(r: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    problem: dict[str, Any] = r.json()
    assert problem["status"] == status
    assert problem["type"] and problem["title"] and problem["detail"]
    if code is not None:
        assert problem["code"] == code
    return problem


@pytest.fixture
def openapi(client: TestClient) -> dict[str, Any]:
    r = client.get("/openapi.json")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    document: dict[str, Any] = r.json()
    return document


# -- health, readiness, metrics ------------------------------------------------------------


def test_healthz_answers_200_without_credentials(client: TestClient) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "ok"


def test_readyz_answers_200_while_the_database_is_reachable(client: TestClient) -> None:
    r = client.get("/readyz")
    assert r.status_code == 200, r.text


def test_metrics_are_prometheus_text_counting_http_requests(api: Api) -> None:
    assert api.get("/v1/accounts").status_code == 200
    r = api.client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    assert "tally_http_requests" in r.text
    counted = [
        line
        for line in r.text.splitlines()
        if line.startswith("tally_http_requests") and 'route="/v1/accounts"' in line
    ]
    assert any('method="GET"' in line and 'status="200"' in line for line in counted), counted


# -- the OpenAPI document ------------------------------------------------------------------


def test_openapi_document_is_version_3_1(openapi: dict[str, Any]) -> None:
    assert openapi["openapi"].startswith("3.1.")
    assert openapi["info"]["title"] and openapi["info"]["version"]


@pytest.mark.parametrize("spec", [pytest.param(s, id=f"{s.method} {s.path}") for s in ROUTES])
def test_openapi_documents_every_route_with_its_method(
    openapi: dict[str, Any], spec: RouteSpec
) -> None:
    operation = openapi["paths"].get(spec.path, {}).get(spec.method.lower())
    assert operation is not None, f"{spec.method} {spec.path} is not documented"
    assert operation["operationId"] == spec.operation_id
    for status in spec.success:
        assert str(status) in operation["responses"]
    assert "401" in operation["responses"]


def served_operations(client: TestClient) -> set[tuple[str, str]]:
    """Every (method, path) the app routes, HEAD aside (Starlette adds it to each GET),
    but the web console's pages: HTML for people, not the API, kept out of the
    document on purpose (docs/console.md; tests/security/test_api9_inventory.py)."""
    served = set()
    for route in client.app.routes:  # type: ignore[attr-defined]
        assert isinstance(route, Route), route
        if route.path.startswith("/console"):
            continue
        for method in route.methods or ():
            if method != "HEAD":
                served.add((method, route.path))
    return served


def test_every_served_route_is_in_the_openapi_document(
    client: TestClient, openapi: dict[str, Any]
) -> None:
    undocumented = sorted(
        (method, path)
        for method, path in served_operations(client)
        if method.lower() not in openapi["paths"].get(path, {})
    )
    assert undocumented == []


def test_every_documented_operation_is_served(client: TestClient, openapi: dict[str, Any]) -> None:
    documented = {
        (method.upper(), path)
        for path, item in openapi["paths"].items()
        for method in item
        if method in ("get", "put", "post", "delete", "patch", "options", "head", "trace")
    }
    assert documented - served_operations(client) == set()


# The document states every rule a JSON Schema can state, so that a client (or
# schemathesis) that keeps to it is not refused for its request's shape.


def parameter(openapi: dict[str, Any], path: str, method: str, name: str) -> dict[str, Any]:
    params = openapi["paths"][path][method]["parameters"]
    found: dict[str, Any] = next(p["schema"] for p in params if p["name"] == name)
    return found


QUERY_TEXT = [
    ("/v1/accounts", "cursor"),
    ("/v1/accounts", "currency"),
    ("/v1/transfers", "cursor"),
    ("/v1/transfers", "account_id"),
    ("/v1/events", "cursor"),
]


@pytest.mark.parametrize(("path", "name"), QUERY_TEXT)
def test_the_document_bounds_query_text_as_the_server_does(
    api: Api, openapi: dict[str, Any], path: str, name: str
) -> None:
    schema = parameter(openapi, path, "get", name)
    assert schema["minLength"] == 1
    assert re.fullmatch(schema["pattern"], "a\x00b") is None
    for value in ("", "x" * (schema["maxLength"] + 1), "a\x00b"):
        problem = assert_problem(api.get(path, params={name: value}), 422, "validation_error")
        assert [e["field"] for e in problem["errors"]] == [name]


@pytest.mark.parametrize("name", ["\x1d\x1d", " ", "\u3000\t", "key one"])
def test_the_documented_name_pattern_is_the_servers_rule(
    api: Api, openapi: dict[str, Any], name: str
) -> None:
    # schemathesis sent "\x1d\x1d": white space to Python's strip(), so refused,
    # while the document allowed any text without NUL.
    pattern = openapi["components"]["schemas"]["ApiKeyCreate"]["properties"]["name"]["pattern"]
    r = api.post("/v1/api-keys", {"name": name, "scopes": ["accounts:read"]})
    assert (r.status_code == 201) == (re.search(pattern, name) is not None), r.text


def test_the_documented_if_match_matches_the_etags_the_server_issues(
    api: Api, openapi: dict[str, Any]
) -> None:
    pattern = parameter(openapi, "/v1/accounts/{id}", "patch", "If-Match")["pattern"]
    api.account("a")
    etag = api.get("/v1/accounts/a").headers["etag"]
    for good in (etag, f"W/{etag}", "*"):
        assert re.fullmatch(pattern, good), good
    for bad in ("", "garbage", '"abc"', '"-1"', '"' + "9" * 20 + '"', '"\xb2"'):
        assert re.fullmatch(pattern, bad) is None, bad


def test_the_documented_bound_of_after_is_the_servers(api: Api, openapi: dict[str, Any]) -> None:
    after_max = parameter(openapi, "/v1/events", "get", "after")["maximum"]
    assert api.get("/v1/events", params={"after": after_max}).status_code == 200
    problem = assert_problem(
        api.get("/v1/events", params={"after": after_max + 1}), 422, "validation_error"
    )
    assert [e["field"] for e in problem["errors"]] == ["after"]


def test_the_document_states_the_rules_a_schema_can(openapi: dict[str, Any]) -> None:
    schemas = openapi["components"]["schemas"]
    both = schemas["AccountFlags"]["not"]
    assert (
        sorted(both["required"])
        == sorted(both["properties"])
        == sorted(["debits_must_not_exceed_credits", "credits_must_not_exceed_debits"])
    )
    create = openapi["paths"]["/v1/transfers"]["post"]["requestBody"]
    pending, no_timeout = create["content"]["application/json"]["schema"]["anyOf"]
    assert pending["properties"]["pending"] == {"const": True}
    assert no_timeout["properties"]["timeout_seconds"] == {"type": "null"}
    post, no_amount = schemas["BatchAction"]["anyOf"]
    assert post["properties"]["action"] == {"const": "post"}
    assert no_amount["properties"]["amount"] == {"type": "null"}


# -- headers on every response --------------------------------------------------------------

# Requests that reach each kind of response: success, the app's own routes, and every
# way an error is rendered (router, authentication, parsing, validation, the ledger).
RESPONSES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "healthz": ("GET", "/healthz", {}),
    "readyz": ("GET", "/readyz", {}),
    "metrics": ("GET", "/metrics", {}),
    "openapi": ("GET", "/openapi.json", {}),
    "docs": ("GET", "/docs", {}),
    "list": ("GET", "/v1/accounts", {"auth": True}),
    "create": ("POST", "/v1/accounts", {"auth": True, "json": {"currency": "USD"}}),
    "unknown_route": ("GET", "/nope", {}),
    "wrong_method": ("DELETE", "/v1/accounts", {}),
    "unauthenticated": ("GET", "/v1/accounts", {}),
    "not_found": ("GET", "/v1/accounts/nope", {"auth": True}),
    "malformed": ("POST", "/v1/accounts", {"auth": True, "content": b"{"}),
    "invalid": ("POST", "/v1/accounts", {"auth": True, "json": {"currency": 1}}),
    "media_type": ("POST", "/v1/accounts", {"auth": True, "content": b"{}"}),
    "too_large": ("POST", "/v1/accounts", {"auth": True, "content": b" " * (1024 * 1024 + 1)}),
    "ledger_refusal": (
        "POST",
        "/v1/transfers",
        {"auth": True, "json": {"debit_account_id": "a", "credit_account_id": "b", "amount": 1}},
    ),
}


def send(api: Api, case: str, headers: dict[str, str] | None = None) -> httpx.Response:
    method, path, options = RESPONSES[case]
    options = dict(options)
    all_headers = {**(api.headers if options.pop("auth", False) else {}), **(headers or {})}
    if "content" in options:
        all_headers.setdefault("Content-Type", "application/json")
    r: httpx.Response = api.client.request(method, path, headers=all_headers, **options)
    return r


@pytest.mark.parametrize("case", sorted(RESPONSES))
def test_every_response_carries_a_request_id_and_nosniff(api: Api, case: str) -> None:
    r = send(api, case)
    assert r.status_code < 500, r.text
    request_id = r.headers.get("request-id")
    assert request_id and SANE_REQUEST_ID.match(request_id), request_id
    assert r.headers.get("x-content-type-options") == "nosniff"
    if r.headers["content-type"] == PROBLEM:
        assert r.json().get("request_id", request_id) == request_id


def test_each_response_has_its_own_request_id(client: TestClient) -> None:
    ids = {client.get("/healthz").headers["request-id"] for _ in range(5)}
    assert len(ids) == 5


@pytest.mark.parametrize("sent", ["abc-123", "trace:1.2_3", "A" * 64, "0"])
@pytest.mark.parametrize("case", ["healthz", "list", "unauthenticated", "invalid"])
def test_a_sane_client_request_id_is_echoed(api: Api, case: str, sent: str) -> None:
    r = send(api, case, {"Request-Id": sent})
    assert r.headers["request-id"] == sent
    if r.headers["content-type"] == PROBLEM:
        assert r.json().get("request_id", sent) == sent


@pytest.mark.parametrize(
    "sent",
    [
        "x" * 200,
        "a b",
        "",
        " ",
        "<script>alert(1)</script>",
        "a\tb",
        "back\\slash",
        "-" * 65,
        "a,b",
    ],
    ids=repr,
)
@pytest.mark.parametrize("case", ["healthz", "list", "invalid"])
def test_an_insane_client_request_id_is_replaced(api: Api, case: str, sent: str) -> None:
    r = send(api, case, {"Request-Id": sent})
    request_id = r.headers["request-id"]
    assert request_id != sent
    assert SANE_REQUEST_ID.match(request_id), request_id
    if len(sent) > 3:
        assert sent not in r.text  # not reflected anywhere


def test_a_request_id_of_non_ascii_bytes_is_replaced(client: TestClient) -> None:
    r = client.get("/healthz", headers={b"Request-Id": "café".encode("latin-1")})
    assert r.status_code == 200
    assert SANE_REQUEST_ID.match(r.headers["request-id"])


# -- routing errors ------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/nope", "/v1", "/v1/nope", "/v2/accounts", "/v1/accounts/a/b/c"])
def test_an_unknown_route_is_a_404_problem(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert_problem(r, 404, "not_found")
    assert r.headers.get("request-id")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", "/v1/accounts"),
        ("PUT", "/v1/accounts"),
        ("DELETE", "/v1/accounts/a1"),
        ("POST", "/v1/accounts/a1"),
        ("PATCH", "/v1/transfers/t1"),
        ("GET", "/v1/transfers/t1/post"),
        ("POST", "/healthz"),
        ("POST", "/openapi.json"),
    ],
)
def test_a_wrong_method_is_a_405_problem_naming_an_allowed_method(
    client: TestClient, method: str, path: str
) -> None:
    r = client.request(method, path)
    assert_problem(r, 405)
    assert r.headers.get("request-id")
    assert r.headers.get("allow")


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/v1/accounts", {"GET", "POST"}),
        ("/v1/accounts/a1", {"GET", "PATCH"}),
        ("/v1/transfers", {"GET", "POST"}),
    ],
)
def test_a_405_allows_every_method_the_resource_serves(
    client: TestClient, path: str, allowed: set[str]
) -> None:
    # RFC 9110 §15.5.6: a 405 MUST list the target resource's supported methods, and
    # here one path is served by two routes, one per method.
    r = client.delete(path)
    assert r.status_code == 405
    assert allowed <= {m.strip() for m in r.headers["allow"].split(",")}


# -- the docs viewer -----------------------------------------------------------------------


def test_docs_are_html_that_no_other_site_may_frame(client: TestClient) -> None:
    r = client.get("/docs")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in r.text
    policy = r.headers["content-security-policy"]
    directives = {d.strip().split(" ", 1)[0]: d.strip() for d in policy.split(";") if d.strip()}
    assert directives["frame-ancestors"] == "frame-ancestors 'none'"
    assert r.headers.get("x-content-type-options") == "nosniff"

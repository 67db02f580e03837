"""API9:2023 Improper Inventory Management.

What this module proves:

- the inventory is one list: every route the running app serves (with each of its
  methods) is in the published ``/openapi.json``, every documented operation is
  served, and ``tally.api.openapi.ROUTES`` is exactly the ``/v1`` part of both;
  the rest are the operational routes, the GraphiQL page and its files (open),
  and ``/graphql`` (GET and POST, with a credential);
- the published document is the one the code builds, of this version, and says
  how each operation is protected: the bearer scheme on every authenticated
  route and none on the four open ones, and the 401, 403, 404, 413, 415, 422 and
  429 answers a route can give;
- the web console (``/console``, docs/console.md) is the one part served but not
  in the document, on purpose: it is HTML for people, not the API, and has a
  route table of its own (``tally.console.CONSOLE_ROUTES``), which is exactly what
  is served under ``/console``;
- there is no shadow API: other versions, prefixes, debug, admin or internal
  paths, and files a careless deployment serves, all answer 404; so does every
  documented path with a trailing slash, rather than a redirect the document
  does not describe (and which would be built from the client's Host header).
"""

from __future__ import annotations

from typing import Any

import pytest
from starlette.routing import Route
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

import tally
from tally.api.graphql import graphiql
from tally.api.openapi import ROUTES, build_openapi
from tally.console import CONSOLE_ROUTES
from tally.console.routes import LIVE_SCRIPT_PATH, STYLESHEET_PATH
from tests.security.conftest import Tenant, assert_problem

GRAPHIQL = {graphiql.PAGE_PATH} | {graphiql.asset_path(name) for name, _ in graphiql.ASSETS}
OPERATIONAL = {
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/docs",
    "/docs/reference.css",
    *GRAPHIQL,
}
GRAPHQL = "/graphql"
CONSOLE = {(r.method, r.path) for r in CONSOLE_ROUTES} | {
    ("GET", STYLESHEET_PATH),
    ("GET", LIVE_SCRIPT_PATH),
}


@pytest.fixture(scope="module")
def document(client: TestClient) -> dict[str, Any]:
    r = client.get("/openapi.json")
    assert r.status_code == 200, r.text
    published: dict[str, Any] = r.json()
    return published


def served(client: TestClient) -> set[tuple[str, str]]:
    """(method, path) of every route of the running app (HEAD comes with GET)."""
    app: Any = client.app
    pairs = set()
    for route in app.routes:
        assert isinstance(route, Route), f"an unexpected kind of route: {route!r}"
        for method in route.methods or ():
            if method != "HEAD":
                pairs.add((method, route.path))
    return pairs


def documented(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
    }


def test_every_served_route_is_documented_and_every_documented_route_is_served(
    client: TestClient, document: dict[str, Any]
) -> None:
    assert served(client) - CONSOLE == documented(document)
    v1 = {(m, p) for m, p in documented(document) if p.startswith("/v1/")}
    assert v1 == {(s.method, s.path) for s in ROUTES}
    assert {p for _, p in documented(document)} - {p for _, p in v1} == OPERATIONAL | {GRAPHQL}
    assert {m for m, p in documented(document) if p == GRAPHQL} == {"GET", "POST"}


def test_the_console_is_served_from_its_own_table_and_kept_out_of_the_api_document(
    client: TestClient, document: dict[str, Any]
) -> None:
    assert {(m, p) for m, p in served(client) if p.startswith("/console")} == CONSOLE
    assert not [p for p in document["paths"] if p.startswith("/console")]
    for method, path in sorted(CONSOLE):
        r = client.request(
            method,
            path.replace("{id}", "x") + "/",
            headers={"Host": "attacker.example"},
            follow_redirects=False,
        )
        assert "location" not in r.headers, (path, r.headers)
        assert_problem(r, 404, "not_found")


def test_every_documented_operation_answers_rather_than_no_route(
    tenant: Tenant, client: TestClient, document: dict[str, Any]
) -> None:
    owner = tenant.owner
    for method, path in sorted(documented(document)):
        if method in ("POST", "PATCH", "DELETE"):
            continue  # their effect is tested elsewhere; routing is the same for all
        r = owner.request(method, path.replace("{id}", "src"))
        assert r.status_code != 405, path
        if r.status_code == 404:
            assert "No route" not in r.json()["detail"], path


def test_the_published_document_is_the_one_the_code_builds(
    document: dict[str, Any],
) -> None:
    assert document == build_openapi()
    assert document["info"]["version"] == tally.__version__
    assert document["openapi"].startswith("3.1")
    assert document["components"]["securitySchemes"] == {
        "bearer": {"type": "http", "scheme": "bearer"}
    }


def test_every_operation_says_how_it_is_protected_and_how_it_can_fail(
    document: dict[str, Any],
) -> None:
    for spec in ROUTES:
        operation = document["paths"][spec.path][spec.method.lower()]
        responses = set(operation["responses"])
        name = f"{spec.method} {spec.path}"
        assert "429" in responses, name
        if spec.auth:
            assert operation["security"] == [{"bearer": []}], name
            assert "401" in responses, name
        else:
            assert operation["security"] == [], name
        if spec.scope:
            assert "403" in responses, name
        if "{id}" in spec.path:
            assert "404" in responses, name
        if spec.request is not None:
            assert {"413", "415", "422"} <= responses, name
        if any(p.name == "limit" for p in spec.params):
            assert "422" in responses, name
    for path in OPERATIONAL:
        assert document["paths"][path]["get"]["security"] == [], path
    for method, operation in document["paths"][GRAPHQL].items():
        assert operation["security"] == [{"bearer": []}], method
        assert {"401", "422", "429"} <= set(operation["responses"]), method


SHADOW_PATHS = [
    "/v0/accounts",
    "/v2/accounts",
    "/api/v1/accounts",
    "/v1",
    "/v1/",
    "/v1/admin",
    "/v1/debug",
    "/v1/internal",
    "/v1/users",
    "/v1/users/me",
    "/v1/tenants",
    "/v1/signing-keys",
    "/v1/sessions",
    "/v1/invitations",
    "/v1/audit-events/verify",
    "/admin",
    "/debug",
    "/internal/metrics",
    "/swagger.json",
    "/openapi.yaml",
    "/redoc",
    "/.env",
    "/.git/config",
    "/server-status",
    "/tally.db",
]


@pytest.mark.parametrize("path", SHADOW_PATHS)
def test_there_is_no_shadow_api(tenant: Tenant, path: str) -> None:
    for method in ("GET", "POST"):
        r = tenant.owner.request(method, path, json={})
        assert_problem(r, 404, "not_found")


def test_a_documented_path_with_a_trailing_slash_is_not_found_not_redirected(
    tenant: Tenant, document: dict[str, Any]
) -> None:
    for path in sorted(document["paths"]):
        r = tenant.owner.get(
            path.replace("{id}", "src") + "/",
            headers={"Host": "attacker.example"},
            follow_redirects=False,
        )
        assert "location" not in r.headers, (path, r.status_code, r.headers.get("location"))
        assert_problem(r, 404, "not_found")


def test_the_one_websocket_is_documented_and_served_and_no_other(
    tenant: Tenant, client: TestClient, document: dict[str, Any]
) -> None:
    assert set(document["x-websockets"]) == {"/v1/events/ws"}
    with client.websocket_connect("/v1/events/ws", headers=tenant.owner.headers) as ws:
        ws.close()
    for path in ("/v1/events/ws/", "/v1/events", "/v1/ws", "/ws", "/v1/events/stream"):
        with pytest.raises(WebSocketDisconnect):
            client.websocket_connect(path, headers=tenant.owner.headers).__enter__()

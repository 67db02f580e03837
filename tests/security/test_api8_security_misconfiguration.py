"""API8:2023 Security Misconfiguration.

What this module proves:

- every kind of response (2xx, 204, HEAD, each 4xx the API answers, 429, 503,
  unknown routes, the operational routes, a CORS preflight) carries
  ``Request-Id`` and the security headers of docs/security.md; ``/docs`` has its
  own CSP, still with ``frame-ancestors 'none'``; HSTS is sent over https only;
  nothing advertises the server's software;
- CORS is off by default; with ``cors_origins`` it allows exactly those origins
  (no look-alikes, no ``null``, never ``*`` and never credentials), and a
  preflight for an allowed origin names the methods and headers the API uses;
- errors never contain a stack trace, SQL, a library's message, a path on disk
  or a secret, and no input (SQL-like ids, NUL characters, broken UTF-8, broken
  JSON, odd numbers, odd headers) produces a 500, on either database;
- a database that cannot be reached is a 503 that names neither the database's
  address nor its password;
- secrets (passwords, tokens, API keys, invitation tokens) are never logged, not
  even when a request carrying one fails.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from tally.console import CONSOLE_ROUTES
from tally.console.web import ConsoleRoute
from tests.conftest import create_tenant
from tests.console_client import Browser, Jar
from tests.security.conftest import (
    OTHER_PASSWORD,
    PASSWORD,
    PROBLEM,
    Tenant,
    assert_problem,
    console_call,
    console_path,
    invite,
    login,
    make_key,
    serve,
    signup,
)

SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "cache-control": "no-store",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-resource-policy": "same-origin",
}
API_CSP = "default-src 'none'; frame-ancestors 'none'"
GQL_ACCOUNTS = {"query": "{ accounts { nodes { id } } }"}
JSON = {"Content-Type": "application/json"}


def assert_hardened(r: httpx.Response, what: str, *, https: bool = False) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert r.headers.get(name) == value, (what, name, dict(r.headers))
    csp = r.headers.get("content-security-policy", "")
    assert "frame-ancestors 'none'" in csp, (what, csp)
    assert "default-src 'none'" in csp, (what, csp)
    assert re.fullmatch(r"[A-Za-z0-9._:-]{1,64}", r.headers.get("request-id", "")), (
        what,
        dict(r.headers),
    )
    for name in ("server", "x-powered-by", "x-aspnet-version"):
        assert name not in r.headers, (what, name)
    if https:
        hsts = r.headers.get("strict-transport-security", "")
        match = re.fullmatch(r"max-age=(\d+); includeSubDomains", hsts)
        assert match is not None and int(match.group(1)) >= 31_536_000, (what, hsts)
    else:
        assert "strict-transport-security" not in r.headers, what


def every_kind_of_response(c: TestClient, key: str, viewer_key: str) -> dict[str, httpx.Response]:
    """One response of each kind the API gives, from an app ``c`` and two keys of
    one tenant (one with every scope, one read-only)."""
    auth = {"Authorization": f"Bearer {key}"}
    viewer = {"Authorization": f"Bearer {viewer_key}"}
    doomed = c.post(
        "/v1/api-keys", json={"name": "doomed", "scopes": ["events:read"]}, headers=auth
    ).json()["api_key"]["id"]
    big = b'{"currency": "' + b"U" * (1024 * 1024) + b'"}'
    return {
        "200": c.get("/v1/accounts", headers=auth),
        "201": c.post("/v1/accounts", json={"currency": "USD"}, headers=auth),
        "204": c.delete(f"/v1/api-keys/{doomed}", headers=auth),
        "HEAD": c.head("/v1/accounts", headers=auth),
        "400": c.post("/v1/accounts", content=b"{", headers={**auth, **JSON}),
        "401": c.get("/v1/accounts"),
        "403": c.post("/v1/accounts", json={"currency": "USD"}, headers=viewer),
        "404 object": c.get("/v1/accounts/nowhere", headers=auth),
        "404 route": c.get("/nowhere"),
        "404 v1 route": c.get("/v1/nowhere", headers=auth),
        "405": c.put("/v1/accounts", json={}, headers=auth),
        "413": c.post("/v1/accounts", content=big, headers={**auth, **JSON}),
        "415": c.post(
            "/v1/accounts",
            content=b"currency=USD",
            headers={**auth, "Content-Type": "application/x-www-form-urlencoded"},
        ),
        "422": c.post("/v1/accounts", json={"currency": 1}, headers=auth),
        "open route 401": c.post(
            "/v1/auth/login", json={"email": "a@b.example", "password": PASSWORD}
        ),
        "healthz": c.get("/healthz"),
        "readyz": c.get("/readyz"),
        "metrics": c.get("/metrics"),
        "openapi": c.get("/openapi.json"),
        "graphql 200": c.post(
            "/graphql", json={"query": "{ accounts { nodes { id } } }"}, headers=auth
        ),
        "graphql errors": c.post("/graphql", json={"query": "{ nowhere }"}, headers=auth),
        "graphql 400": c.post("/graphql", content=b"{", headers={**auth, **JSON}),
        "graphql 401": c.post("/graphql", json={"query": "{ accounts { nodes { id } } }"}),
        "graphql GET": c.get(
            "/graphql", params={"query": "{ accounts { nodes { id } } }"}, headers=auth
        ),
        "graphiql asset": c.get("/graphiql/init.js"),
    }


@pytest.fixture
def keys(database_url: str, client: TestClient) -> tuple[str, str]:
    """A tenant's all-scope key and a read-only key made by it."""
    _, key = create_tenant(database_url, "headers")
    r = client.post(
        "/v1/api-keys",
        json={"name": "viewer", "scopes": ["accounts:read"]},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert r.status_code == 201, r.text
    return key, r.json()["secret"]


def test_every_kind_of_response_carries_the_security_headers(
    client: TestClient, keys: tuple[str, str]
) -> None:
    responses = every_kind_of_response(client, *keys)
    expected = {"200": 200, "201": 201, "204": 204, "HEAD": 200, "413": 413, "readyz": 200}
    for what, r in responses.items():
        assert r.status_code < 500, (what, r.text)
        if what in expected:
            assert r.status_code == expected[what], (what, r.text)
        assert_hardened(r, what)
        assert r.headers.get("content-security-policy") == API_CSP, what


def test_docs_have_their_own_csp_that_still_forbids_framing(client: TestClient) -> None:
    r = client.get("/docs")
    assert r.status_code == 200
    assert_hardened(r, "docs")
    csp = r.headers["content-security-policy"]
    # Nothing but Tally's own stylesheet: no script at all, no inline code, no CDN.
    sources = {word for part in csp.split(";") for word in part.split()[1:]}
    assert sources <= {"'self'", "'none'"}, csp
    assert "script-src" not in csp, csp


def test_graphiql_has_its_own_csp_that_allows_only_tally_and_still_forbids_framing(
    client: TestClient,
) -> None:
    r = client.get("/graphiql")
    assert r.status_code == 200
    assert_hardened(r, "graphiql")
    csp = r.headers["content-security-policy"]
    # Scripts and styles from Tally only, never inline; GraphiQL's embedded fonts and
    # icons as data: URLs; no CDN, no eval.
    sources = {word for part in csp.split(";") for word in part.split()[1:]}
    assert sources <= {"'self'", "'none'", "data:"}, csp
    for directive in ("script-src", "style-src", "connect-src"):
        assert f"{directive} 'self';" in csp, csp


CONSOLE_CSP = {
    "default-src 'none'",
    "style-src 'self'",
    "img-src 'self'",
    "form-action 'self'",
    "base-uri 'none'",
    "frame-ancestors 'none'",
}
# The events page runs one file of this origin (its live feed, console/static/live.js)
# and connects back to this origin's event stream; no other page runs any script.
CONSOLE_LIVE_CSP = CONSOLE_CSP | {"script-src 'self'", "connect-src 'self'"}
CONSOLE_SCRIPTED = {"/console/events"}


@pytest.mark.parametrize(
    "route",
    [pytest.param(r, id=f"{r.method} {r.path}") for r in CONSOLE_ROUTES if r.method == "GET"],
)
def test_every_console_page_carries_the_headers_and_a_csp_without_script_but_the_feed(
    consoles: dict[str, Browser], route: ConsoleRoute
) -> None:
    for what, r in (
        ("signed in", console_call(consoles["owner"], route, console_path(route))),
        ("signed out", Browser(Jar(consoles["owner"].client.base), "").get(console_path(route))),
    ):
        name = f"{route.path} {what}"
        assert r.status_code in (200, 303), (name, r.status_code)
        for header, value in SECURITY_HEADERS.items():
            if header != "referrer-policy":
                assert r.headers.get(header) == value, (name, header)
        assert "request-id" in r.headers, name
        # The console's own: a real Origin on its forms (see console/web.py), and
        # still no referrer to any other site.
        assert r.headers["referrer-policy"] == "same-origin", name
        if r.status_code == 200 and r.headers["content-type"].startswith("text/html"):
            csp = {d.strip() for d in r.headers["content-security-policy"].split(";")}
            expected = CONSOLE_LIVE_CSP if route.path in CONSOLE_SCRIPTED else CONSOLE_CSP
            assert csp == expected, (name, csp)
        elif r.status_code == 200:  # the live feed's stream: data, not a page
            assert r.headers["content-type"].startswith("text/event-stream"), name


def test_console_errors_show_no_internals(consoles: dict[str, Browser]) -> None:
    owner = consoles["owner"]
    for path in (
        "/console/accounts/' OR '1'='1",
        "/console/accounts?cursor=%00",
        "/console/accounts?q=' OR 1=1--",
        "/console/accounts?meta_key=a' OR 1=1--&meta_value=x",
        "/console/transfers/1;DROP TABLE transfers",
        "/console/events?after=99999999999999999999999",
    ):
        r = owner.get(path)
        assert r.status_code < 500, (path, r.text)
        main = r.text.split('<main id="main" tabindex="-1">')[1]
        assert not LEAKS.search(main), (path, main)


def test_hsts_is_sent_over_https_on_every_kind_of_response(
    database_url: str, keys: tuple[str, str]
) -> None:
    with serve(database_url, base_url="https://testserver") as c:
        for what, r in every_kind_of_response(c, *keys).items():
            assert_hardened(r, what, https=True)


def test_a_429_and_a_503_carry_the_security_headers(database_url: str) -> None:
    _, key = create_tenant(database_url, "limited")
    with serve(database_url, rate_limit_burst=1, rate_limit_per_second=0.05) as c:
        headers = {"Authorization": f"Bearer {key}"}
        assert c.get("/v1/accounts", headers=headers).status_code == 200
        r = c.get("/v1/accounts", headers=headers)
        assert_problem(r, 429, "rate_limited")
        assert_hardened(r, "429")
    with serve("postgresql://tally:pw@127.0.0.1:1/tally", db_connect_timeout_seconds=0.5) as c:
        r = c.get("/readyz")
        assert_problem(r, 503, "unavailable")
        assert_hardened(r, "503")


# -- CORS -------------------------------------------------------------------------------------

ALLOWED = "https://app.example"
PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
}


def test_cors_is_off_by_default(client: TestClient, keys: tuple[str, str]) -> None:
    auth = {"Authorization": f"Bearer {keys[0]}"}
    for origin in (ALLOWED, "https://evil.example", "null"):
        r = client.get("/v1/accounts", headers={**auth, "Origin": origin})
        assert r.status_code == 200
        assert not [h for h in r.headers if h.startswith("access-control-")], dict(r.headers)
        r = client.options("/v1/accounts", headers={"Origin": origin, **PREFLIGHT})
        assert not [h for h in r.headers if h.startswith("access-control-")], dict(r.headers)


def test_cors_allows_exactly_the_configured_origins(
    database_url: str, keys: tuple[str, str]
) -> None:
    auth = {"Authorization": f"Bearer {keys[0]}"}
    with serve(database_url, cors_origins=[ALLOWED]) as c:
        r = c.get("/v1/accounts", headers={**auth, "Origin": ALLOWED})
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == ALLOWED
        assert "origin" in r.headers.get("vary", "").lower()
        assert "access-control-allow-credentials" not in r.headers
        exposed = r.headers["access-control-expose-headers"].lower()
        for name in ("request-id", "retry-after", "ratelimit", "ratelimit-policy", "etag"):
            assert name in exposed, exposed
        for origin in (
            "https://evil.example",
            "https://app.example.evil.example",
            "https://evilapp.example",
            "http://app.example",
            "https://app.example:8443",
            "null",
        ):
            r = c.get("/v1/accounts", headers={**auth, "Origin": origin})
            assert "access-control-allow-origin" not in r.headers, origin
            r = c.options("/v1/accounts", headers={"Origin": origin, **PREFLIGHT})
            assert "access-control-allow-origin" not in r.headers, origin
            assert r.status_code >= 400, origin


def test_a_preflight_for_an_allowed_origin_names_the_apis_methods_and_headers(
    database_url: str,
) -> None:
    with serve(database_url, cors_origins=[ALLOWED]) as c:
        for path in ("/v1/accounts", "/v1/transfers/x/post", "/v1/members/x"):
            r = c.options(path, headers={"Origin": ALLOWED, **PREFLIGHT})
            assert r.status_code == 200, r.text
            assert r.headers["access-control-allow-origin"] == ALLOWED
            assert "access-control-allow-credentials" not in r.headers
            methods = {m.strip() for m in r.headers["access-control-allow-methods"].split(",")}
            assert methods >= {"GET", "POST", "PATCH", "DELETE"}
            allowed = r.headers["access-control-allow-headers"].lower()
            for name in ("authorization", "content-type", "idempotency-key", "if-match"):
                assert name in allowed, allowed
            assert int(r.headers["access-control-max-age"]) <= 86_400


def test_a_cors_preflight_answer_carries_request_id_and_the_security_headers(
    database_url: str,
) -> None:
    """api.md §2: every response carries Request-Id; docs/security.md: the headers
    are on every response. The CORS middleware answers preflights itself."""
    with serve(database_url, cors_origins=[ALLOWED]) as c:
        allowed = c.options("/v1/accounts", headers={"Origin": ALLOWED, **PREFLIGHT})
        refused = c.options("/v1/accounts", headers={"Origin": "https://x.example", **PREFLIGHT})
        for what, r in (("allowed preflight", allowed), ("refused preflight", refused)):
            assert_hardened(r, what)


# -- errors -----------------------------------------------------------------------------------


def without_request_id(r: httpx.Response) -> str:
    """The body less its request id: a random id such as req_01…0XD5D678B… would
    otherwise read as a memory address (a flaky failure seen in a full run)."""
    return r.text.replace(r.headers.get("request-id", "\x00"), "")


LEAKS = re.compile(
    r"Traceback|File \"|\.py\b|line \d+|/work/|/home/|/usr/|site-packages|"
    r"sqlite|psycopg|asyncpg|postgres|alembic|sqlalchemy|msgspec|starlette|pydantic|"
    r"SELECT |INSERT |UPDATE |DELETE FROM|syntax error|constraint|relation \"|"
    r"Exception|Error:|errno|0x[0-9a-f]{6,}",
    re.IGNORECASE,
)
NUL = "\u0000"

# (method, path, raw body or JSON-able body, extra headers): a client's mistakes and
# an attacker's probes. Some are harmless and answered 200 (a filter that matches
# nothing); none may be a 500, and no error may show what is behind the API.
PROVOCATIONS: list[tuple[str, str, Any, dict[str, Any]]] = [
    ("GET", "/v1/accounts/' OR '1'='1", None, {}),
    ("GET", "/v1/accounts/1;DROP TABLE accounts", None, {}),
    ("GET", "/v1/accounts?currency=' OR 1=1--", None, {}),
    ("GET", "/v1/accounts?metadata[a' OR 1=1--]=x", None, {}),
    ("GET", "/v1/accounts?metadata[k]=%00", None, {}),
    ("GET", "/v1/accounts?status=open'--", None, {}),
    ("GET", "/v1/transfers?account_id=%00", None, {}),
    ("GET", "/v1/transfers?account_id=src'--", None, {}),
    ("GET", "/v1/transfers?created_after=not-a-time", None, {}),
    ("GET", "/v1/transfers?created_after=99999-01-01T00:00:00Z", None, {}),
    ("GET", "/v1/transfers?created_before=0001-01-01T00:00:00-23:59", None, {}),
    ("GET", "/v1/transfers?cursor=%ff%fe%00", None, {}),
    ("GET", "/v1/events?after=99999999999999999999999", None, {}),
    ("GET", "/v1/events?after=-1", None, {}),
    ("GET", "/v1/members?cursor=' OR 1=1--", None, {}),
    ("GET", "/v1/api-keys?cursor=aWQ6JyBPUiAxPTEtLQ", None, {}),  # "id:' OR 1=1--"
    ("GET", "/v1/audit-events?cursor=garbage", None, {}),
    ("GET", "/v1/audit-events?cursor=djE6OTk5OTk5OTk5OTk5OTk5OTk5OTk5OQ", None, {}),
    ("GET", "/v1/accounts/src/balances?at=garbage", None, {}),
    ("GET", "/v1/accounts/src/balances?at=1970-01-01T00:00:00Z", None, {}),
    ("GET", "/v1/accounts/src/balances?at=9999-12-31T23:59:59.999999Z", None, {}),
    ("POST", "/v1/accounts", b'{"currency": "USD", "id": "\\u0000"}', {}),
    ("POST", "/v1/accounts", b'{"currency": "USD", "metadata": {"k\\u0000": "v"}}', {}),
    ("POST", "/v1/accounts", b'\xff\xfe{"currency": "USD"}', {}),
    ("POST", "/v1/accounts", b'{"currency": "USD"', {}),
    ("POST", "/v1/accounts", b'{"currency": "USD"}{"currency": "EUR"}', {}),
    ("POST", "/v1/accounts", b'{"currency": "US\\ud800D"}', {}),
    ("POST", "/v1/accounts", b"", {}),
    ("POST", "/v1/accounts", b"null", {}),
    ("POST", "/v1/accounts", b'"a string"', {}),
    (
        "POST",
        "/v1/transfers",
        b'{"debit_account_id": "src", "credit_account_id": "dst", "amount": 1e400}',
        {},
    ),
    (
        "POST",
        "/v1/transfers",
        b'{"debit_account_id": "src", "credit_account_id": "dst", "amount": NaN}',
        {},
    ),
    (
        "POST",
        "/v1/transfers",
        b'{"debit_account_id": "src", "credit_account_id": "dst", "amount": -9223372036854775809}',
        {},
    ),
    ("POST", "/v1/accounts", {"currency": "USD"}, {"Idempotency-Key": b"\xe9t\xe9"}),
    ("POST", "/v1/accounts", {"currency": "USD"}, {"Idempotency-Key": "k" * 300}),
    ("PATCH", "/v1/accounts/src", {"metadata": {}}, {"If-Match": '"' + "9" * 40 + '"'}),
    ("PATCH", "/v1/accounts/src", {"metadata": {}}, {"If-Match": "' OR 1=1--"}),
    ("POST", "/v1/accounts", {"currency": "USD"}, {"Content-Type": "application/json; x=\x7f"}),
    ("POST", "/v1/members", {"email": f"n{NUL}l@security.example", "role": "viewer"}, {}),
    ("POST", "/v1/members", {"email": "' OR 1=1--@x.example", "role": "viewer"}, {}),
    ("PATCH", "/v1/members/usr_' OR '1'='1", {"role": "viewer"}, {}),
    ("DELETE", "/v1/api-keys/a%00b", None, {}),
    ("POST", "/v1/api-keys", {"name": f"a{NUL}b", "scopes": ["events:read"]}, {}),
    ("POST", "/v1/api-keys", {"name": "k", "scopes": ["admin'--"]}, {}),
    (
        "POST",
        "/v1/signup",
        {"email": f"n{NUL}l@security.example", "password": PASSWORD, "tenant_name": "t"},
        {},
    ),
    (
        "POST",
        "/v1/signup",
        {"email": "tn@security.example", "password": PASSWORD, "tenant_name": f"t{NUL}"},
        {},
    ),
    ("POST", "/v1/webhook-endpoints", {"url": f"https://1.1.1.1/{NUL}", "event_types": ["*"]}, {}),
    ("POST", "/v1/webhook-endpoints", {"url": "https://[::1", "event_types": ["*"]}, {}),
    ("POST", "/v1/webhook-endpoints", {"url": "https://1.1.1.1:0/", "event_types": ["*"]}, {}),
    (
        "POST",
        "/v1/webhook-endpoints",
        {"url": "https://\u00e9\u0301.example/", "event_types": ["*"]},
        {},
    ),
    (
        "POST",
        "/v1/webhook-endpoints",
        {"url": "https://" + "a" * 70 + ".example/", "event_types": ["*"]},
        {},
    ),
    (
        "POST",
        "/v1/webhook-endpoints",
        {"url": "https://1.1.1.1/", "event_types": ["*"], "description": f"a{NUL}"},
        {},
    ),
    ("PATCH", "/v1/webhook-endpoints/whe_' OR '1'='1", {"description": "x"}, {}),
    ("GET", "/v1/webhook-endpoints/a%00b/deliveries?status=failed'--", None, {}),
    ("POST", "/v1/webhook-endpoints/a%00b/deliveries/msg_%00/replay", None, {}),
    ("POST", "/v1/webhook-endpoints/a/rotate-secret", {"overlap_seconds": 10**30}, {}),
    ("POST", "/v1/auth/login", {"email": f"n{NUL}l@security.example", "password": PASSWORD}, {}),
    ("POST", "/v1/auth/login", {"email": "' OR '1'='1", "password": "' OR '1'='1"}, {}),
    ("POST", "/v1/auth/refresh", {"refresh_token": f"tlr_{NUL}' OR 1=1--"}, {}),
    ("POST", "/v1/auth/accept-invitation", {"token": f"tli_{NUL}", "password": PASSWORD}, {}),
    (
        "POST",
        "/v1/users/me/password",
        {"current_password": f"x{NUL}", "new_password": f"{PASSWORD}{NUL}"},
        {},
    ),
]


def provocation_id(method: str, path: str, body: Any, headers: dict[str, Any]) -> str:
    text = f"{method} {path} {body!r:.60} {headers!r:.40}"
    return re.sub(r"[^\w/:=.'-]+", "_", text.replace("\\x00", "NUL").replace("\\u0000", "NUL"))


@pytest.mark.parametrize(
    ("method", "path", "body", "headers"),
    PROVOCATIONS,
    ids=[provocation_id(*p) for p in PROVOCATIONS],
)
def test_no_input_produces_a_500_or_an_error_that_shows_internals(
    tenant: Tenant, method: str, path: str, body: Any, headers: dict[str, Any]
) -> None:
    caller = tenant.owner  # every scope: only the input can be refused
    kwargs: dict[str, Any] = {"headers": headers}
    if isinstance(body, bytes):
        kwargs["content"] = body
        kwargs["headers"] = {**JSON, **headers}
    elif body is not None:
        kwargs["json"] = body
    r = caller.request(method, path, **kwargs)
    # A 503 (the database too busy to answer in time, on a loaded machine) is the
    # documented answer to a passing trouble; a 500 is a bug.
    assert r.status_code < 500 or r.json()["code"] == "unavailable", r.text
    for secret in (PASSWORD, tenant.owner.token, tenant.keys["all"].token):
        assert secret not in r.text
    if r.status_code < 400:
        return
    assert r.headers["content-type"] == PROBLEM
    problem = r.json()
    assert set(problem) <= {
        "type",
        "title",
        "status",
        "detail",
        "code",
        "request_id",
        "errors",
        "fields",
        "results",
    }, problem
    assert not LEAKS.search(without_request_id(r)), r.text


def test_a_database_that_cannot_be_reached_is_a_503_without_its_address_or_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    password = f"db-password-{secrets.token_hex(4)}"
    url = f"postgresql://tally:{password}@127.0.0.1:1/tally_unreachable"
    with serve(url, db_connect_timeout_seconds=0.5) as c:
        for r in (
            c.get("/readyz"),
            c.get("/v1/accounts", headers={"Authorization": f"Bearer tly_{'a' * 16}_secret"}),
            c.post("/v1/auth/login", json={"email": "a@b.example", "password": PASSWORD}),
        ):
            assert_problem(r, 503, "unavailable")
            assert int(r.headers["retry-after"]) >= 1
            assert not LEAKS.search(without_request_id(r)), r.text
            for part in (password, "127.0.0.1", "tally_unreachable", ":1/"):
                assert part not in r.text
    assert password not in caplog.text
    assert PASSWORD not in caplog.text


# -- logs -------------------------------------------------------------------------------------


def test_secrets_are_never_logged(
    tenant: Tenant, client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    marker = f"secret-marker-{secrets.token_hex(6)}"
    person = signup(client, "logged", password=f"{marker}-Pass")
    again = login(client, person.email, person.password)
    refreshed = client.post("/v1/auth/refresh", json={"refresh_token": again.refresh_token})
    assert refreshed.status_code == 200
    key = make_key(person, "logged", ["accounts:read", "accounts:write"])
    _, _, invitation = invite(person, "viewer")
    accepted = client.post(
        "/v1/auth/accept-invitation", json={"token": invitation, "password": OTHER_PASSWORD}
    )
    assert accepted.status_code == 200
    changed = person.post(
        "/v1/users/me/password",
        {"current_password": person.password, "new_password": f"{marker}-New-pass"},
    )
    assert changed.status_code == 204
    failures: list[Callable[[], httpx.Response]] = [
        lambda: client.post(
            "/v1/auth/login", json={"email": person.email, "password": f"{marker}-wrong"}
        ),
        lambda: client.get("/v1/me", headers={"Authorization": f"Bearer {key.token}x"}),
        lambda: client.get("/v1/me", headers={"Authorization": f"Bearer {again.token}x"}),
        lambda: client.post("/v1/auth/refresh", json={"refresh_token": again.refresh_token}),
        lambda: key.post(
            "/v1/accounts",
            content=(
                '{"currency": "USD", "metadata": {"note": "'
                + marker
                + '"}, "amount": '
                + "9" * 5000
                + "}"
            ),
            headers=JSON,
        ),
        lambda: key.post(
            "/v1/transfers",
            content=(
                '{"debit_account_id": "'
                + marker
                + '", "credit_account_id": "b", "amount": '
                + "9" * 5000
                + "}"
            ),
            headers=JSON,
        ),
    ]
    for fail in failures:
        assert fail().status_code >= 400
    logged = caplog.text + "".join(
        f"{record.args}{record.exc_text or ''}" for record in caplog.records
    )
    for value in (
        marker,
        person.token,
        again.token,
        again.refresh_token,
        refreshed.json()["refresh_token"],
        key.token,
        key.token[len("tly_") + 17 :],
        invitation,
        OTHER_PASSWORD,
    ):
        assert value not in logged, value


# -- /graphql: bad input of every kind is a coded GraphQL error, never a 500 or internals ---

GQL_TRANSFER = 'mutation { createTransfer(input: {debitAccountId: "src", creditAccountId: "dst"'
GQL_ACCOUNT = 'mutation { createAccount(input: {currency: "USD", '
GRAPHQL_PROVOCATIONS: list[tuple[str, Any]] = [
    ("a SQL-like id", "{ account(id: \"' OR '1'='1\") { id } }"),
    ("a NUL in an id", '{ transfer(id: "a\\u0000b") { id } }'),
    ("a SQL-like filter", "{ accounts(currency: \"' OR 1=1--\") { nodes { id } } }"),
    ("a NUL in metadata", GQL_ACCOUNT + 'metadata: {a: "\\u0000"}}) { id } }'),
    ("an amount of 400 digits", GQL_TRANSFER + ", amount: " + "9" * 400 + "}) { id } }"),
    ("a float amount", GQL_TRANSFER + ", amount: 1.5}) { id } }"),
    ("metadata not an object", GQL_ACCOUNT + 'metadata: "x"}) { id } }'),
    ("metadata of numbers", GQL_ACCOUNT + "metadata: {a: 1}}) { id } }"),
    ("a huge page", "{ accounts(first: 99999999999999999999) { nodes { id } } }"),
    ("a forged cursor", '{ transfers(after: "djE6OTk5OTk5OTk5OTk5OTk5OTk5") { nodes { id } } }'),
    ("an unknown fragment", "{ ...Nowhere }"),
    ("a fragment cycle", "{ ...A } fragment A on Query { ...B } fragment B on Query { ...A }"),
    ("a broken document", "{ accounts { nodes { id "),
    ("an empty document", ""),
    ("a wrong variable", ("query Q($n: Int) { accounts(first: $n) { id } }", {"n": 1.5})),
    ("an undeclared variable", ("{ accounts(first: $n) { nodes { id } } }", {"n": 1})),
    ("a nested variable", ("query Q($m: Metadata) { accounts { nodes { id } } }", {"m": [[[[]]]]})),
    ("a huge Int64", ("query Q($a: Int64!) { events(afterSequence: $a) { nodes { type } } }", {"a": 2**64})),  # noqa: E501
]  # fmt: skip


@pytest.mark.parametrize(
    ("what", "request_"), GRAPHQL_PROVOCATIONS, ids=[p[0] for p in GRAPHQL_PROVOCATIONS]
)
def test_no_graphql_input_produces_a_500_or_an_error_that_shows_internals(
    tenant: Tenant, what: str, request_: Any
) -> None:
    query, variables = request_ if isinstance(request_, tuple) else (request_, None)
    body: dict[str, Any] = {"query": query}
    if variables is not None:
        body["variables"] = variables
    r = tenant.owner.post("/graphql", body)
    assert r.status_code < 500, r.text
    out = r.json()
    for secret in (PASSWORD, tenant.owner.token, tenant.keys["all"].token):
        assert secret not in r.text
    for error in out.get("errors", []):
        assert set(error) <= {"message", "extensions", "locations", "path"}, error
        assert error["extensions"]["code"] not in ("internal_error", None), error
        assert not LEAKS.search(error["message"]), error

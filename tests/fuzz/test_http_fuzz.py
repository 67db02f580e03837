"""Fuzzing whole requests: any method, path, query string, headers and body.

Hypothesis builds raw ASGI requests (the bytes an HTTP server may hand the app:
Latin-1 header values, percent-decoded paths with any character, query strings
of any bytes, bodies in several chunks) and sends them straight to the app made
by ``create_app``, running with its lifespan, on SQLite and on PostgreSQL. The
requests are mostly aimed at real routes, with the tenant's valid API key, JSON
content types and bodies shaped like the route's schema, so that they get past
the first check and into the parsing, the ledger and the database.

Whatever comes in, the answer must never be a 5xx; every answer carries a
``Request-Id``; every error is ``application/problem+json`` with ``status`` equal
to the HTTP status and a ``code`` of the contract (api.md §5); and the tenant's
books still balance afterwards.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, unquote

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from tally.api import create_app
from tally.api.schemas.ledger import (
    AccountCreate,
    AccountUpdate,
    BatchCreate,
    PendingPost,
    PendingVoid,
    TransferCreate,
)
from tally.config import Settings
from tests.conftest import create_tenant
from tests.fuzz.strategies import VALID_BODIES, hostile_text, json_values, shaped
from tests.soak import scaled

# api.md §5 and docs/errors.md: every code an answer may carry (500's is not one).
KNOWN_CODES = {
    "malformed_request": 400,
    "idempotency_key_invalid": 400,
    "idempotency_key_required": 400,
    "unauthenticated": 401,
    "forbidden": 403,
    "not_found": 404,
    "pending_transfer_not_found": 404,
    "method_not_allowed": 405,
    "exists_with_different_fields": 409,
    "pending_transfer_not_pending": 409,
    "pending_transfer_already_posted": 409,
    "pending_transfer_already_voided": 409,
    "pending_transfer_expired": 409,
    "idempotency_key_in_use": 409,
    "precondition_failed": 412,
    "payload_too_large": 413,
    "unsupported_media_type": 415,
    "validation_error": 422,
    "idempotency_key_reused": 422,
    "accounts_must_be_different": 422,
    "debit_account_not_found": 422,
    "credit_account_not_found": 422,
    "accounts_must_have_the_same_currency": 422,
    "currency_mismatch": 422,
    "debit_account_closed": 422,
    "credit_account_closed": 422,
    "exceeds_credits": 422,
    "exceeds_debits": 422,
    "overflows_debits": 422,
    "overflows_credits": 422,
    "exceeds_pending_transfer_amount": 422,
    "timeout_requires_pending": 422,
    "flags_are_mutually_exclusive": 422,
    "batch_failed": 422,
    "rate_limited": 429,
}
BODY_BYTES_MAX = 4096
PAGES_MAX = 100
IDS = ["src", "dst", "hold", "done", "ghost"]
ROUTES: list[tuple[str, str, type[Any] | None]] = [
    ("POST", "/v1/accounts", AccountCreate),
    ("GET", "/v1/accounts", None),
    ("GET", "/v1/accounts/{}", None),
    ("PATCH", "/v1/accounts/{}", AccountUpdate),
    ("GET", "/v1/accounts/{}/balances", None),
    ("POST", "/v1/transfers", TransferCreate),
    ("GET", "/v1/transfers", None),
    ("GET", "/v1/transfers/{}", None),
    ("POST", "/v1/transfers/{}/post", PendingPost),
    ("POST", "/v1/transfers/{}/void", PendingVoid),
    ("POST", "/v1/transfers/batch", BatchCreate),
    ("GET", "/v1/events", None),
    # Ends after TALLY_EVENTS_STREAM_SECONDS_MAX (0.5 s in tests): every answer is whole.
    ("GET", "/v1/events/stream", None),
    ("GET", "/healthz", None),
    ("GET", "/readyz", None),
    ("GET", "/openapi.json", None),
]
QUERY_NAMES = [
    "limit",
    "cursor",
    "after",
    "at",
    "currency",
    "status",
    "order",
    "account_id",
    "created_after",
    "created_before",
    "metadata[k]",
    "metadata[]",
    "types",
]

FUZZ = settings(
    max_examples=scaled(300, 10_000),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def fuzzed(database_url: str) -> Iterator[tuple[TestClient, str]]:
    """The app on each backend, and a tenant with two accounts, a posted transfer and
    an open hold for the requests to find."""
    app = create_app(Settings(database_url=database_url, body_bytes_max=BODY_BYTES_MAX))
    _, api_key = create_tenant(database_url, "fuzz")
    auth = {"Authorization": f"Bearer {api_key}"}
    with TestClient(app, raise_server_exceptions=False) as client:
        for account_id in ("src", "dst"):
            made = client.post(
                "/v1/accounts", json={"id": account_id, "currency": "USD"}, headers=auth
            )
            assert made.status_code == 201, made.text
        for body in (
            {"id": "done", "debit_account_id": "src", "credit_account_id": "dst", "amount": 5},
            {
                "id": "hold",
                "debit_account_id": "src",
                "credit_account_id": "dst",
                "amount": 9,
                "pending": True,
            },
        ):
            made = client.post("/v1/transfers", json=body, headers=auth)
            assert made.status_code == 201, made.text
        yield client, api_key


# -- requests -----------------------------------------------------------------------------

header_bytes = st.binary(max_size=40).filter(lambda b: not set(b) & {0, 10, 13})


@st.composite
def paths(draw: st.DrawFn, template: str) -> str:
    """The route's path with an id that is one of the tenant's, or anything at all."""
    if "{}" not in template:
        return template
    if draw(st.integers(0, 3)) == 0:
        object_id = draw(hostile_text.filter(lambda t: "/" not in t))
    else:
        object_id = draw(st.sampled_from(IDS))
    return template.format(object_id)


@st.composite
def query_strings(draw: st.DrawFn) -> bytes:
    if draw(st.integers(0, 4)) == 0:
        return draw(st.binary(max_size=60))
    pairs = draw(
        st.lists(
            st.tuples(
                st.sampled_from(QUERY_NAMES) | hostile_text,
                hostile_text | st.integers().map(str) | st.sampled_from(["2026-01-01T00:00:00Z"]),
            ),
            max_size=5,
        )
    )
    return "&".join(
        f"{quote(k.encode('utf-8', 'surrogatepass'), safe='[]')}="
        f"{quote(v.encode('utf-8', 'surrogatepass'))}"
        for k, v in pairs
    ).encode()


# Bodies that get past the schema and reach the ledger, on the tenant's objects.
TENANT_BODIES: dict[type[Any], dict[str, Any]] = {
    AccountCreate: {"currency": "USD", "flags": {"debits_must_not_exceed_credits": True}},
    AccountUpdate: {"metadata": {"k": "v"}},
    TransferCreate: {"debit_account_id": "src", "credit_account_id": "dst", "amount": 3},
    PendingPost: {"amount": 2},
    PendingVoid: {},
    BatchCreate: {
        "transfers": [
            {"debit_account_id": "dst", "credit_account_id": "src", "amount": 1},
            {"pending_id": "hold", "action": "post", "amount": 1},
        ],
        "atomic": True,
    },
}


@st.composite
def bodies(draw: st.DrawFn, schema: type[Any] | None) -> bytes:
    """Mostly a body the route accepts, or one with a single field made hostile;
    otherwise anything shaped like the schema, or anything at all."""
    kind = draw(st.integers(0, 5))
    if schema is None or kind == 0:
        return draw(st.binary(max_size=100) | json_values.map(lambda v: json.dumps(v).encode()))
    body = dict(draw(st.sampled_from([TENANT_BODIES[schema], VALID_BODIES[schema]])))
    body.pop("id", None)  # a new object each time, when it is accepted
    if kind <= 2:
        return json.dumps(body).encode()
    if kind == 3 and body:
        body[draw(st.sampled_from(sorted(body)))] = draw(json_values)
        return json.dumps(body).encode()
    return json.dumps(draw(shaped(schema))).encode()


def sane_headers(api_key: str) -> dict[bytes, list[bytes]]:
    return {
        b"authorization": [f"Bearer {api_key}".encode()],
        b"content-type": [b"application/json"],
    }


HOSTILE_VALUES: dict[bytes, list[bytes]] = {
    b"authorization": [b"", b"Bearer", b"Bearer ", b"Basic abc", b"Bearer tly_x_y", b"tly_"],
    b"content-type": [b"text/plain", b"application/json; x=\xff", b"application/jsonx", b""],
    b"content-length": [b"0", b"\xb2", b"-1", b"1 1", b"9" * 30],
    b"idempotency-key": [b"k-1", b"", b"\xff", b"k" * 256, b"k\tk"],
    b"if-match": [b'"1"', b"*", b'"\xb2"', b'W/"2"', b'"' + b"9" * 30 + b'"'],
    b"request-id": [b"r-1", b"\xff" * 3, b"x" * 100],
    b"host": [b"", b"[::1", b"a:b:c", b"\xff", b"example.com:99999"],
}


@st.composite
def headers(draw: st.DrawFn, api_key: str) -> list[tuple[bytes, bytes]]:
    """Sane headers with, most of the time, one made hostile (or repeated), and
    sometimes a few more of any name."""
    h = sane_headers(api_key)
    if draw(st.integers(0, 3)) > 0:
        name = draw(st.sampled_from(sorted(HOSTILE_VALUES)))
        values = draw(
            st.lists(st.sampled_from(HOSTILE_VALUES[name]) | header_bytes, min_size=0, max_size=2)
        )
        h[name] = values
    pairs = [(name, value) for name, values in h.items() for value in values]
    extra = draw(st.lists(st.tuples(st.binary(min_size=1, max_size=8), header_bytes), max_size=2))
    return pairs + [(k.lower(), v) for k, v in extra if not set(k) & {0, 10, 13, 58}]


@st.composite
def requests(draw: st.DrawFn, api_key: str) -> dict[str, Any]:
    method, template, schema = draw(st.sampled_from(ROUTES))
    if draw(st.integers(0, 9)) == 0:
        method = draw(st.sampled_from(["GET", "POST", "PATCH", "PUT", "DELETE", "HEAD", "OPTIONS"]))
    path = "/v1/" + draw(hostile_text) if draw(st.integers(0, 9)) == 0 else draw(paths(template))
    body = (
        draw(bodies(schema))
        if method in ("POST", "PATCH")
        else draw(st.just(b"") | st.binary(max_size=20))
    )
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=2)))
    chunks = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    return {
        "method": method,
        # As a server hands it over: the path percent-decoded, the raw path as sent.
        "path": unquote(quote(path.encode("utf-8", "surrogatepass"))),
        "raw_path": quote(path.encode("utf-8", "surrogatepass")).encode(),
        "query_string": draw(query_strings()),
        "headers": draw(headers(api_key)),
        "chunks": chunks,
    }


async def send(app: Any, request: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    """One request through the ASGI app, as an HTTP server would make it."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": request["method"],
        "scheme": "http",
        "path": request["path"],
        "raw_path": request["raw_path"],
        "query_string": request["query_string"],
        "root_path": "",
        "headers": request["headers"],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
    }
    chunks = request["chunks"] or [b""]
    messages = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send_(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send_)
    start = next(m for m in sent if m["type"] == "http.response.start")
    response_headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in start["headers"]}
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], response_headers, body


def check_answer(request: dict[str, Any], status: int, headers: dict[str, str], body: bytes) -> str:
    """What kind of answer it was; asserts the contract of every answer."""
    where = f"{request['method']} {request['path']!r}?{request['query_string']!r}"
    assert status < 500, f"{where} -> {status} {body[:500]!r} (request {request})"
    assert headers.get("request-id"), (where, headers)
    if status < 400:
        return str(status)
    assert headers.get("content-type") == "application/problem+json", (where, headers, body)
    if request["method"] == "HEAD":
        return f"{status} (HEAD)"
    problem = json.loads(body)
    assert problem["code"] in KNOWN_CODES, (where, problem)
    assert problem["status"] == status == KNOWN_CODES[problem["code"]], (where, problem)
    assert problem["type"] == f"urn:tally:problem:{problem['code']}"
    assert problem["title"] and problem["detail"], problem
    assert "Traceback" not in problem["detail"]
    return f"{status} {problem['code']}"


def every_account(client: TestClient, api_key: str) -> list[dict[str, Any]]:
    accounts: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 1000}
    for _ in range(PAGES_MAX):
        r = client.get(
            "/v1/accounts", params=params, headers={"Authorization": f"Bearer {api_key}"}
        )
        assert r.status_code == 200, r.text
        accounts += r.json()["data"]
        if not r.json()["has_more"]:
            return accounts
        params["cursor"] = r.json()["next_cursor"]
    raise AssertionError(f"more than {PAGES_MAX} pages of accounts")


def test_no_request_whatever_its_bytes_gets_a_5xx_or_a_malformed_answer(
    fuzzed: tuple[TestClient, str],
) -> None:
    client, api_key = fuzzed
    portal = client.portal
    assert portal is not None
    answers: Counter[str] = Counter()

    @FUZZ
    @given(request=requests(api_key))
    @example(
        request={
            "method": "PATCH",
            "path": "/v1/accounts/src",
            "raw_path": b"/v1/accounts/src",
            "query_string": b"",
            "headers": [
                (b"authorization", f"Bearer {api_key}".encode()),
                (b"content-type", b"application/json"),
                (b"if-match", b'"\xb2"'),
            ],
            "chunks": [b'{"metadata": {"a": "b"}}'],
        }
    )
    def check(request: dict[str, Any]) -> None:
        status, headers, body = portal.call(send, client.app, request)
        answers[check_answer(request, status, headers, body)] += 1

    check()
    print(f"\n{sum(answers.values())} requests: {dict(answers.most_common())}")
    accounts = every_account(client, api_key)
    for pending_or_posted in ("pending", "posted"):
        debits = sum(a[f"debits_{pending_or_posted}"] for a in accounts)
        credits = sum(a[f"credits_{pending_or_posted}"] for a in accounts)
        assert debits == credits, (pending_or_posted, accounts)

"""Fixtures of the security suite: one tenant with a member of every role and API keys
of every scope, a stranger tenant, fresh databases and dedicated app instances.

Argon2id is slow on purpose (tens of milliseconds a hash), so the people of the
shared tenant are made once per backend and only read from; a test that ends a
session, changes a password, a role or a member makes its own people. A test
that needs its own limits, clock or CORS origins builds its own app with
``serve``; a test that moves a clock far forward, or tampers with the audit
chain, gets a database of its own (``new_database``), so that the background
loops of one test (expiry, retention, sealing) never act on another's rows.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
import pytest
from starlette.testclient import TestClient
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocketDisconnect

from tally.api import create_app
from tally.config import Settings
from tally.identity.roles import ALL_SCOPES, READ_SCOPES, ROLE_SCOPES, ROLES
from tally.storage.schema import migrate
from tally.webhooks.repository import delivery_id
from tests.conftest import POSTGRES_ADMIN_URL, FakeClock
from tests.console_client import Browser, console_login, hidden

PROBLEM = "application/problem+json"
# Long, not on any common-password list, four or more distinct characters.
PASSWORD = "amber-Lantern-41-quietly-folds"
OTHER_PASSWORD = "violet-Harbor-93-slowly-turns"
# The shared app lets the suite log in as often as it needs; the login limits are
# proved on apps of their own (test_api4, test_api6).
GENEROUS_LOGIN_LIMITS: dict[str, Any] = {
    "login_limit_per_email_burst": 10_000,
    "login_limit_per_address_burst": 10_000,
}


# -- callers ------------------------------------------------------------------------------


@dataclass
class Caller:
    """Anything that sends ``Authorization: Bearer <token>``: a user or an API key."""

    name: str
    client: TestClient
    token: str
    tenant_id: str
    scopes: frozenset[str]

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return self.client.request(method, path, headers=headers, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, json: Any = None, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, json=json, **kwargs)

    def patch(self, path: str, json: Any = None, **kwargs: Any) -> httpx.Response:
        return self.request("PATCH", path, json=json, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", path, **kwargs)

    def may(self, scope: str) -> bool:
        """Whether a route needing ``scope`` should let this caller in (api.md §6:
        the admin scope manages everything)."""
        return not scope or scope in self.scopes or "admin" in self.scopes


@dataclass
class Person(Caller):
    """A logged-in user: one session, its access and refresh tokens."""

    email: str = ""
    password: str = ""
    user_id: str = ""
    role: str = ""
    refresh_token: str = ""


@dataclass
class Key(Caller):
    key_id: str = ""


@dataclass
class Tenant:
    id: str
    owner: Person
    people: dict[str, Person] = field(default_factory=dict)  # by role
    keys: dict[str, Key] = field(default_factory=dict)  # by name
    webhook_id: str = ""  # a webhook endpoint (never delivered to: see arrange_webhook)
    delivery_id: str = ""  # a dead-lettered delivery of it

    def callers(self) -> dict[str, Caller]:
        """Every kind of credential of this tenant, by a readable name."""
        return {
            **{f"user:{role}": p for role, p in self.people.items()},
            **{f"key:{name}": k for name, k in self.keys.items()},
        }


def unique_email(label: str) -> str:
    return f"{label}-{secrets.token_hex(5)}@security.example"


def assert_problem(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    if status < 500:
        assert r.status_code < 500, r.text
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM, r.headers
    problem: dict[str, Any] = r.json()
    assert problem["status"] == status
    assert problem["code"] == code, problem
    return problem


def graphql(
    caller: Caller,
    query: str,
    variables: dict[str, Any] | None = None,
    **headers: str,
) -> dict[str, Any]:
    """The JSON answer of ``/graphql`` to ``caller``: a 200 with ``data`` and/or
    ``errors``, each error with a code (never a 500, never a stack trace)."""
    body: dict[str, Any] = {"query": query}
    if variables is not None:
        body["variables"] = variables
    r = caller.post("/graphql", body, headers=headers)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    for error in out.get("errors", []):
        assert error["extensions"]["code"] != "internal_error", error
        assert "Traceback" not in error["message"], error
    return out


def graphql_codes(out: dict[str, Any]) -> list[str]:
    return [e["extensions"]["code"] for e in out.get("errors", [])]


def sse_events(text: str) -> list[dict[str, Any]]:
    """The events of a Server-Sent Events body: each frame's ``data`` as JSON,
    with its ``id`` and ``event`` lines checked against it."""
    events = []
    for frame in text.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in frame.split("\n") if line and not line.startswith(":")
        )
        if "data" not in fields or fields.get("event") == "overflow":
            continue
        event = json.loads(fields["data"])
        assert fields["id"] == str(event["sequence"]), frame
        assert fields["event"] == event["type"], frame
        events.append(event)
    return events


def ws_messages(ws: Any) -> tuple[list[Any], int]:
    """Every JSON message of a WebSocket until the server closes it (in process
    after TALLY_EVENTS_STREAM_SECONDS_MAX), and its close code."""
    messages = []
    for _ in range(10_000):
        try:
            messages.append(ws.receive_json())
        except WebSocketDisconnect as closed:
            return messages, closed.code
    raise AssertionError("the socket did not close")


def read_all(caller: Caller, path: str) -> tuple[httpx.Response, Any]:
    """A GET of everything a read route shows: a page of 1000, or (the event
    stream, which ends after TALLY_EVENTS_STREAM_SECONDS_MAX in process) every
    event from the first, as ``{"data": [...]}``."""
    if path == "/v1/events/stream":
        r = caller.get(path, params={"after": "0"})
        return r, ({"data": sse_events(r.text)} if r.status_code == 200 else None)
    r = caller.get(path, params={"limit": "1000"} if path != "/v1/me" else None)
    return r, (r.json() if r.status_code == 200 else None)


def login(client: TestClient, email: str, password: str, role: str = "") -> Person:
    r = client.post("/v1/auth/login", json={"email": email, "password": password})
    assert r.status_code == 200, r.text
    tokens = r.json()
    me = client.get("/v1/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert me.status_code == 200, me.text
    who = me.json()
    return Person(
        name=f"user:{who['role']}",
        client=client,
        token=tokens["access_token"],
        tenant_id=who["tenant_id"],
        scopes=frozenset(who["scopes"]),
        email=email,
        password=password,
        user_id=who["id"],
        role=who["role"],
        refresh_token=tokens["refresh_token"],
    )


def signup(client: TestClient, label: str = "owner", password: str = PASSWORD) -> Person:
    """A new tenant; its owner, logged in."""
    email = unique_email(label)
    r = client.post("/v1/signup", json={"email": email, "password": password, "tenant_name": label})
    assert r.status_code == 201, r.text
    return login(client, email, password)


def invite(admin: Caller, role: str, label: str = "") -> tuple[str, str, str]:
    """(user id, email, invitation token) of a new invited member."""
    email = unique_email(label or role)
    r = admin.post("/v1/members", {"email": email, "role": role})
    assert r.status_code == 201, r.text
    body = r.json()
    return body["member"]["id"], email, body["invitation_token"]


def join(admin: Caller, role: str, password: str = PASSWORD) -> Person:
    """A member of ``role`` in the admin's tenant: invited, accepted, logged in."""
    _, email, token = invite(admin, role)
    r = admin.client.post("/v1/auth/accept-invitation", json={"token": token, "password": password})
    assert r.status_code == 200, r.text
    return login(admin.client, email, password)


def make_key(admin: Caller, name: str, scopes: list[str] | tuple[str, ...]) -> Key:
    r = admin.post("/v1/api-keys", {"name": name, "scopes": list(scopes)})
    assert r.status_code == 201, r.text
    body = r.json()
    return Key(
        name=f"key:{name}",
        client=admin.client,
        token=body["secret"],
        tenant_id=admin.tenant_id,
        scopes=frozenset(body["api_key"]["scopes"]),
        key_id=body["api_key"]["id"],
    )


def arrange_books(caller: Caller) -> None:
    """Two USD accounts, a posted transfer ``paid`` and an open hold ``hold``."""
    for account in ("src", "dst"):
        r = caller.post("/v1/accounts", {"id": account, "currency": "USD"})
        assert r.status_code == 201, r.text
    for transfer in (
        {"id": "paid", "amount": 100},
        {"id": "hold", "amount": 40, "pending": True},
    ):
        r = caller.post(
            "/v1/transfers", {"debit_account_id": "src", "credit_account_id": "dst", **transfer}
        )
        assert r.status_code == 201, r.text


# A public address, so registration accepts it; nothing is ever sent there, since
# in-process apps deliver no webhooks unless a test asks (tests/conftest.py).
WEBHOOK_URL = "https://1.1.1.1/tally-security-suite"


def arrange_webhook(caller: Caller, db: Db) -> tuple[str, str]:
    """A webhook endpoint of the caller's tenant, and a dead-lettered delivery of
    its first event: the row the dispatcher would have left after giving up."""
    r = caller.post("/v1/webhook-endpoints", {"url": WEBHOOK_URL, "event_types": ["*"]})
    assert r.status_code == 201, r.text
    endpoint_id = r.json()["webhook_endpoint"]["id"]
    ((sequence, kind),) = db.fetch(
        "SELECT sequence, type FROM events WHERE tenant_id = $1 ORDER BY sequence LIMIT 1",
        caller.tenant_id,
    )
    webhook_id = delivery_id(endpoint_id, sequence)
    db.execute(
        "INSERT INTO webhook_deliveries (id, tenant_id, endpoint_id, event_sequence, event_type,"
        " status, attempts, next_attempt_at_us, last_attempt_at_us, last_status_code,"
        " last_error, created_at_us, completed_at_us)"
        " VALUES ($1, $2, $3, $4, $5, 'failed', 14, 0, 1, 500, 'HTTP 500', 1, 1)",
        webhook_id, caller.tenant_id, endpoint_id, sequence, kind,
    )  # fmt: skip
    return endpoint_id, webhook_id


# -- apps ---------------------------------------------------------------------------------


FROM_ADDRESS = "X-Test-Client-Address"


class ClientAddressFromHeader:
    """Test-only ASGI wrapper: a request's client address is taken from the
    ``X-Test-Client-Address`` header, as if requests came from several machines.
    (The app itself trusts no header for the address: proxy headers are off.)"""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == FROM_ADDRESS.lower().encode():
                    scope = {**scope, "client": (value.decode(), 50000)}
        await self.app(scope, receive, send)


@contextlib.contextmanager
def serve(
    database_url: str,
    *,
    clock: FakeClock | None = None,
    base_url: str = "http://testserver",
    **settings: Any,
) -> Iterator[TestClient]:
    """A dedicated app (its own limits, clock, origins) over a database; its
    lifespan runs, so the writer, the audit appender and the sealer run too."""
    app = create_app(Settings(database_url=database_url, **settings), clock=clock or FakeClock())
    with TestClient(
        ClientAddressFromHeader(app), base_url=base_url, raise_server_exceptions=False
    ) as c:
        yield c


@contextlib.contextmanager
def new_database(database_url: str) -> Iterator[str]:
    """A fresh, migrated database on the same backend as ``database_url``."""
    name = f"tally_sec_{secrets.token_hex(4)}"
    if database_url.startswith("sqlite:///"):
        directory = os.path.dirname(database_url.removeprefix("sqlite:///"))
        url = f"sqlite:///{directory}/{name}.db"
        migrate(Settings(database_url=url))
        yield url
        return
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = f"{POSTGRES_ADMIN_URL.rpartition('/')[0]}/{name}"
    try:
        migrate(Settings(database_url=url))
        yield url
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Db:
    """Direct SQL on a test database, as an attacker with database access (or a
    test arranging a state) would use it: statements in the ``$n`` style, with
    parameters in order."""

    def __init__(self, database_url: str) -> None:
        self.url = database_url

    def _run(self, sql: str, params: tuple[Any, ...], fetch: bool) -> list[tuple[Any, ...]]:
        if self.url.startswith("sqlite:///"):
            with contextlib.closing(sqlite3.connect(self.url.removeprefix("sqlite:///"))) as c:
                cursor = c.execute(re.sub(r"\$\d+", "?", sql), params)
                rows = cursor.fetchall() if fetch else []
                c.commit()
                return rows
        with psycopg.connect(self.url, autocommit=True) as c:
            cursor = c.execute(re.sub(r"\$\d+", "%s", sql), params)  # type: ignore[arg-type]
            return cursor.fetchall() if fetch else []

    def fetch(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        return self._run(sql, params, fetch=True)

    def execute(self, sql: str, *params: Any) -> None:
        self._run(sql, params, fetch=False)


# -- shared fixtures -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def clock() -> FakeClock:
    """The shared app's clock. Never advanced: tests that move time use their own."""
    return FakeClock()


@pytest.fixture(scope="session")
def client(database_url: str, clock: FakeClock) -> Iterator[TestClient]:
    settings = Settings(database_url=database_url, **GENEROUS_LOGIN_LIMITS)
    with TestClient(create_app(settings, clock=clock), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="session")
def db(database_url: str) -> Db:
    return Db(database_url)


# The keys of the shared tenant: every scope alone, the read scopes together, all.
KEY_SCOPES: dict[str, tuple[str, ...]] = {
    **{scope: (scope,) for scope in ALL_SCOPES},
    "read-only": READ_SCOPES,
    "all": ALL_SCOPES,
}


@pytest.fixture(scope="session")
def tenant(client: TestClient, db: Db) -> Tenant:
    """Tenant A: an owner, an admin, an operator, a viewer (each logged in), an API
    key per scope, and books (``src``, ``dst``, ``paid``, the open hold ``hold``).
    Tests only read it, or change objects they made in it themselves."""
    owner = signup(client, "owner-a")
    people = {"owner": owner}
    for role in ROLES[1:]:
        people[role] = join(owner, role)
    for role, person in people.items():
        assert person.role == role
        assert person.scopes == ROLE_SCOPES[role]
    keys = {name: make_key(owner, name, scopes) for name, scopes in KEY_SCOPES.items()}
    arrange_books(keys["all"])
    webhook_id, delivery = arrange_webhook(owner, db)
    return Tenant(owner.tenant_id, owner, people, keys, webhook_id, delivery)


@pytest.fixture(scope="session")
def stranger(client: TestClient) -> Tenant:
    """Tenant B, the attacker's: an owner (so every scope and the admin role) and an
    API key with every scope. It owns no object of its own unless a test makes one."""
    owner = signup(client, "owner-b")
    return Tenant(
        owner.tenant_id, owner, {"owner": owner}, {"all": make_key(owner, "all", ALL_SCOPES)}
    )


# -- the console (docs/console.md) --------------------------------------------------------

# Each console route's path on tenant A's objects (``arrange_books``), and a
# well-formed form for each form, so that only the caller decides the answer.
CONSOLE_OBJECTS = {"accounts": "src", "transfers": "hold", "api-keys": "nokey", "members": "nobody"}
CONSOLE_FORMS: dict[str, dict[str, str]] = {
    "/console/new-account": {"currency": "USD", "id": "console-probe"},
    "/console/new-transfer": {"debit_account_id": "src", "credit_account_id": "dst", "amount": "1"},
    "/console/transfers/{id}/post": {},
    "/console/transfers/{id}/void": {},
    "/console/api-keys": {"name": "probe", "scope:accounts:read": "on"},
    "/console/api-keys/{id}/revoke": {},
    "/console/members": {"email": "probe@security.example", "role": "viewer"},
    "/console/members/{id}/role": {"role": "viewer"},
    "/console/members/{id}/disable": {},
    "/console/logout": {},
    "/console/login": {},
}


def console_path(route: Any, object_id: str | None = None) -> str:
    """The route's path naming tenant A's object (or ``object_id``)."""
    if "{id}" not in route.path:
        return str(route.path)
    area = route.path.split("/")[2]
    return str(route.path).replace("{id}", object_id or CONSOLE_OBJECTS[area])


def console_of(person: Person) -> Browser:
    """The person logged in to the console: a session of their own."""
    return console_login(person.client, person.email, person.password)


def console_call(browser: Browser, route: Any, path: str) -> httpx.Response:
    """The route as a person would use it: a page, or its form with the session's
    CSRF token (from any page they may see) and the Origin of this console."""
    if route.method == "GET":
        return browser.get(path)
    page = browser.get("/console/accounts")
    assert page.status_code == 200, page.text
    return browser.post(path, {**hidden(page.text), **CONSOLE_FORMS[route.path]})


@pytest.fixture(scope="session")
def consoles(tenant: Tenant) -> dict[str, Browser]:
    """Tenant A's people in the console, by role (sessions only read from)."""
    return {role: console_of(person) for role, person in tenant.people.items()}

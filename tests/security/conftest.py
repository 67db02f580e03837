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
from tests.conftest import POSTGRES_ADMIN_URL, FakeClock

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
def tenant(client: TestClient) -> Tenant:
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
    return Tenant(owner.tenant_id, owner, people, keys)


@pytest.fixture(scope="session")
def stranger(client: TestClient) -> Tenant:
    """Tenant B, the attacker's: an owner (so every scope and the admin role) and an
    API key with every scope. It owns no object of its own unless a test makes one."""
    owner = signup(client, "owner-b")
    return Tenant(
        owner.tenant_id, owner, {"owner": owner}, {"all": make_key(owner, "all", ALL_SCOPES)}
    )

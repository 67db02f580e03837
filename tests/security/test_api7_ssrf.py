"""API7:2023 Server Side Request Forgery.

Tally makes one kind of outbound request from what a client sends: webhook
deliveries, to the URL of a webhook endpoint (docs/webhooks.md). Nothing else
takes a URL: no callbacks, no imports from a URL, no key discovery (a token's
``jku``, ``x5u`` or ``jwk`` header is never followed; keys come from its own
database). This module proves:

- the webhook endpoint's ``url`` is the only request field that takes a URL, and
  no parameter does; only ``tally.webhooks.delivery`` imports an HTTP client;
- a URL whose host is, or resolves to, a loopback (``localhost`` included),
  private, link-local, cloud metadata, multicast or unspecified address is refused
  at registration and on update with 422 ``url_not_allowed``, and nothing
  connects there; so is plain http;
- at delivery the address is checked again (DNS can change): an endpoint that
  now resolves to loopback is not called; redirects are never followed;
- an access token whose header points at a key URL (``jku``, ``x5u``) is refused
  without the server ever connecting there.
"""

from __future__ import annotations

import ast
import socket
import threading
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from starlette.testclient import TestClient

import tally
from tally.api.openapi import build_openapi
from tests.conftest import create_tenant
from tests.receiver import Answer, receiving
from tests.security.conftest import Tenant, assert_problem, new_database, serve

URL_LIKE_NAMES = ("url", "uri", "href", "link", "webhook", "callback", "endpoint", "host")
HTTP_CLIENTS = {"httpx", "requests", "aiohttp", "urllib.request", "http.client", "urllib3"}
# The one field that takes a URL, in each schema that has it.
URL_FIELDS = {("WebhookEndpointCreate", "url"), ("WebhookEndpointUpdate", "url")}
HTTP_CLIENT_MODULES = {"webhooks/delivery.py"}


def properties(schema: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    """Every (dotted name, schema) of a JSON Schema's properties, at any depth."""
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(schema, dict):
        for name, sub in schema.get("properties", {}).items():
            found.append((f"{path}.{name}".lstrip("."), sub))
            found += properties(sub, f"{path}.{name}")
        for key in ("items", "additionalProperties"):
            found += properties(schema.get(key), path)
        for key in ("anyOf", "oneOf", "allOf"):
            for sub in schema.get(key, []):
                found += properties(sub, path)
    return found


def test_only_the_webhook_endpoint_url_takes_a_url() -> None:
    document = build_openapi()
    schemas = document["components"]["schemas"]
    request_schemas = set()
    for operations in document["paths"].values():
        for operation in operations.values():
            body = operation.get("requestBody", {}).get("content", {})
            for media in body.values():
                # A body is a $ref, or (POST /v1/transfers) an allOf of one with rules.
                schema = media["schema"]
                for ref in [schema, *schema.get("allOf", [])]:
                    if "$ref" in ref:
                        request_schemas.add(ref["$ref"].rpartition("/")[2])
            for parameter in operation.get("parameters", []):
                name = parameter["name"].lower()
                assert not any(word in name for word in URL_LIKE_NAMES), parameter
                schema = (
                    parameter.get("schema") or parameter["content"]["application/json"]["schema"]
                )
                assert schema.get("format") not in ("uri", "url"), parameter
    assert request_schemas, "the document has request bodies"
    found = set()
    for name in sorted(request_schemas | {"TransferCreate", "BatchAction"}):
        for field, schema in properties(schemas[name]):
            leaf = field.rpartition(".")[2].lower()
            if any(word in leaf for word in URL_LIKE_NAMES) or schema.get("format") in (
                "uri",
                "url",
                "hostname",
            ):
                found.add((name, field))
    assert found == URL_FIELDS


# Not the server: the Python client runs in its caller's process and calls the
# base URL its caller gives it; the lab drives the app in process over ASGI.
NOT_THE_SERVER = ("client/", "lab/")


def test_only_webhook_delivery_imports_an_http_client() -> None:
    package = Path(tally.__file__).parent
    importers = set()
    for source in package.rglob("*.py"):
        if str(source.relative_to(package)).startswith(NOT_THE_SERVER):
            continue
        tree = ast.parse(source.read_text(), str(source))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                if any(name == client or name.startswith(f"{client}.") for client in HTTP_CLIENTS):
                    importers.add(str(source.relative_to(package)))
    # The dispatcher holds the client it makes, but only delivery.py sends with it.
    assert importers <= HTTP_CLIENT_MODULES | {"webhooks/dispatcher.py"}, importers
    assert importers >= HTTP_CLIENT_MODULES


class Listener:
    """A TCP port on this machine that counts who connects to it."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


def test_a_token_pointing_at_a_key_url_is_refused_and_never_followed(
    tenant: Tenant, client: TestClient
) -> None:
    claims = jwt.decode(tenant.owner.token, options={"verify_signature": False})
    key = ed25519.Ed25519PrivateKey.generate()
    listener = Listener()
    try:
        url = f"http://127.0.0.1:{listener.port}/jwks.json"
        for header in ({"jku": url}, {"x5u": url}, {"jku": url, "kid": "attacker"}):
            token = jwt.encode(claims, key, algorithm="EdDSA", headers=header)
            r = client.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
            assert_problem(r, 401, "unauthenticated")
    finally:
        listener.close()
    assert listener.connections == 0


INTERNAL_URLS = [
    "https://localhost:{port}/hooks",  # a name that resolves to 127.0.0.1
    "https://127.0.0.1:{port}/hooks",
    "https://[::ffff:127.0.0.1]:{port}/hooks",
    "https://127.1:{port}/hooks",
    "https://10.0.0.1/hooks",
    "https://172.16.5.4/hooks",
    "https://192.168.0.10/hooks",
    "https://169.254.169.254/latest/meta-data/",
    "https://[fd00:ec2::254]/latest/meta-data/",
    "https://100.100.100.200/latest/meta-data/",
    "https://[fe80::1]/hooks",
    "https://224.0.0.251/hooks",
    "https://0.0.0.0:{port}/hooks",
    "https://[::]:{port}/hooks",
    "http://127.0.0.1:{port}/hooks",
    "http://1.1.1.1/hooks",  # plain http: refused without the development setting
]


@pytest.mark.parametrize("url", INTERNAL_URLS)
def test_an_internal_url_is_refused_at_registration_and_never_called(
    tenant: Tenant, url: str
) -> None:
    listener = Listener()
    try:
        url = url.format(port=listener.port)
        r = tenant.owner.post("/v1/webhook-endpoints", {"url": url, "event_types": ["*"]})
        assert_problem(r, 422, "url_not_allowed")
        r = tenant.owner.patch(f"/v1/webhook-endpoints/{tenant.webhook_id}", {"url": url})
        assert_problem(r, 422, "url_not_allowed")
    finally:
        listener.close()
    assert listener.connections == 0
    listed = tenant.owner.get("/v1/webhook-endpoints", params={"limit": "1000"}).json()["data"]
    assert url not in {e["url"] for e in listed}


DELIVER: dict[str, Any] = {
    "webhooks_deliver": True,
    "webhooks_poll_interval_seconds": 0.05,
    "webhooks_retry_base_seconds": 0.2,
    "webhooks_attempt_timeout_seconds": 1.0,
    "webhooks_heartbeat_seconds": 0.2,
}


def wait_for_attempt(client: TestClient, headers: dict[str, str], endpoint_id: str) -> Any:
    path = f"/v1/webhook-endpoints/{endpoint_id}/deliveries"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        data = client.get(path, headers=headers).json()["data"]
        if data and data[0]["attempts"] >= 1:
            return data[0]
        time.sleep(0.05)
    raise AssertionError("no attempt was made")


def test_delivery_checks_the_address_again_and_never_calls_loopback(database_url: str) -> None:
    """Registered while the address was allowed (here: by a process with the
    development setting; in life, a name whose DNS changed afterwards); delivered
    by a process without it: refused before any connection, recorded, retried."""
    listener = Listener()
    try:
        with new_database(database_url) as url:
            _, key = create_tenant(url, "ssrf")
            headers = {"Authorization": f"Bearer {key}"}
            with serve(url, webhooks_allow_loopback=True) as client:
                body = {"url": f"https://localhost:{listener.port}/hooks", "event_types": ["*"]}
                r = client.post("/v1/webhook-endpoints", json=body, headers=headers)
                assert r.status_code == 201, r.text
                endpoint_id = r.json()["webhook_endpoint"]["id"]
            with serve(url, **DELIVER) as client:
                r = client.post("/v1/accounts", json={"currency": "USD"}, headers=headers)
                assert r.status_code == 201, r.text
                delivery = wait_for_attempt(client, headers, endpoint_id)
    finally:
        listener.close()
    assert delivery["last_error"].startswith("url_not_allowed"), delivery
    assert "loopback" in delivery["last_error"]
    assert delivery["status"] == "pending"  # retried: DNS may change back
    assert delivery["last_status_code"] is None
    assert listener.connections == 0


def test_a_redirect_is_never_followed(database_url: str) -> None:
    listener = Listener()
    try:
        with new_database(database_url) as url, receiving() as receiver:
            receiver.default = Answer(
                307, {"Location": f"http://127.0.0.1:{listener.port}/internal"}
            )
            _, key = create_tenant(url, "redirect")
            headers = {"Authorization": f"Bearer {key}"}
            with serve(url, **DELIVER, webhooks_allow_loopback=True) as client:
                body = {"url": receiver.url, "event_types": ["*"]}
                r = client.post("/v1/webhook-endpoints", json=body, headers=headers)
                assert r.status_code == 201, r.text
                endpoint_id = r.json()["webhook_endpoint"]["id"]
                r = client.post("/v1/accounts", json={"currency": "USD"}, headers=headers)
                delivery = wait_for_attempt(client, headers, endpoint_id)
            assert delivery["last_status_code"] == 307
            assert "redirects are not followed" in delivery["last_error"]
            assert len(receiver.received) >= 1
    finally:
        listener.close()
    assert listener.connections == 0

"""API7:2023 Server Side Request Forgery.

Applies only as a property to keep: Tally makes no outbound request from anything
a client sends. It has no webhooks, no callbacks, no imports from a URL and no
key discovery (a token's ``jku``, ``x5u`` or ``jwk`` header is never followed;
keys come from its own database). Its only peers are PostgreSQL and Redis, at
addresses the operator configures. This module proves that this stays so:

- no request schema in the OpenAPI document has a field that takes a URL or a
  host, and no parameter does;
- Tally's own code imports no HTTP client;
- an access token whose header points at a key URL (``jku``, ``x5u``) is refused
  without the server ever connecting there.
"""

from __future__ import annotations

import ast
import socket
import threading
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ed25519
from starlette.testclient import TestClient

import tally
from tally.api.openapi import build_openapi
from tests.security.conftest import Tenant, assert_problem

URL_LIKE_NAMES = ("url", "uri", "href", "link", "webhook", "callback", "endpoint", "host")
HTTP_CLIENTS = {"httpx", "requests", "aiohttp", "urllib.request", "http.client", "urllib3"}


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


def test_no_request_field_or_parameter_takes_a_url() -> None:
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
                assert parameter["schema"].get("format") not in ("uri", "url"), parameter
    assert request_schemas, "the document has request bodies"
    for name in sorted(request_schemas | {"TransferCreate", "BatchAction"}):
        for field, schema in properties(schemas[name]):
            leaf = field.rpartition(".")[2].lower()
            assert not any(word in leaf for word in URL_LIKE_NAMES), (name, field)
            assert schema.get("format") not in ("uri", "url", "hostname"), (name, field)


def test_tallys_code_imports_no_http_client() -> None:
    package = Path(tally.__file__).parent
    for source in package.rglob("*.py"):
        if source.relative_to(package).parts[0] == "client":
            # The Python client for callers (docs/client.md) is an HTTP client by
            # design; no server module may import it (the layers: tally.client
            # sits above tally.api, tests/architecture).
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
                assert not any(
                    name == client or name.startswith(f"{client}.") for client in HTTP_CLIENTS
                ), f"{source.relative_to(package)} imports {name}"


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

"""The OpenAPI 3.1 document, generated from the route table and the Structs.

Nothing here is written by hand twice: paths, parameters and status codes come
from ``ROUTES``; request and response schemas from msgspec's JSON Schema of the
very Structs the server decodes and encodes.
"""

from __future__ import annotations

from typing import Any

import msgspec

from tally import __version__
from tally.api.endpoint import RouteSpec
from tally.api.graphql import graphiql
from tally.api.graphql.request import PATH as GRAPHQL_PATH
from tally.api.graphql.request import GraphQLRequest
from tally.api.routes import ROUTES
from tally.api.schemas.identity import NOT_BLANK_PATTERN
from tally.api.schemas.ledger import BatchAction, TransferCreate
from tally.api.schemas.problem import Problem

_REF = "#/components/schemas/{name}"

_ERROR_TEXT = {
    400: "Malformed request (body is not JSON, bad header): `malformed_request`, "
    "`idempotency_key_invalid`, `idempotency_key_required`.",
    401: "No or bad credentials (`unauthenticated`), with `WWW-Authenticate: Bearer`.",
    403: "The credential lacks the scope or role (`forbidden`).",
    404: "No such object for this tenant (`not_found`, `pending_transfer_not_found`).",
    409: "Conflict: `exists_with_different_fields`; `idempotency_key_in_use` (with "
    "`Retry-After`) while a request with the same Idempotency-Key is executing; or the "
    "pending transfer is no longer pending (`pending_transfer_not_pending`, "
    "`pending_transfer_already_posted`, `pending_transfer_already_voided`, "
    "`pending_transfer_expired`).",
    412: "`If-Match` does not match the account's current ETag (`precondition_failed`).",
    413: "The body is over the limit (`payload_too_large`).",
    415: "The body is not `application/json` (`unsupported_media_type`).",
    422: "`validation_error`, with `errors` naming each field or query parameter at "
    "fault: a value breaks its schema, or a query parameter is one the route does not "
    "list or is given twice; `idempotency_key_reused` (the key was used for another "
    "method, path or body); or a ledger rule refused the request (`exceeds_credits`, "
    "`accounts_must_be_different`, … see the error codes).",
    425: "Sent in TLS 0-RTT early data, which can be replayed (`too_early`): nothing "
    "ran; send it again once the handshake is complete (RFC 8470).",
    429: "Too many requests (`rate_limited`): retry after `Retry-After` seconds; "
    "`RateLimit` and `RateLimit-Policy` say where the caller stands.",
    503: "The database is unreachable or the write queue is full (`unavailable`); "
    "nothing was changed. Retry after `Retry-After` seconds.",
}
_PROBLEM = {"application/problem+json": {"schema": {"$ref": _REF.format(name="Problem")}}}
_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[ -~]+$"},
    "description": "Makes retries safe: the first request executes and its response is "
    "stored with its effect; a retry with the same key and request replays it "
    "(`Idempotent-Replayed: true`). Kept 24 h. Required on POST when the server sets "
    "TALLY_REQUIRE_IDEMPOTENCY_KEY.",
}
_REPLAYED = {
    "Idempotent-Replayed": {
        "description": "`true` when this is the stored response of an earlier request "
        "with the same Idempotency-Key.",
        "schema": {"type": "string", "enum": ["true"]},
    }
}


_DESCRIPTIONS = {200: "OK", 201: "Created", 202: "Accepted", 204: "Done; no content."}


# OpenAPI 3.2's description of a stream: each item is one event of the stream (its
# id, event and data fields), the data an EventOut as JSON.
_EVENT_STREAM = {
    "itemSchema": {
        "type": "object",
        "description": "One Server-Sent Event: `id: <sequence>`, `event: <type>`, `data: "
        "<an EventOut as JSON>`. A comment line (`: heartbeat`) comes every 15 s; a client "
        "too slow to keep up gets a final `event: overflow` whose data is "
        '`{"type": "overflow", "last_sequence": N, "detail": ...}`, and the stream ends: '
        "reconnect with `Last-Event-ID`.",
        "properties": {
            "id": {"type": "string", "pattern": "^[0-9]{1,19}$"},
            "event": {"type": "string"},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": {
                    "oneOf": [
                        {"$ref": "#/components/schemas/EventOut"},
                        {
                            "type": "object",
                            "description": "The final frame to a client too slow to keep up.",
                            "required": ["type", "last_sequence"],
                            "properties": {
                                "type": {"const": "overflow"},
                                "last_sequence": {"type": "integer"},
                                "detail": {"type": "string"},
                            },
                        },
                    ]
                },
            },
            "retry": {"type": "integer"},
        },
        "required": ["data"],
    },
}
# OpenAPI describes no WebSocket: the one Tally serves is listed here.
WEBSOCKETS = {
    "/v1/events/ws": {
        "summary": "Stream events over WebSocket",
        "description": "The events of GET /v1/events/stream, one JSON text message each "
        "(an EventOut). Credentials: `Authorization: Bearer ...` on the handshake, or a "
        'first message `{"type": "auth", "token": "..."}` within 5 s. Scope '
        "`events:read`. `?after=` resumes after that sequence; `?types=` filters. The "
        'server also sends `{"type": "heartbeat"}` every 15 s, and `{"type": '
        '"overflow", "last_sequence": N}` then close code 4008 to a client too slow to '
        "keep up. A refused handshake is an HTTP problem response (401, 403, 422, 429); "
        "a refused auth message is a problem message, then close code 4000 + status.",
        "scope": "events:read",
        "parameters": ["after", "types"],
    }
}


def _operation(spec: RouteSpec) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status, schema in spec.success.items():
        description = _DESCRIPTIONS.get(status, "OK")
        if spec.path.endswith("/batch"):
            description = (
                "Non-atomic batch: each item's result."
                if status == 200
                else "Atomic batch applied."
            )
        elif status == 200 and 201 in spec.success:
            description = "An object with this id and identical fields exists: it is returned."
        response: dict[str, Any] = {"description": description}
        if spec.keyed:
            response["headers"] = _REPLAYED
        if spec.media_type == "text/event-stream":
            response["content"] = {"text/event-stream": _EVENT_STREAM}
        elif isinstance(schema, tuple):
            one_of = {"oneOf": [{"$ref": _REF.format(name=t.__name__)} for t in schema]}
            response["content"] = {"application/json": {"schema": one_of}}
        elif schema is not None:
            ref = {"$ref": _REF.format(name=schema.__name__)}
            response["content"] = {"application/json": {"schema": ref}}
        responses[str(status)] = response
    writes = spec.keyed
    # Every /v1 route is rate limited (429) and refuses a query parameter it does not
    # list (422); every keyed write can meet a key in use (409); every method but GET
    # is refused from TLS early data (425, api/middleware.py).
    statuses = {*spec.errors, 422, 429} | ({409} if writes else set())
    statuses |= {425} if spec.method != "GET" else set()
    for status in sorted(statuses):
        responses[str(status)] = {"description": _ERROR_TEXT[status], "content": _PROBLEM}
    operation: dict[str, Any] = {
        "operationId": spec.operation_id,
        "summary": spec.summary,
        "description": _access(spec),
        "tags": [spec.tag],
        "security": [{"bearer": []}] if spec.auth else [],
        "parameters": [
            {
                "name": p.name,
                "in": p.where,
                "required": p.required,
                "schema": p.schema,
                **({"description": p.description} if p.description else {}),
                **({"style": "deepObject", "explode": True} if p.style == "deepObject" else {}),
            }
            for p in spec.params
        ]
        + ([_IDEMPOTENCY_KEY] if writes else []),
        "responses": responses,
    }
    if spec.request is not None:
        body_ref = {"$ref": _REF.format(name=spec.request.__name__)}
        operation["requestBody"] = {
            "required": spec.method != "POST"
            or not spec.path.endswith(("/post", "/void", "/rotate-secret")),
            "content": {"application/json": {"schema": body_ref}},
        }
    return operation


def _access(spec: RouteSpec) -> str:
    if not spec.auth:
        return "No credential: anyone may call it."
    if not spec.scope:
        return "Any valid credential (an API key or a user's access token)."
    return f"Needs the `{spec.scope}` scope (an API key's, or a role's: see the security docs)."


_OPERATIONS = (
    ("/healthz", "healthz", "Liveness: the process answers", "application/json"),
    ("/readyz", "readyz", "Readiness: the database answers", "application/json"),
    ("/metrics", "metrics", "Prometheus metrics of this process", "text/plain"),
    ("/openapi.json", "openapi", "This document", "application/json"),
    ("/docs", "docs", "This document, to read in a browser", "text/html"),
    ("/docs/reference.css", "docsStylesheet", "The stylesheet of the /docs page", "text/css"),
    (graphiql.PAGE_PATH, "graphiql", "GraphiQL: explore /graphql in a browser", "text/html"),
    *(
        (graphiql.asset_path(name), f"graphiqlAsset{i}", f"{name}, of the GraphiQL page", kind)
        for i, (name, kind) in enumerate(graphiql.ASSETS)
    ),
)


def build_openapi() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Tally",
            "version": __version__,
            "description": "A double-entry ledger service. Money is an integer in minor "
            "units. Every `/v1` route but sign-up, login, refresh and accepting an "
            "invitation needs `Authorization: Bearer <API key or access token>`. "
            "Requests are strict: an unknown body field, and a query parameter that the "
            "route does not list or that is given twice, are refused with 422 "
            "`validation_error` naming it.",
        },
        "servers": [{"url": "/"}],
        "paths": {**_api_paths(), **_graphql_paths(), **_operation_paths()},
        "x-websockets": WEBSOCKETS,
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _schemas() -> dict[str, Any]:
    structs = {s.request for s in ROUTES if s.request is not None}
    for spec in ROUTES:
        for schema in spec.success.values():
            if isinstance(schema, tuple):
                structs.update(schema)
            elif schema is not None:
                structs.add(schema)
    structs |= {Problem, TransferCreate, BatchAction, GraphQLRequest}
    _, components = msgspec.json.schema_components(
        sorted(structs, key=lambda t: t.__name__), ref_template=_REF
    )
    # A batch item is one of two shapes; say so instead of "any object".
    batch = components["BatchCreate"]["properties"]["transfers"]
    batch["items"] = {
        "oneOf": [
            {"$ref": _REF.format(name="TransferCreate")},
            {"$ref": _REF.format(name="BatchAction")},
        ]
    }
    # Some rules need nothing but the request itself, so JSON Schema can state them
    # and the document does: no account with both limit flags
    # (flags_are_mutually_exclusive), no amount on a batch's void, and (in
    # _api_paths, on POST /v1/transfers only) a timeout only on a pending transfer.
    components["AccountFlags"]["not"] = {
        "required": ["debits_must_not_exceed_credits", "credits_must_not_exceed_debits"],
        "properties": {
            "debits_must_not_exceed_credits": {"const": True},
            "credits_must_not_exceed_debits": {"const": True},
        },
    }
    for name, field in (("SignupCreate", "tenant_name"), ("ApiKeyCreate", "name")):
        components[name]["properties"][field]["pattern"] = NOT_BLANK_PATTERN
    components["BatchAction"]["anyOf"] = [
        {"properties": {"action": {"const": "post"}}},
        {"properties": {"amount": {"type": "null"}}},
    ]
    # The same rules in words, for people (the /docs page shows these).
    components["AccountFlags"]["description"] = (
        "At most one of the two limits may be on (else 422 `flags_are_mutually_exclusive`)."
    )
    components["BatchAction"]["description"] += " A void takes no `amount`."
    return components


def _api_paths() -> dict[str, dict[str, Any]]:
    paths: dict[str, dict[str, Any]] = {}
    for spec in ROUTES:
        paths.setdefault(spec.path, {})[spec.method.lower()] = _operation(spec)
    # timeout_requires_pending refuses the request on POST /v1/transfers, but in a
    # batch it is one item's ledger outcome (api.md §4), so it is not a constraint
    # of TransferCreate, which is also the batch item's shape.
    body = paths["/v1/transfers"]["post"]["requestBody"]["content"]["application/json"]
    body["schema"] = {
        "description": "`timeout_seconds` only with `pending: true` "
        "(else 422 `timeout_requires_pending`).",
        "allOf": [body["schema"]],
        "anyOf": [
            {"required": ["pending"], "properties": {"pending": {"const": True}}},
            {"properties": {"timeout_seconds": {"type": "null"}}},
        ],
    }
    return paths


def _operation_paths() -> dict[str, dict[str, Any]]:
    paths: dict[str, dict[str, Any]] = {}
    for path, operation_id, summary, media_type in _OPERATIONS:
        ok: dict[str, Any] = {"description": "OK", "content": {media_type: {}}}
        responses: dict[str, Any] = {"200": ok}
        if path == "/readyz":
            responses["503"] = {"description": "The database does not answer.", "content": _PROBLEM}
        paths[path] = {
            "get": {
                "operationId": operation_id,
                "summary": summary,
                "tags": ["Operations"],
                "security": [],
                "responses": responses,
            }
        }
    return paths


_GRAPHQL_TEXT = (
    "GraphQL over the same services as the REST routes (docs/graphql.md; the schema is "
    "docs/schema.graphql). The same credentials, scopes (checked per field), rate limits "
    "and error codes (each GraphQL error's `extensions.code`). A request GraphQL runs "
    "answers 200 with `data` and/or `errors`; one refused before it runs answers the "
    "code's status with a GraphQL `errors` body. Mutations take `Idempotency-Key`, as "
    "POST routes do; GET runs queries only."
)
_GRAPHQL_ERRORS = (400, 401, 405, 409, 413, 415, 422, 425, 429)


def _graphql_operation(method: str) -> dict[str, Any]:
    ok = {"description": "The result: `data` and/or `errors`.", "content": {"application/json": {}}}
    responses: dict[str, Any] = {"200": ok}
    for status in _GRAPHQL_ERRORS:
        if method == "get" and status in (409, 413, 415, 425):
            continue
        description = _ERROR_TEXT.get(status, "A mutation sent with GET (`method_not_allowed`).")
        responses[str(status)] = {
            "description": description,
            "content": {"application/json": {}},
        }
    operation: dict[str, Any] = {
        "operationId": "graphqlPost" if method == "post" else "graphqlGet",
        "summary": "A GraphQL operation" + (" (queries only)" if method == "get" else ""),
        "description": _GRAPHQL_TEXT,
        "tags": ["GraphQL"],
        "security": [{"bearer": []}],
    }
    if method == "post":
        operation["parameters"] = [_IDEMPOTENCY_KEY]
        ref = {"$ref": _REF.format(name="GraphQLRequest")}
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": ref}},
        }
    else:
        text = {"type": "string"}
        json_object = {"application/json": {"schema": {"type": "object"}}}
        operation["parameters"] = [
            {"name": "query", "in": "query", "required": True, "schema": text},
            {"name": "variables", "in": "query", "required": False, "content": json_object},
            {"name": "operationName", "in": "query", "required": False, "schema": text},
            {"name": "extensions", "in": "query", "required": False, "content": json_object},
        ]
    operation["responses"] = responses
    return operation


def _graphql_paths() -> dict[str, dict[str, Any]]:
    return {GRAPHQL_PATH: {"get": _graphql_operation("get"), "post": _graphql_operation("post")}}

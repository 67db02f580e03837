"""``/graphql`` over HTTP: the same admission as REST, then one GraphQL operation.

Every request goes through what a REST request goes through, reused from the
REST framework rather than written again: ``endpoint.admit`` (the credential
from the ``Authorization`` header, API key or session token, and the caller's
rate-limit bucket), ``parsing.read_body`` (size limit, JSON only),
``parsing.idempotency_key`` and ``ledger.idempotency.fingerprint`` (api.md §3:
the key is scoped to the tenant; the fingerprint is the method, the path and
the parsed body), and ``problems`` (each code's HTTP status, Retry-After and
WWW-Authenticate). Each field then checks its scope (``endpoint.require_scope``).

A request refused before GraphQL runs (no credential, rate limited, body too
large, not JSON, a bad key, a JSON array of operations) answers the contract's
HTTP status with a GraphQL body: ``{"errors": [{"message", "extensions":
{"code"}}]}``. Once the document is read, the answer is 200 with ``data``
and/or ``errors`` (GraphQL over HTTP, application/json), each error carrying
its code. GET runs queries only (a mutation over GET is 405).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from graphql import GraphQLError, OperationType
from starlette.requests import Request
from starlette.responses import Response

from tally.api import access_log
from tally.api.endpoint import REQUEST_SECONDS, REQUESTS, UNEXPECTED, admit, client_address
from tally.api.graphql.context import Context, Loaders
from tally.api.graphql.errors import error_json, result_json, tally_error_json
from tally.api.graphql.limits import Limits, checked_operation
from tally.api.graphql.request import PATH, GraphQLRequest
from tally.api.graphql.schema import Schema, build_schema
from tally.api.parsing import QueryNames, check_query_names, decode, idempotency_key, read_body
from tally.api.problems import problem, request_id_of
from tally.errors import (
    FieldError,
    IdempotencyKeyRequired,
    MethodNotAllowed,
    TallyError,
    ValidationFailed,
)
from tally.identity import Principal
from tally.ledger.idempotency import Claim, fingerprint
from tally.ledger.public import encode
from tally.services import Services

log = logging.getLogger(__name__)

_GET_PARAMETERS = QueryNames(
    frozenset({"query", "variables", "operationName", "extensions"}), frozenset()
)
_POST_PARAMETERS = QueryNames(frozenset(), frozenset())
_JSON = "application/json"
SUBSCRIPTION_OVER_HTTP = GraphQLError(
    "A subscription runs over WebSocket: open /graphql with the graphql-transport-ws "
    "subprotocol (docs/graphql.md).",
    extensions={"code": "validation_error"},
)


def machinery(services: Services) -> tuple[Schema, Limits]:
    """The schema and the document limits, built once per process and shared by
    ``/graphql`` over HTTP and over WebSocket (``route.py`` calls this on first use)."""
    s = services.settings
    limits = Limits(
        depth_max=s.graphql_depth_max,
        cost_max=s.graphql_cost_max,
        aliases_max=s.graphql_aliases_max,
        page_default=s.page_limit_default,
        page_max=s.page_limit_max,
    )
    return build_schema(s), limits


def graphql_handler(
    services: Services, schema: Schema, limits: Limits
) -> Callable[[Request], Awaitable[Response]]:
    """The endpoint of ``/graphql`` over HTTP."""
    s = services.settings
    logged = s.access_log

    async def serve(request: Request) -> Response:
        started = time.perf_counter()
        if logged:
            access_log.note(request.scope.get("state"), route=PATH)
        limit_headers: dict[str, str] = {}
        try:
            principal, limit_headers = await admit(services, request, None)
            assert principal is not None, "admit with auth either finds a caller or raises"
            body, raw, key = await _read(request, s.body_bytes_max)
            response = await _run(services, schema, limits, request, principal, body, raw, key)
        except TallyError as error:
            response = error_response(error, request)
        except Exception:
            log.exception("unhandled error in /graphql")
            response = error_response(TallyError(UNEXPECTED), request)
        for name, value in limit_headers.items():
            response.headers.setdefault(name, value)
        method = request.method
        REQUESTS.labels(method, PATH, response.status_code).inc()
        REQUEST_SECONDS.labels(method, PATH).observe(time.perf_counter() - started)
        return response

    return serve


async def _read(request: Request, body_bytes_max: int) -> tuple[GraphQLRequest, bytes, str | None]:
    """The request, its raw body (for the idempotency fingerprint) and its key."""
    if request.method == "GET":
        check_query_names(request, _GET_PARAMETERS)
        params = request.query_params
        query = params.get("query")
        if query is None:
            raise ValidationFailed([FieldError("query", "required", "Send the query in query=.")])
        text = params.get("variables")
        variables = None if text is None else decode(text.encode(), dict[str, Any])
        return GraphQLRequest(query, variables, params.get("operationName")), b"", None
    # As on every REST write: no query parameter, and a malformed key is a 400
    # whatever the body (a query ignores a well-formed one).
    check_query_names(request, _POST_PARAMETERS)
    key = idempotency_key(request.headers.getlist("idempotency-key"))
    raw = await read_body(request, body_bytes_max)
    if raw.lstrip()[:1] == b"[":
        raise ValidationFailed(
            [
                FieldError(
                    "body",
                    "invalid",
                    "Batched requests (a JSON array of operations) are refused: send one "
                    "operation per request.",
                )
            ]
        )
    return decode(raw, GraphQLRequest), raw, key


async def _run(
    services: Services,
    schema: Schema,
    limits: Limits,
    request: Request,
    principal: Principal,
    body: GraphQLRequest,
    raw: bytes,
    key: str | None,
) -> Response:
    variables = body.variables or {}
    try:
        operation = checked_operation(
            body.query, body.operationName, variables, limits, services.settings.graphql_tokens_max
        )
    except GraphQLError as error:  # a syntax error, or a limit
        return _answer({"errors": [error_json(error)]})
    if operation.operation is OperationType.SUBSCRIPTION:
        return _answer({"errors": [error_json(SUBSCRIPTION_OVER_HTTP)]})
    mutation = operation.operation is OperationType.MUTATION
    if operation.operation is not OperationType.QUERY and request.method == "GET":
        raise MethodNotAllowed(
            "GET runs queries only: send a mutation with POST.", metadata={"Allow": "POST"}
        )
    claim = None
    if mutation:
        if key is None and services.settings.require_idempotency_key:
            raise IdempotencyKeyRequired("Send an Idempotency-Key header with a mutation.")
        if key is not None:
            claim = Claim(key, fingerprint("POST", PATH, raw))
    ctx = Context(
        services=services,
        principal=principal,
        request_id=request_id_of(request),
        client_address=client_address(request),
        claim=claim,
        loaders=Loaders(services, principal.tenant_id),
    )
    result = await schema.execute(
        body.query,
        variable_values=variables,
        context_value=ctx,
        operation_name=body.operationName,
    )
    out = result_json(result.data, result.errors)
    errors = result.errors or []
    headers = {"idempotent-replayed": "true"} if ctx.replayed else {}
    # A field refused for a passing reason (a key in use, a full queue, a database
    # away) says when to retry, in the header REST sends too.
    waits = [
        e.original_error.retry_after_seconds
        for e in errors
        if isinstance(e.original_error, TallyError) and e.original_error.retry_after_seconds
    ]
    if waits:
        headers["retry-after"] = str(max(waits))
    return _answer(out, headers)


def _answer(out: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(encode(out), 200, headers=headers, media_type=_JSON)


def error_response(error: TallyError, request: Request) -> Response:
    """A request refused before GraphQL ran: the contract's status, REST's headers
    (Retry-After, WWW-Authenticate, rate limits), a GraphQL body."""
    stored = problem(error, request_id_of(request))
    headers = {k: v for k, v in stored.headers if k.lower() != "content-type"}
    body = encode({"errors": [tally_error_json(error)]})
    return Response(body, stored.status, headers=headers, media_type=_JSON)


__all__ = ["PATH", "error_response", "graphql_handler", "machinery"]

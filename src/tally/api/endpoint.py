"""The endpoint framework: how a route is described, and what runs around its handler.

A route is a ``RouteSpec``: its method, path, schemas, status codes, scope and
handler, declared beside the handler with ``RouteTable.route``. The router and
the OpenAPI document are both built from the same specs, so the published
contract cannot name a route, field or error that the server does not have, or
miss one it does.

Around every handler, ``endpoint`` runs the same steps: authenticate, take a
rate-limit token, check the scope, refuse a query parameter the route does not
take, parse the Idempotency-Key, then render any
error as problem details, record the request in the audit log and measure it.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter, Histogram
from starlette.requests import Request
from starlette.responses import Response

from tally.api import access_log
from tally.api.parsing import (
    QueryNames,
    check_query_names,
    decode,
    idempotency_key,
    query_int,
    read_body,
)
from tally.api.problems import problem_response, request_id_of
from tally.audit import AuditContext
from tally.config import Settings
from tally.errors import (
    Forbidden,
    IdempotencyKeyRequired,
    NotFound,
    TallyError,
)
from tally.identity import Principal
from tally.identity.roles import allows
from tally.ledger import WriteContext
from tally.ledger.idempotency import Claim, fingerprint
from tally.ledger.transaction import Answer
from tally.services import Services
from tally.support.ids import is_valid_id

log = logging.getLogger(__name__)

UNEXPECTED = "An unexpected error occurred: a bug in Tally. Report it with the request_id."
REQUESTS = Counter("tally_http_requests", "HTTP requests served.", ("method", "route", "status"))
REQUEST_SECONDS = Histogram(
    "tally_http_request_seconds",
    "Time to serve an HTTP request.",
    ("method", "route"),
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)

Handler = Callable[["Call"], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    where: str  # "path", "query" or "header"
    schema: dict[str, Any]
    description: str = ""
    required: bool = False
    # "form" (name=value) or "deepObject" (name[key]=value, the metadata filter).
    style: str = "form"


@dataclass(frozen=True, slots=True)
class RouteSpec:
    method: str
    path: str
    operation_id: str
    summary: str
    handler: Handler
    scope: str  # "" for routes any authenticated caller (or anyone, see auth) may use
    # Status -> response schema; a tuple is "one of these" (see listAccountBalances).
    success: dict[int, type | tuple[type, ...] | None]
    request: type | None = None
    errors: tuple[int, ...] = ()
    params: tuple[Param, ...] = ()
    tag: str = ""
    auth: bool = True  # False: sign-up, login, refresh (the caller has no credential yet)
    idempotency_key: bool = True  # takes Idempotency-Key (ledger writes; api.md §3)
    media_type: str = "application/json"  # of the success response

    @property
    def mutating(self) -> bool:
        return self.method in ("POST", "PATCH", "PUT", "DELETE")

    @property
    def keyed(self) -> bool:
        return self.idempotency_key and self.method in ("POST", "PATCH")

    @property
    def query(self) -> QueryNames:
        """The query parameters the route takes: any other is refused (422)."""
        query = [p for p in self.params if p.where == "query"]
        return QueryNames(
            frozenset(p.name for p in query if p.style == "form"),
            frozenset(p.name for p in query if p.style == "deepObject"),
        )


@dataclass(slots=True)
class RouteTable:
    """The routes of one area, in the order the OpenAPI document lists them."""

    tag: str
    specs: list[RouteSpec] = field(default_factory=list)

    def route(
        self,
        method: str,
        path: str,
        operation_id: str,
        summary: str,
        *,
        scope: str,
        success: dict[int, type | tuple[type, ...] | None],
        request: type | None = None,
        errors: tuple[int, ...] = (),
        params: tuple[Param, ...] = (),
        auth: bool = True,
        idempotency_key: bool = True,
        media_type: str = "application/json",
    ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            spec = RouteSpec(
                method, path, operation_id, summary, handler, scope, success, request,
                errors, params, self.tag, auth, idempotency_key, media_type,
            )  # fmt: skip
            self.specs.append(spec)
            return handler

        return register


@dataclass(slots=True)
class Call:
    """What a handler gets: the request, its caller, and the services."""

    request: Request
    principal_or_none: Principal | None
    services: Services
    settings: Settings
    audit: AuditContext | None = None  # set for mutating routes
    idempotency_key: str | None = None
    raw_body: bytes = b""

    @property
    def principal(self) -> Principal:
        assert self.principal_or_none is not None, "an authenticated route"
        return self.principal_or_none

    @property
    def tenant_id(self) -> str:
        return self.principal.tenant_id

    @property
    def request_id(self) -> str | None:
        return request_id_of(self.request)

    @property
    def client_address(self) -> str | None:
        return client_address(self.request)

    @property
    def claim(self) -> Claim | None:
        """The request's idempotency claim; call after ``body()``."""
        if self.idempotency_key is None:
            return None
        r = self.request
        return Claim(self.idempotency_key, fingerprint(r.method, request_path(r), self.raw_body))

    def write_context(self, answer: Answer) -> WriteContext:
        """How a ledger write of this request is answered, keyed and audited."""
        return WriteContext(answer=answer, claim=self.claim, audit=self.audit)

    def path_id(self, name: str = "id") -> str:
        value: str = self.request.path_params[name]
        if not is_valid_id(value):
            # No object can have such an id, so it is simply not there.
            raise NotFound(f"No object with id {value!r}: no id has that form.")
        return value

    async def body(self, schema: type[Any], *, empty_ok: bool = False) -> Any:
        self.raw_body = await read_body(
            self.request, self.settings.body_bytes_max, empty_ok=empty_ok
        )
        return decode(self.raw_body, schema)

    def limit(self) -> int:
        s = self.settings
        return query_int(self.request, "limit", s.page_limit_default, 1, s.page_limit_max)


# A path that Starlette's ``request.url.path`` hands back unchanged (it escapes
# ?, # and \, drops tabs and line breaks, and re-parses the whole URL: 8 µs).
_PLAIN_PATH = re.compile(r"/[A-Za-z0-9._~:@!$&'()*+,;=%/-]*")


def request_path(request: Request) -> str:
    """``request.url.path``, as the idempotency fingerprint has always hashed it,
    read straight from the scope when that gives the same string (every path that
    reaches a write: ids are checked first)."""
    path: str = request.scope["path"]
    if _PLAIN_PATH.fullmatch(path) and not path.startswith("//"):
        return path
    return request.url.path


def client_address(request: Request) -> str | None:
    # request.client's host, without building its Address each time.
    client = request.scope.get("client")
    return client[0] if client else None


def endpoint(spec: RouteSpec, services: Services) -> Endpoint:
    """The Starlette endpoint of a route: authenticate, limit, authorize, run, render
    errors, audit, measure."""
    settings = services.settings
    query = spec.query
    logged = settings.access_log
    # prometheus_client's labels() validates and hashes its arguments on every
    # call: bind the route's children once (a status's on first use).
    seconds = REQUEST_SECONDS.labels(spec.method, spec.path)
    counted: dict[int, Any] = {}

    async def run(request: Request) -> Response:
        started = time.perf_counter()
        if logged:
            access_log.note(request.scope.get("state"), route=spec.path)
        ctx = None
        if spec.mutating:
            ctx = AuditContext(spec.operation_id, request_id_of(request), client_address(request))
        limit_headers: dict[str, str] = {}
        code = None
        try:
            principal, limit_headers = await admit(services, request, ctx, auth=spec.auth)
            if principal is not None and spec.scope:
                require_scope(principal, spec.scope)
            # A mistyped filter must not silently widen a list: query parameters
            # are held to the route's list as strictly as a body to its schema.
            check_query_names(request, query)
            call = Call(request, principal, services, settings, audit=ctx)
            if spec.keyed:
                call.idempotency_key = idempotency_key(request.headers.getlist("idempotency-key"))
                required = settings.require_idempotency_key and spec.method == "POST"
                if call.idempotency_key is None and required:
                    raise IdempotencyKeyRequired("Send an Idempotency-Key header.")
            response = await spec.handler(call)
        except TallyError as error:
            code = error.code
            response = problem_response(error, request)
        except Exception:
            # A bug. The client learns only that, and the request id to report it by.
            log.exception("unhandled error in %s", spec.operation_id)
            code = "internal_error"
            response = problem_response(TallyError(UNEXPECTED), request)
        if limit_headers:
            _add_absent(response, limit_headers)
        if ctx is not None and not ctx.recorded:
            # It changed nothing (refused, or replayed): the appender records it.
            if "idempotent-replayed" in response.headers:
                code = "idempotent_replayed"
            await services.audit_appender.append(
                ctx.row(response.status_code, code, services.clock())
            )
        if logged and ctx is not None:
            # Sign-up and login learn their caller only as they run.
            _note_caller(request, ctx.tenant_id, ctx.actor_type, ctx.actor_id)
        status = response.status_code
        counter = counted.get(status)
        if counter is None:
            counter = counted[status] = REQUESTS.labels(spec.method, spec.path, status)
        counter.inc()
        seconds.observe(time.perf_counter() - started)
        return response

    run.__name__ = spec.operation_id
    return run


def _add_absent(response: Response, headers: dict[str, str]) -> None:
    """The rate-limit headers, unless the handler set its own (login's limit
    speaks for the request, not ours). Appended to the raw list: Starlette's
    MutableHeaders re-scans it for every name it sets."""
    raw = response.raw_headers
    present = {key for key, _ in raw}
    for name, value in headers.items():
        key = name.lower().encode("latin-1")
        if key not in present:
            raw.append((key, value.encode("latin-1")))
            present.add(key)


async def admit(
    services: Services, request: Request, ctx: AuditContext | None, *, auth: bool = True
) -> tuple[Principal | None, dict[str, str]]:
    """Who is calling, and the rate-limit headers their request earned; or the
    error that stops it (401, 429). Every entry point over HTTP (REST, GraphQL)
    admits its requests here; the rule itself is ``Services.admit``, which gRPC
    calls too."""
    address = client_address(request)
    if not auth:
        return None, await services.limits.for_address(address)
    principal, headers = await services.admit(request.headers.get("authorization"), address)
    if ctx is not None:
        ctx.tenant_id = principal.tenant_id
        ctx.actor_type, ctx.actor_id = principal.actor_type, principal.actor_id
    if services.settings.access_log:
        _note_caller(request, principal.tenant_id, principal.actor_type, principal.actor_id)
    return principal, headers


def _note_caller(
    request: Request, tenant_id: str | None, actor_type: str, actor_id: str | None
) -> None:
    if tenant_id is None and actor_id is None:
        return  # nobody known yet (a refused login, a bad credential)
    actor = f"{actor_type}:{actor_id}" if actor_id is not None else actor_type
    access_log.note(request.scope.get("state"), tenant_id=tenant_id, actor=actor)


def require_scope(principal: Principal, scope: str) -> None:
    """Refuse (403) a caller whose credential lacks ``scope``; ``admin`` holds every
    scope (api.md §6, ``identity.roles.allows``). REST checks a route's scope here,
    GraphQL a field's."""
    if not allows(principal.scopes, scope):
        raise Forbidden(
            f"This credential lacks the {scope} scope: call with an API key that has "
            "it, or as a user whose role grants it."
        )

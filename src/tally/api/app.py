"""The ASGI application: routes, middleware and the process's background work.

``create_app`` is the only constructor. Its lifespan opens the store, starts the
batching writer and the expiry loop, and on shutdown finishes queued writes
before closing the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tally.api.openapi import ROUTES, build_openapi
from tally.api.problems import problem_response
from tally.api.routes import endpoint
from tally.audit import Appender, run_sealer
from tally.auth import Authenticator
from tally.config import Settings, get_settings
from tally.errors import MalformedRequest, MethodNotAllowed, NotFound, TallyError
from tally.expiry import run_expiry
from tally.identity.passwords import PasswordHasher
from tally.identity.service import Identity
from tally.identity.tokens import Keyring
from tally.ids import new_id
from tally.ratelimit import Limiter, Limits
from tally.retention import run_retention
from tally.schemas import encode
from tally.service import Ledger
from tally.storage import make_store
from tally.writer import Writer, wall_clock_us

log = logging.getLogger(__name__)

_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_DOCS_CSP = (
    "default-src 'none'; script-src https://cdn.jsdelivr.net 'unsafe-inline'; "
    "style-src https://cdn.jsdelivr.net https://fonts.googleapis.com 'unsafe-inline'; "
    "font-src https://fonts.gstatic.com; img-src 'self' data: https://cdn.jsdelivr.net; "
    "connect-src 'self'; worker-src blob:; frame-ancestors 'none'"
)
_DOCS_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Tally API</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><redoc spec-url="/openapi.json"></redoc>
<script src="https://cdn.jsdelivr.net/npm/redoc@2.1.5/bundles/redoc.standalone.js"></script>
</body></html>"""


Endpoint = Callable[[Request], Awaitable[Response]]

# Sent with every response unless the endpoint set its own (the /docs page sets a
# CSP that lets it load its script). The API answers JSON, never a page to frame,
# so the strictest values cost nothing.
_SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-store"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"cross-origin-resource-policy", b"same-origin"),
)
# Only over TLS (RFC 6797 §7.2: a browser ignores it over plain HTTP anyway).
_HSTS = b"max-age=63072000; includeSubDomains"
_CORS_HEADERS = ["authorization", "content-type", "idempotency-key", "if-match", "request-id"]
_CORS_EXPOSED = [
    "request-id",
    "etag",
    "location",
    "retry-after",
    "ratelimit",
    "ratelimit-policy",
    "idempotent-replayed",
]


class ApiRouter:
    """The ``/v1`` routes, matched without Starlette's router.

    Starlette's router, its exception middleware and its per-route wrappers cost
    about a fifth of the CPU of a small request (py-spy, wrk at 64 connections),
    and the ``/v1`` endpoints need none of it: each handles its own errors
    (``routes.endpoint``). A request this router cannot place (unknown path, or a
    method the path does not allow) goes on to Starlette, which has the same
    routes and answers the 404 or the 405 with its ``Allow`` header.
    """

    def __init__(self, endpoints: dict[str, dict[str, Endpoint]]) -> None:
        self._routes: list[tuple[re.Pattern[str], dict[str, Endpoint]]] = []
        for path, handlers in endpoints.items():
            pattern = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path)
            self._routes.append((re.compile(f"^{pattern}$"), handlers))

    def match(self, method: str, path: str) -> tuple[Endpoint, dict[str, str]] | None:
        if not path.startswith("/v1/"):
            return None
        for pattern, handlers in self._routes:
            found = pattern.match(path)
            if found is not None:
                handler = handlers.get("GET" if method == "HEAD" else method)
                return None if handler is None else (handler, found.groupdict())
        return None


class _Dispatch:
    """``/v1`` requests straight to their endpoint (see ApiRouter); the rest to
    Starlette."""

    def __init__(self, app: ASGIApp, router: ApiRouter) -> None:
        self.app = app
        self.router = router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        matched = self.router.match(scope["method"], scope["path"])
        if matched is None:
            await self.app(scope, receive, send)
            return
        handler, scope["path_params"] = matched
        response = await handler(Request(scope, receive))
        await response(scope, receive, send)


class ApiMiddleware:
    """Every response gets a ``Request-Id`` (the client's, if it sent a sane one)
    and the headers every API response should carry, CORS preflights included:
    CORS (when configured) runs inside this, around the dispatch."""

    def __init__(self, app: ASGIApp, router: ApiRouter, cors_origins: list[str]) -> None:
        self.app = app
        self.inner: ASGIApp = _Dispatch(app, router)
        if cors_origins:  # off by default: only the origins an operator names
            self.inner = CORSMiddleware(
                self.inner,
                allow_origins=cors_origins,
                allow_methods=["GET", "POST", "PATCH", "DELETE"],
                allow_headers=_CORS_HEADERS,
                expose_headers=_CORS_EXPOSED,
                max_age=600,
            )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = None
        for name, value in scope["headers"]:
            if name == b"request-id":
                text = value.decode("latin-1")
                request_id = text if _CLIENT_REQUEST_ID.match(text) else None
        request_id = request_id or new_id("req")
        scope.setdefault("state", {})["request_id"] = request_id
        https = scope.get("scheme") == "https"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"request-id", request_id.encode()))
                names = {h[0] for h in headers}
                for name, value in _SECURITY_HEADERS:
                    if name not in names:
                        headers.append((name, value))
                if https:
                    headers.append((b"strict-transport-security", _HSTS))
                message["headers"] = headers
            await send(message)

        if not _utf8(scope.get("query_string", b"")):
            # Starlette decodes it as UTF-8 wherever it builds request.url (404s, 405s)
            # and raises otherwise. uvicorn refuses such a request itself; the app
            # does not count on every server doing so.
            bad = MalformedRequest("The query string is not valid UTF-8.")
            await problem_response(bad, Request(scope))(scope, receive, send_with_headers)
            return
        await self.inner(scope, receive, send_with_headers)


def _utf8(data: bytes) -> bool:
    if data.isascii():  # nearly always: a percent-encoded query string
        return True
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


GC_GENERATION0_THRESHOLD = 20_000


def _tune_garbage_collector() -> None:
    """Collect cyclic garbage less often: a request allocates hundreds of objects,
    almost none of them in cycles, and with the default threshold (700) the
    collector ran several times per batch (about a tenth of the CPU under load,
    measured with py-spy). Objects alive at start-up (modules, the app) are moved
    out of the collector's view for good, so full collections stay short."""
    gc.collect()
    gc.freeze()
    _, generation1, generation2 = gc.get_threshold()
    gc.set_threshold(GC_GENERATION0_THRESHOLD, generation1, generation2)


def _endpoints_by_path(settings: Settings) -> dict[str, dict[str, Endpoint]]:
    by_path: dict[str, dict[str, Endpoint]] = {}
    for spec in ROUTES:
        by_path.setdefault(spec.path, {})[spec.method] = endpoint(spec, settings)
    return by_path


def _api_routes(endpoints: dict[str, dict[str, Endpoint]]) -> list[Route]:
    """One Starlette route per path, dispatching on the method, so that a 405
    names every method the path allows (RFC 9110 §15.5.6)."""
    routes = []
    for path, handlers in endpoints.items():

        async def dispatch(request: Request, handlers: dict[str, Endpoint] = handlers) -> Response:
            method = "GET" if request.method == "HEAD" else request.method
            return await handlers[method](request)

        routes.append(Route(path, dispatch, methods=list(handlers)))
    return routes


def create_app(
    settings: Settings | None = None, *, clock: Callable[[], int] = wall_clock_us
) -> Starlette:
    settings = settings or get_settings()
    store = make_store(settings)
    writer = Writer(
        store,
        queue_commands_max=settings.writer_queue_commands_max,
        batch_commands_max=settings.writer_batch_commands_max,
        retry_after_seconds=settings.writer_retry_after_seconds,
        clock=clock,
    )
    openapi_json = encode(build_openapi())
    keyring = Keyring(
        store,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        access_ttl_seconds=settings.access_token_ttl_seconds,
        reload_seconds=settings.signing_key_reload_seconds,
        clock=clock,
    )
    appender = Appender(
        store,
        flush_seconds=settings.audit_flush_seconds,
        queue_rows_max=settings.audit_queue_rows_max,
        batch_rows_max=settings.audit_batch_rows_max,
    )
    limiter = Limiter(settings.redis_url, timeout_seconds=settings.redis_timeout_seconds)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        _tune_garbage_collector()
        await store.open()
        try:
            await keyring.load()
        except TallyError as exc:  # the database is away: the first token will load them
            log.warning("signing keys not loaded at start: %s", exc.detail)
        writer.start()
        appender.start()
        sealer = asyncio.create_task(
            run_sealer(
                store,
                interval_seconds=settings.audit_seal_interval_seconds,
                rows_max=settings.audit_seal_rows_max,
            ),
            name="tally-audit-sealer",
        )
        expiry = asyncio.create_task(
            run_expiry(
                store,
                writer,
                clock,
                interval_seconds=settings.expiry_interval_seconds,
                batch_max=settings.expiry_batch_max,
            ),
            name="tally-expiry",
        )
        retention = asyncio.create_task(
            run_retention(
                store,
                clock,
                interval_seconds=settings.idempotency_purge_interval_seconds,
                batch_max=settings.idempotency_purge_batch_max,
            ),
            name="tally-retention",
        )
        try:
            yield
        finally:
            for task in (expiry, retention, sealer):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await writer.stop()
            await appender.stop()
            await limiter.close()
            await store.close()

    async def healthz(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    async def readyz(request: Request) -> Response:
        try:
            await store.ping()
        except TallyError as error:
            return problem_response(error, request)
        return Response(b'{"status":"ready"}', media_type="application/json")

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    async def openapi(request: Request) -> Response:
        return Response(openapi_json, media_type="application/json")

    async def docs(request: Request) -> Response:
        return HTMLResponse(_DOCS_HTML, headers={"Content-Security-Policy": _DOCS_CSP})

    # Built once: Starlette's routes (404/405 fallback) and the fast /v1 router share them.
    endpoints = _endpoints_by_path(settings)
    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/docs", docs, methods=["GET"]),
        *_api_routes(endpoints),
    ]

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 405:
            error: TallyError = MethodNotAllowed(f"{request.method} is not allowed here.")
            error.headers = dict(exc.headers or {})
        elif exc.status_code == 404:
            error = NotFound(f"No route {request.url.path}.")
        else:
            error = TallyError(exc.detail)
            error.status = exc.status_code
        return problem_response(error, request)

    async def unexpected(request: Request, exc: Exception) -> Response:
        # A bug. The client learns only that, and the request id to report it by.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(TallyError("An unexpected error occurred."), request)

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error, Exception: unexpected},
        middleware=[],
    )
    # Starlette would answer /v1/accounts/ with a 307 to a URL built from the
    # client's Host header (an open redirect, found by the security tests).
    app.router.redirect_slashes = False
    app.state.settings = settings
    app.state.store = store
    app.state.writer = writer
    app.state.ledger = Ledger(
        store,
        writer,
        clock=clock,
        in_use_retry_after_seconds=settings.idempotency_in_use_retry_after_seconds,
    )
    app.state.authenticator = Authenticator(store, keyring)
    app.state.identity = Identity(
        store,
        PasswordHasher(
            memory_kib=settings.password_hash_memory_kib,
            time_cost=settings.password_hash_time_cost,
            concurrency_max=settings.password_hash_concurrency_max,
        ),
        keyring,
        clock=clock,
        session_ttl_seconds=settings.session_ttl_seconds,
        invitation_ttl_seconds=settings.invitation_ttl_seconds,
    )
    app.state.limits = Limits(limiter, settings)
    app.state.audit_appender = appender
    app.state.clock = clock
    app.add_middleware(
        ApiMiddleware, router=ApiRouter(endpoints), cors_origins=settings.cors_origins
    )
    return app


def app_factory() -> Any:
    """For ``uvicorn --factory tally.api.app:app_factory``."""
    return create_app()

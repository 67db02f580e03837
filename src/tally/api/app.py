"""The ASGI application: the REST routes and GraphQL over the process's services.

``create_app`` is the only constructor. It builds the ``Services`` (or takes
them), the ``/v1`` endpoints from the route table, and the operation routes;
its lifespan starts the services and stops them (queued writes finish first).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from tally.api import tracing
from tally.api.endpoint import UNEXPECTED, Endpoint, endpoint
from tally.api.graphql.graphiql import graphiql_routes
from tally.api.graphql.request import PATH as GRAPHQL_PATH
from tally.api.graphql.route import GraphQLEndpoints
from tally.api.middleware import ApiMiddleware
from tally.api.operations import operation_routes
from tally.api.problems import problem_response
from tally.api.router import ApiRouter
from tally.api.routes import ROUTES
from tally.api.streams import EventSocket, open_stream
from tally.config import Settings, get_settings
from tally.console import console_routes
from tally.errors import MethodNotAllowed, NotFound, TallyError
from tally.services import Services
from tally.support.clock import Clock, wall_clock_us

log = logging.getLogger(__name__)


class _App(Starlette):
    """Starlette, with the middleware added to it (ApiMiddleware; tracing, when on)
    outside its error middleware rather than inside: ``/v1`` requests, which
    ApiMiddleware dispatches itself and whose endpoints render every error
    (``endpoint``), skip a frame and a ``send`` wrapper they never needed: per
    open event stream that is memory, held for the stream's life, ten thousand
    times over (docs/events.md). (Per request the CPU it saves was within the
    noise of ``make bench-path``.) Every other
    route still goes through Starlette's error and exception middleware."""

    def build_middleware_stack(self) -> ASGIApp:
        added, self.user_middleware = self.user_middleware, []
        try:
            app = super().build_middleware_stack()
        finally:
            self.user_middleware = added
        for cls, args, kwargs in reversed(added):
            app = cls(app, *args, **kwargs)
        return app


# Another entry point that serves beside the app, on the same services (the gRPC
# server): entered after the services start, left before they stop.
Companion = Callable[[Services], contextlib.AbstractAsyncContextManager[None]]


def create_app(
    settings: Settings | None = None,
    *,
    clock: Clock = wall_clock_us,
    companions: Sequence[Companion] = (),
) -> Starlette:
    services = Services(settings or get_settings(), clock=clock)
    stop_tracing: list[tracing.Shutdown] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await services.start()
        try:
            async with contextlib.AsyncExitStack() as stack:
                for companion in companions:
                    await stack.enter_async_context(companion(services))
                yield
        finally:
            await services.stop()
            for stop in stop_tracing:
                stop()

    # Built once: Starlette's routes (404/405 fallback) and the fast /v1 router share them.
    endpoints = _endpoints_by_path(services)
    graphql = GraphQLEndpoints(services)
    app = _App(
        routes=[
            *operation_routes(services),
            *_api_routes(endpoints),
            graphql.route,
            *graphiql_routes(),
            *console_routes(services, open_stream),
        ],
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error, Exception: _unexpected},
        middleware=[],
    )
    # Starlette would answer /v1/accounts/ with a 307 to a URL built from the
    # client's Host header (an open redirect, found by the security tests).
    app.router.redirect_slashes = False
    app.state.services = services
    app.add_middleware(
        ApiMiddleware,
        router=ApiRouter(endpoints),
        cors_origins=services.settings.cors_origins,
        access_log=services.settings.access_log,
        trusted_proxies=services.settings.trusted_proxies,
        websockets={"/v1/events/ws": EventSocket(services), GRAPHQL_PATH: graphql.socket},
    )
    # Outermost, so a request's span covers everything Tally does with it.
    stop_tracing.append(tracing.instrument(app, services.settings))
    return app


class Served:
    """The app as the servers run it (``tally.cli.serving``): Starlette's
    ``__call__``, except that it hands back the middleware's coroutine rather
    than awaiting it in a frame of its own. Every request skips that frame, and
    an open event stream does not keep one alive for its whole life: with
    ApiMiddleware serving /v1 from its own frame, 13.4 to 13.1 KiB per stream
    (``make bench-c10k``). Not a coroutine function, so the servers are told it
    is ASGI 3 (uvicorn's ``interface="asgi3"``; granian's ASGI interface is)."""

    def __init__(self, app: Starlette) -> None:
        self.app = app
        self.stack = app.build_middleware_stack()

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        scope["app"] = self.app
        return self.stack(scope, receive, send)


def app_factory(companions: Sequence[Companion] = ()) -> Served:
    """For ``uvicorn --factory tally.api.app:app_factory`` (with ``--interface asgi3``)."""
    return Served(create_app(companions=companions))


def _endpoints_by_path(services: Services) -> dict[str, dict[str, Endpoint]]:
    by_path: dict[str, dict[str, Endpoint]] = {}
    for spec in ROUTES:
        by_path.setdefault(spec.path, {})[spec.method] = endpoint(spec, services)
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


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    error: TallyError
    if exc.status_code == 405:
        headers = dict(exc.headers or {})
        allowed = headers.get("Allow", headers.get("allow", ""))
        error = MethodNotAllowed(
            f"{request.method} is not allowed on {request.url.path}; it takes {allowed}.",
            metadata=headers,
        )
    elif exc.status_code == 404:
        error = NotFound(f"No route {request.url.path}; /docs lists every route.")
    else:  # Starlette raises no other status for the routes Tally has
        error = TallyError(exc.detail)
    return problem_response(error, request)


async def _unexpected(request: Request, exc: Exception) -> Response:
    # A bug. The client learns only that, and the request id to report it by.
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem_response(TallyError(UNEXPECTED), request)

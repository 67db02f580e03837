"""``/graphql``'s route and WebSocket endpoint, without GraphQL itself.

Both load the GraphQL machinery (Strawberry, graphql-core, the schema:
``tally.api.graphql.http`` and ``.ws``) on their first use, not with the
server: a process that never serves GraphQL (one holding ten thousand event
streams, say: docs/events.md) does not carry about 8 MiB of it. The first
request or connection pays the schema's build, once per process, and HTTP and
WebSocket share it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from tally.api.graphql.request import PATH

if TYPE_CHECKING:
    from tally.services import Services


class GraphQLEndpoints:
    """``/graphql`` over HTTP (``route``) and over WebSocket (``socket``)."""

    def __init__(self, services: Services) -> None:
        self._services = services
        self._http: Callable[[Request], Awaitable[Response]] | None = None
        self._socket: ASGIApp | None = None
        self.route = Route(PATH, self._serve, methods=["GET", "POST"])

    def _load(self) -> None:
        from tally.api.graphql.http import graphql_handler, machinery
        from tally.api.graphql.ws import GraphQLSocket

        schema, limits = machinery(self._services)
        self._http = graphql_handler(self._services, schema, limits)
        self._socket = GraphQLSocket(self._services, schema, limits)

    async def _serve(self, request: Request) -> Response:
        if self._http is None:
            self._load()
        assert self._http is not None
        return await self._http(request)

    async def socket(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._socket is None:
            self._load()
        assert self._socket is not None
        await self._socket(scope, receive, send)

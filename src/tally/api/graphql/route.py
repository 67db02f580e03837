"""``/graphql``'s route and request body, without GraphQL itself.

The route loads the GraphQL machinery (Strawberry, graphql-core, the schema:
``tally.api.graphql.http``) on its first request, not with the server: a
process that never serves GraphQL (one holding ten thousand event streams, say:
docs/events.md) does not carry about 8 MiB of it. The first request pays the
schema's build, once per process.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tally.api.graphql.request import PATH

if TYPE_CHECKING:
    from tally.services import Services


def graphql_route(services: Services) -> Route:
    handler: Callable[[Request], Awaitable[Response]] | None = None

    async def serve(request: Request) -> Response:
        nonlocal handler
        if handler is None:
            from tally.api.graphql.http import graphql_handler

            handler = graphql_handler(services)
        return await handler(request)

    return Route(PATH, serve, methods=["GET", "POST"])

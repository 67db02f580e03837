"""Routing the ``/v1`` requests straight to their endpoint."""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from tally.api.endpoint import Endpoint


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


class Dispatch:
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

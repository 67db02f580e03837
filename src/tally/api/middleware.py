"""What every response carries: a request id and the security headers."""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable

from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tally.api import access_log
from tally.api.endpoint import Endpoint
from tally.api.problems import problem_response
from tally.api.proxies import TrustedProxies, parse_networks
from tally.api.router import ApiRouter, Dispatch
from tally.errors import MalformedRequest, TooEarly
from tally.support.ids import new_id
from tally.support.logs import REQUEST_ID

_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
# What may run from TLS early data, which can be replayed (RFC 8470, RFC 9110 §9.2.1).
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# scope["state"] key: the request arrived (at least in part) in TLS early data.
EARLY_DATA = "early_data"

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


class ApiMiddleware:
    """Every response gets a ``Request-Id`` (the client's, if it sent a sane one)
    and the headers every API response should carry, CORS preflights included:
    CORS (when configured) runs inside this, around the dispatch."""

    def __init__(
        self,
        app: ASGIApp,
        router: ApiRouter,
        cors_origins: list[str],
        access_log: bool = False,
        trusted_proxies: list[str] | None = None,
        websockets: dict[str, ASGIApp] | None = None,
    ) -> None:
        self.app = app
        # WebSocket routes by path (/v1/events/ws): the rest is Starlette's.
        self.websockets = websockets or {}
        self.access_log = access_log
        self.proxies = TrustedProxies(parse_networks(trusted_proxies or ()))
        self.router = router
        self.cors = bool(cors_origins)
        self.inner: ASGIApp = Dispatch(app, router)
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
            socket = None
            if scope["type"] == "websocket":
                if self.proxies:  # the real client, for its rate limit and audit rows
                    self.proxies.rewrite(scope)
                socket = self.websockets.get(scope["path"])
            await (socket or self.app)(scope, receive, send)
            return
        if self.proxies:
            self.proxies.rewrite(scope)
        request_id = None
        early = False
        for name, value in scope["headers"]:
            if name == b"request-id":
                text = value.decode("latin-1")
                request_id = text if _CLIENT_REQUEST_ID.match(text) else None
            elif name == b"early-data":
                early = value == b"1"
        request_id = request_id or new_id("req")
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        if early:
            state[EARLY_DATA] = True
        # Every line logged while this request is served names it (support/logs.py).
        token = REQUEST_ID.set(request_id)
        try:
            if self.access_log:
                await self._logged(scope, receive, send, request_id)
                return
            reply = _reply(send, request_id, scope.get("scheme") == "https")
            matched = None if early else self._direct(scope)
            if matched is None:
                await self._answer(scope, receive, reply)
                return
            # A /v1 route, served from this frame: no further coroutine stays alive
            # under an event stream for its whole life (docs/events.md, C10k).
            handler, scope["path_params"] = matched
            response = await handler(Request(scope, receive))
            await response(scope, receive, reply)
        finally:
            REQUEST_ID.reset(token)

    def _direct(self, scope: Scope) -> tuple[Endpoint, dict[str, str]] | None:
        """The /v1 endpoint to serve here, or None: the request goes the long way
        (CORS configured, a query string that is not UTF-8, not a /v1 route)."""
        if self.cors or not _utf8(scope.get("query_string", b"")):
            return None
        return self.router.match(scope["method"], scope["path"])

    async def _logged(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        """The request, timed, and its access line written when it ends."""
        started = time.perf_counter()
        status = 500  # unless a response starts: an exception escaped

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            reply = _reply(send_noting_status, request_id, scope.get("scheme") == "https")
            await self._answer(scope, receive, reply)
        finally:
            client = scope.get("client")
            state = scope["state"]
            # The /v1 endpoints note their route; Starlette's routes leave theirs here.
            matched = getattr(scope.get("route"), "path", None)
            if matched is not None:
                state.setdefault(access_log.ROUTE, matched)
            access_log.write(
                state,
                scope["method"],
                scope["path"],
                status,
                time.perf_counter() - started,
                client[0] if client else None,
            )

    def _answer(self, scope: Scope, receive: Receive, reply: Send) -> Awaitable[None]:
        """The request through CORS (when configured), the /v1 router or Starlette.
        Not a coroutine itself: it hands back the one to await, so that no frame of
        its own stays alive under a long response."""
        if scope["state"].get(EARLY_DATA) and scope["method"] not in _SAFE_METHODS:
            # Set by the server that terminated TLS (tally.cli.hypercorn_server) or
            # a proxy in front (nginx's $ssl_early_data): the request came in 0-RTT,
            # which an attacker can replay. Nothing runs (RFC 8470 §5.2).
            refused = TooEarly("Sent in TLS early data: send it again after the handshake.")
            return problem_response(refused, Request(scope))(scope, receive, reply)
        if not _utf8(scope.get("query_string", b"")):
            # Starlette decodes it as UTF-8 wherever it builds request.url (404s, 405s)
            # and raises otherwise. uvicorn refuses such a request itself; the app
            # does not count on every server doing so.
            bad = MalformedRequest("The query string is not valid UTF-8.")
            return problem_response(bad, Request(scope))(scope, receive, reply)
        return self.inner(scope, receive, reply)


def _reply(send: Send, request_id: str, https: bool) -> Send:
    """``send``, adding the request id and the security headers to the response's start."""

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

    return send_with_headers


def _utf8(data: bytes) -> bool:
    if data.isascii():  # nearly always: a percent-encoded query string
        return True
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True

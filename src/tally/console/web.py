"""The console's framework: what runs around every page and form.

A page is a ``ConsoleRoute``: its method, path, the scope it needs and the
audit action of its form (the REST operation id of the same use case, so the
audit log reads alike whichever entry point a person used). ``handle`` wraps
its handler in the same steps as the REST endpoints (``api/endpoint.py``), in
the console's terms:

1. who is calling: the session cookie's access token, through the same
   ``Authenticator`` (refreshed with the cookie's refresh token once it has
   expired); none → a redirect to the login page;
2. the same rate-limit buckets (per user; per address for a bad cookie);
3. for a form (POST): the ``Origin`` header must be this origin, and the form's
   synchronizer token must match the session's (``session.csrf_token``);
4. the route's scope, asked of ``identity.roles.allows`` as REST asks it;
5. the handler, then any error rendered as a readable page (never a trace);
6. a form that changed nothing (refused) is recorded by the audit appender, as
   REST records it; a change records its own row in its own transaction.
"""

from __future__ import annotations

import hmac
import logging
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from tally.audit import AuditContext
from tally.console import session as sessions
from tally.console.errors import message_of, status_of
from tally.console.rendering import render
from tally.errors import (
    ClientClosedRequest,
    Forbidden,
    MalformedRequest,
    NotFound,
    PayloadTooLarge,
    TallyError,
    Unauthenticated,
    UnsupportedMediaType,
)
from tally.identity import Principal
from tally.identity.roles import ADMIN, allows
from tally.services import Services
from tally.support.ids import is_valid_id

log = logging.getLogger(__name__)

PREFIX = "/console"
LOGIN_PATH = f"{PREFIX}/login"
HOME_PATH = f"{PREFIX}/accounts"
# Only this origin's stylesheet and forms: no script (but LIVE_CSP's page), no
# inline style, no frame.
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
# The events page adds one script of this origin (its live feed, a file: nothing
# inline) and its connection back to this origin's event stream.
LIVE_CSP = CSP + "; script-src 'self'; connect-src 'self'"
# The API's no-referrer would make Chromium send "Origin: null" with the console's
# own forms (the Fetch standard serializes the origin as null under no-referrer),
# and the Origin check below could then not tell our forms from anyone's.
# same-origin still sends nothing to another site.
REFERRER_POLICY = "same-origin"
FORM_BYTES_MAX = 64 * 1024  # a form of people's typing; the largest is metadata
FORM_FIELDS_MAX = 200
FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"

Handler = Callable[["Visit"], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]
# A tenant's Server-Sent Events stream as a request asks for it: given by the HTTP
# layer above (tally.api.streams.open_stream), which owns the event streams. The
# console decides who may watch (its session cookie, the events:read scope); the
# stream itself is the same one /v1/events/stream serves.
StreamOpener = Callable[[Request, Services, str], Awaitable[Response]]


class SignInNeeded(Exception):
    """No session, or one that has ended: the person logs in again."""


@dataclass(frozen=True, slots=True)
class ConsoleRoute:
    method: str
    path: str
    handler: Handler
    scope: str = ""  # "" any signed-in person
    action: str = ""  # the audit action of a form (a REST operation id)
    auth: bool = True  # False: the login page and the stylesheet

    @property
    def mutating(self) -> bool:
        return self.method == "POST"


@dataclass(slots=True)
class Form:
    """A submitted form: its fields by name (the last value of a repeated one)."""

    fields: dict[str, str] = field(default_factory=dict)

    def text(self, name: str, default: str = "") -> str:
        return self.fields.get(name, default).strip()

    def raw(self, name: str) -> str:
        return self.fields.get(name, "")

    def checked(self, name: str) -> bool:
        return name in self.fields


@dataclass(slots=True)
class Visit:
    """What a handler gets: the request, the person, the services, the form."""

    request: Request
    services: Services
    route: ConsoleRoute
    open_stream: StreamOpener | None = None
    audit: AuditContext | None = None
    principal_or_none: Principal | None = None
    session: sessions.Session | None = None
    refreshed: bool = False  # the session was refreshed: its cookie is set anew
    form: Form = field(default_factory=Form)
    # The code the audit row records for a form that was refused and shown again
    # (its page is not an error page, but the row says why), or replayed.
    audit_code: str | None = None

    @property
    def principal(self) -> Principal:
        assert self.principal_or_none is not None, "an authenticated page"
        return self.principal_or_none

    @property
    def tenant_id(self) -> str:
        return self.principal.tenant_id

    @property
    def client_address(self) -> str | None:
        return self.request.client.host if self.request.client is not None else None

    @property
    def request_id(self) -> str | None:
        state = self.request.scope.get("state") or {}
        value = state.get("request_id")
        return value if isinstance(value, str) else None

    @property
    def csrf(self) -> str:
        return sessions.csrf_token(self.session) if self.session is not None else ""

    def path_id(self) -> str:
        value: str = self.request.path_params["id"]
        if not is_valid_id(value):
            # No object can have such an id (REST answers the same): not there.
            raise NotFound(f"No object with id {value!r}: no id has that form.")
        return value

    def audit_of(self) -> AuditContext:
        assert self.audit is not None, "forms are audited"
        return self.audit

    def may(self, scope: str) -> bool:
        return self.principal_or_none is not None and allows(self.principal.scopes, scope)

    def page(self, template: str, status: int = 200, csp: str = CSP, **context: Any) -> Response:
        p = self.principal_or_none
        html = render(
            template,
            csrf=self.csrf,
            principal=p,
            is_admin=p is not None and ADMIN in p.scopes,
            may=self.may,
            path=self.request.url.path,
            **context,
        )
        return HTMLResponse(html, status_code=status, headers={"content-security-policy": csp})

    def see_other(self, path: str) -> Response:
        """Post/redirect/get: a reload of the next page sends nothing again."""
        return RedirectResponse(path, status_code=303)

    def query(self, name: str, chars_max: int = 128) -> str:
        raw = self.request.query_params.get(name, "").strip()
        if len(raw) > chars_max or "\x00" in raw:
            raise MalformedRequest(f"The {name} filter must be at most {chars_max} characters.")
        return raw


def path_of(template: str, **ids: str) -> str:
    """A console path with each ``{name}`` filled in, percent-encoded."""
    for name, value in ids.items():
        template = template.replace("{" + name + "}", urllib.parse.quote(value, safe=""))
    return template


def handle(
    route: ConsoleRoute, services: Services, open_stream: StreamOpener | None = None
) -> Endpoint:
    """The Starlette endpoint of a console route."""

    async def run(request: Request) -> Response:
        visit = Visit(request, services, route, open_stream)
        if route.mutating:
            visit.audit = AuditContext(route.action, visit.request_id, visit.client_address)
        code: str | None = None
        try:
            response = await _admitted(visit)
        except SignInNeeded:
            code = "unauthenticated"
            response = _to_login(request)
        except TallyError as error:
            code = error.code
            response = _error_page(visit, error)
        except Exception:
            # A bug. The person learns only that, and the request id to report it by.
            log.exception("unhandled error on %s %s", request.method, request.url.path)
            code = "internal_error"
            response = _error_page(visit, TallyError("An unexpected error occurred."), 500)
        response.headers["referrer-policy"] = REFERRER_POLICY
        if visit.refreshed and visit.session is not None:
            sessions.set_cookie(response, visit.session, request, services.settings)
        code = code or visit.audit_code
        ctx = visit.audit
        if ctx is not None and not ctx.recorded:
            status = 401 if code == "unauthenticated" else response.status_code
            await services.audit_appender.append(ctx.row(status, code, services.clock()))
        return response

    run.__name__ = route.action or route.path
    return run


async def _admitted(visit: Visit) -> Response:
    route = visit.route
    if route.auth:
        await _authenticate(visit)
    else:  # the login page: the address's bucket, as REST's open routes take it
        await visit.services.limits.for_address(visit.client_address)
    if route.mutating:
        check_origin(visit.request)
        visit.form = await read_form(visit.request)
        if route.auth and not _same_token(visit.form.raw("csrf"), visit.csrf):
            raise Forbidden(
                "This form has expired (you logged in again, or it came from another "
                "page): reload the page and send it again."
            )
    if route.auth and not visit.may(route.scope):
        raise Forbidden(f"Your role does not allow this page (it needs {route.scope}).")
    return await route.handler(visit)


async def _authenticate(visit: Visit) -> None:
    services, request = visit.services, visit.request
    session = sessions.from_cookie(request)
    if session is None:
        raise SignInNeeded()
    try:
        principal = await services.authenticator.authenticate(f"Bearer {session.access_token}")
    except Unauthenticated:
        # Expired (or ended): the refresh token says which. A session that has ended
        # refuses it, and so does a refresh token already spent (the whole session
        # then ends: identity.refresh).
        await services.limits.for_address(visit.client_address)
        ctx = AuditContext("refreshSession", visit.request_id, visit.client_address)
        try:
            pair = await services.identity.refresh(session.refresh_token, ctx)
        except TallyError:
            raise SignInNeeded() from None
        session = sessions.Session(pair.access_token, pair.refresh_token)
        visit.refreshed = True
        principal = await services.authenticator.authenticate(f"Bearer {session.access_token}")
    if principal.actor_type != "user" or principal.session_id is None:
        # The console is for people: an API key slipped into the cookie is not a
        # session (its rights are its own, but the console does not take them).
        raise SignInNeeded()
    visit.session, visit.principal_or_none = session, principal
    if visit.audit is not None:
        ctx = visit.audit
        ctx.tenant_id = principal.tenant_id
        ctx.actor_type, ctx.actor_id = principal.actor_type, principal.actor_id
    await services.limits.for_credential(principal.actor_type, principal.actor_id)


def check_origin(request: Request) -> None:
    """A form is taken only from a page of this origin (OWASP's "verifying origin
    with standard headers"), on top of the synchronizer token and SameSite."""
    origin = request.headers.get("origin")
    own = f"{request.url.scheme}://{request.url.netloc}"
    if origin is None or not hmac.compare_digest(origin.encode(), own.encode()):
        raise Forbidden(
            "This form was not sent from a page of this console: open the console and "
            "send it from there."
        )


def _same_token(given: str, expected: str) -> bool:
    return bool(given) and bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


async def read_form(request: Request) -> Form:
    """A urlencoded form, bounded in bytes and fields, strictly UTF-8."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != FORM_MEDIA_TYPE:
        raise UnsupportedMediaType(f"A console form is sent as {FORM_MEDIA_TYPE}.")
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > FORM_BYTES_MAX:
                raise PayloadTooLarge(f"A form may hold at most {FORM_BYTES_MAX} bytes.")
    except ClientDisconnect:
        raise ClientClosedRequest("The client closed the connection mid-form.") from None
    try:
        pairs = urllib.parse.parse_qsl(
            body.decode("ascii"),
            keep_blank_values=True,
            max_num_fields=FORM_FIELDS_MAX,
            encoding="utf-8",
            errors="strict",
        )
    except (UnicodeDecodeError, ValueError):
        raise MalformedRequest("The form is not valid UTF-8, or has too many fields.") from None
    if any("\x00" in name or "\x00" in value for name, value in pairs):
        raise MalformedRequest("A form field must not contain NUL characters.")
    return Form(dict(pairs))


def _to_login(request: Request) -> Response:
    target = request.url.path if request.method == "GET" else HOME_PATH
    query = urllib.parse.urlencode({"next": target})
    response = RedirectResponse(f"{LOGIN_PATH}?{query}", status_code=303)
    sessions.clear_cookie(response, request)
    return response


def _error_page(visit: Visit, error: TallyError, status: int | None = None) -> Response:
    status = status or status_of(error.code)
    return visit.page(
        "error.html",
        status,
        title=message_of(error.code),
        detail=error.detail or "",
        fields=getattr(error, "errors", []) or [],
        request_id=visit.request_id,
    )

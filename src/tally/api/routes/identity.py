"""The identity routes of api.md §6: sign-up, login, sessions and the caller.

Identity writes do not take an Idempotency-Key: their responses carry secrets
(tokens, a new key), which are never stored, and each is idempotent in its own
way (an email can be signed up or invited once; revoking twice is harmless).
"""

from __future__ import annotations

from starlette.responses import Response

from tally.api.endpoint import Call, Param, RouteTable
from tally.api.parsing import query_text
from tally.api.responses import json_response
from tally.api.schemas.common import NO_NUL
from tally.api.schemas.identity import (
    InvitationAccept,
    LoginCreate,
    MemberOut,
    MeOut,
    PasswordChange,
    RefreshCreate,
    SignupCreate,
    SignupOut,
    TokenOut,
    member_out,
)
from tally.audit import AuditContext
from tally.identity.service import TokenPair

OPEN_WRITE_ERRORS = (400, 413, 415, 422, 503)
WRITE_ERRORS = (400, 401, 403, 413, 415, 422, 503)
READ_ERRORS = (401, 403, 422, 503)
CURSOR_CHARS_MAX = 256
# The identity lists' paging, as the document has always described it.
LIMIT = Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100})
CURSOR = Param(
    "cursor",
    "query",
    {"type": "string", "minLength": 1, "maxLength": CURSOR_CHARS_MAX, "pattern": NO_NUL},
    "Opaque: the next_cursor of the previous page. Any other value is a 422 naming cursor.",
)

routes = RouteTable(tag="Identity")


def cursor(call: Call) -> str | None:
    return query_text(call.request, "cursor", CURSOR_CHARS_MAX)


def audit_of(call: Call) -> AuditContext:
    assert call.audit is not None, "identity writes are mutating routes"
    return call.audit


def no_content(headers: dict[str, str] | None = None) -> Response:
    return Response(status_code=204, headers=headers)


def _tokens(pair: TokenPair, headers: dict[str, str] | None = None) -> Response:
    response = json_response(
        TokenOut(pair.access_token, pair.refresh_token, "Bearer", pair.expires_in)
    )
    response.headers.update(headers or {})
    return response


@routes.route(
    "POST", "/v1/signup", "signup", "Sign up: a new tenant and its owner",
    scope="", success={201: SignupOut}, request=SignupCreate,
    errors=(*OPEN_WRITE_ERRORS, 409), auth=False, idempotency_key=False,
)  # fmt: skip
async def signup(call: Call) -> Response:
    body: SignupCreate = await call.body(SignupCreate)
    headers = await call.services.limits.for_sign_up(call.client_address)
    tenant_id, user_id = await call.services.identity.signup(
        body.email, body.password, body.tenant_name, audit_of(call)
    )
    response = json_response(SignupOut(tenant_id, user_id), 201)
    response.headers.update(headers)
    return response


@routes.route(
    "POST", "/v1/auth/login", "login", "Log in with email and password",
    scope="", success={200: TokenOut}, request=LoginCreate,
    errors=(*OPEN_WRITE_ERRORS, 401), auth=False, idempotency_key=False,
)  # fmt: skip
async def login(call: Call) -> Response:
    body: LoginCreate = await call.body(LoginCreate)
    headers = await call.services.limits.for_login(body.email, call.client_address)
    pair = await call.services.identity.login(body.email, body.password, audit_of(call))
    return _tokens(pair, headers)


@routes.route(
    "POST", "/v1/auth/refresh", "refreshSession",
    "Trade a refresh token for a new pair (the old one is spent)",
    scope="", success={200: TokenOut}, request=RefreshCreate,
    errors=(*OPEN_WRITE_ERRORS, 401), auth=False, idempotency_key=False,
)  # fmt: skip
async def refresh(call: Call) -> Response:
    body: RefreshCreate = await call.body(RefreshCreate)
    return _tokens(await call.services.identity.refresh(body.refresh_token, audit_of(call)))


@routes.route(
    "POST", "/v1/auth/accept-invitation", "acceptInvitation",
    "Accept an invitation: choose a password, become an active member",
    scope="", success={200: MemberOut}, request=InvitationAccept,
    errors=(*OPEN_WRITE_ERRORS, 404), auth=False, idempotency_key=False,
)  # fmt: skip
async def accept_invitation(call: Call) -> Response:
    body: InvitationAccept = await call.body(InvitationAccept)
    headers = await call.services.limits.for_sign_up(call.client_address)
    user = await call.services.identity.accept_invitation(body.token, body.password, audit_of(call))
    response = json_response(member_out(user))
    response.headers.update(headers)
    return response


@routes.route(
    "POST", "/v1/auth/logout", "logout", "End this session (its refresh tokens too)",
    scope="", success={204: None}, errors=WRITE_ERRORS, idempotency_key=False,
)  # fmt: skip
async def logout(call: Call) -> Response:
    await call.services.identity.logout(call.principal, audit_of(call))
    return no_content()


@routes.route(
    "GET", "/v1/me", "getMe", "The caller: a user or an API key, its tenant and rights",
    scope="", success={200: MeOut}, errors=READ_ERRORS,
)  # fmt: skip
async def me(call: Call) -> Response:
    p = call.principal
    kind = "user" if p.actor_type == "user" else "api_key"
    scopes = sorted(p.scopes)
    return json_response(MeOut(kind, p.actor_id, p.tenant_id, p.role, scopes))  # type: ignore[arg-type]


@routes.route(
    "POST", "/v1/users/me/password", "changePassword",
    "Change your password; your other sessions end",
    scope="", success={204: None}, request=PasswordChange, errors=WRITE_ERRORS,
    idempotency_key=False,
)  # fmt: skip
async def change_password(call: Call) -> Response:
    body: PasswordChange = await call.body(PasswordChange)
    identity = call.services.identity
    # Checking the current password is a login attempt: a stolen access token must
    # not guess it any faster than the login form would.
    email = await identity.email_of(call.principal)
    headers = await call.services.limits.for_login(email, call.client_address)
    await identity.change_password(
        call.principal, body.current_password, body.new_password, audit_of(call)
    )
    return no_content(headers)

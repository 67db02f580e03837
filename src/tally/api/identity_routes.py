"""The identity routes of api.md §6: sign-up, login, sessions, members, API keys,
and the audit log. Described as ``RouteSpec``s like the ledger's, so they are
routed, authorized, limited, audited and published in OpenAPI the same way.

Identity writes do not take an Idempotency-Key: their responses carry secrets
(tokens, a new key), which are never stored, and each is idempotent in its own
way (an email can be signed up or invited once; revoking twice is harmless).
"""

from __future__ import annotations

from starlette.responses import Response

from tally import audit
from tally.api.parsing import query_text
from tally.api.routes import Call, Param, RouteSpec, client_address, json
from tally.errors import Forbidden
from tally.identity.roles import ADMIN
from tally.identity.schemas import (
    ApiKeyCreate,
    ApiKeyCreatedOut,
    ApiKeyList,
    AuditActorOut,
    AuditEventList,
    AuditEventOut,
    InvitationAccept,
    LoginCreate,
    MemberInvite,
    MemberInvitedOut,
    MemberList,
    MemberOut,
    MemberUpdate,
    MeOut,
    PasswordChange,
    RefreshCreate,
    SignupCreate,
    SignupOut,
    TokenOut,
    api_key_out,
    member_out,
)
from tally.identity.service import TokenPair
from tally.schemas import format_time
from tally.service import decode_cursor, encode_cursor

CURSOR_CHARS_MAX = 256


def _tokens(pair: TokenPair) -> Response:
    return json(TokenOut(pair.access_token, pair.refresh_token, "Bearer", pair.expires_in))


def _no_content() -> Response:
    return Response(status_code=204)


def _audit(call: Call) -> audit.AuditContext:
    assert call.audit is not None, "identity writes are mutating routes"
    return call.audit


# -- sign-up, login, sessions -----------------------------------------------------------


async def signup(call: Call) -> Response:
    body = await call.body(SignupCreate)
    headers = await call.request.app.state.limits.for_sign_up(client_address(call.request))
    tenant_id, user_id = await call.identity.signup(
        body.email, body.password, body.tenant_name, _audit(call)
    )
    response = json(SignupOut(tenant_id, user_id), 201)
    response.headers.update(headers)
    return response


async def login(call: Call) -> Response:
    body = await call.body(LoginCreate)
    limits = call.request.app.state.limits
    headers = await limits.for_login(body.email, client_address(call.request))
    response = _tokens(await call.identity.login(body.email, body.password, _audit(call)))
    response.headers.update(headers)
    return response


async def refresh(call: Call) -> Response:
    body = await call.body(RefreshCreate)
    return _tokens(await call.identity.refresh(body.refresh_token, _audit(call)))


async def accept_invitation(call: Call) -> Response:
    body = await call.body(InvitationAccept)
    headers = await call.request.app.state.limits.for_sign_up(client_address(call.request))
    user = await call.identity.accept_invitation(body.token, body.password, _audit(call))
    response = json(member_out(user))
    response.headers.update(headers)
    return response


async def logout(call: Call) -> Response:
    await call.identity.logout(call.principal, _audit(call))
    return _no_content()


async def me(call: Call) -> Response:
    p = call.principal
    kind = "user" if p.actor_type == "user" else "api_key"
    scopes = sorted(p.scopes)
    return json(MeOut(kind, p.actor_id, p.tenant_id, p.role, scopes))  # type: ignore[arg-type]


async def change_password(call: Call) -> Response:
    body = await call.body(PasswordChange)
    # Checking the current password is a login attempt: a stolen access token must
    # not guess it any faster than the login form would.
    email = await call.identity.email_of(call.principal)
    limits = call.request.app.state.limits
    headers = await limits.for_login(email, client_address(call.request))
    await call.identity.change_password(
        call.principal, body.current_password, body.new_password, _audit(call)
    )
    response = _no_content()
    response.headers.update(headers)
    return response


# -- members ------------------------------------------------------------------------


def _cursor(call: Call) -> str | None:
    return query_text(call.request, "cursor", CURSOR_CHARS_MAX)


async def list_members(call: Call) -> Response:
    users, next_cursor = await call.identity.members(call.principal, call.limit(), _cursor(call))
    return json(MemberList([member_out(u) for u in users], next_cursor is not None, next_cursor))


async def invite_member(call: Call) -> Response:
    body = await call.body(MemberInvite)
    # An invitation of a taken email answers 409: that tells whether the address
    # has an account, so it spends the login buckets, no faster an oracle than login.
    limits = call.request.app.state.limits
    await limits.for_login(body.email, client_address(call.request))
    invited = await call.identity.invite(call.principal, body.email, body.role, _audit(call))
    out = MemberInvitedOut(
        member_out(invited.user), invited.token, format_time(invited.expires_at_us)
    )
    return json(out, 201, (("location", f"/v1/members/{invited.user.id}"),))


async def update_member(call: Call) -> Response:
    user_id = call.path_id()
    body = await call.body(MemberUpdate)
    user = await call.identity.change_role(call.principal, user_id, body.role, _audit(call))
    return json(member_out(user))


async def disable_member(call: Call) -> Response:
    await call.identity.disable(call.principal, call.path_id(), _audit(call))
    return _no_content()


# -- API keys -----------------------------------------------------------------------


async def list_api_keys(call: Call) -> Response:
    keys, next_cursor = await call.identity.api_keys(call.principal, call.limit(), _cursor(call))
    return json(ApiKeyList([api_key_out(k) for k in keys], next_cursor is not None, next_cursor))


async def create_api_key(call: Call) -> Response:
    body = await call.body(ApiKeyCreate)
    created = await call.identity.create_api_key(
        call.principal, body.name, list(body.scopes), _audit(call)
    )
    out = ApiKeyCreatedOut(api_key_out(created.record), created.token)
    return json(out, 201, (("location", f"/v1/api-keys/{created.record.id}"),))


async def revoke_api_key(call: Call) -> Response:
    await call.identity.revoke_api_key(call.principal, call.path_id(), _audit(call))
    return _no_content()


# -- the audit log ------------------------------------------------------------------


async def list_audit_events(call: Call) -> Response:
    if ADMIN not in call.principal.scopes:
        raise Forbidden("The audit log is for admins.")
    cursor = _cursor(call)
    after = decode_cursor(cursor) if cursor else 0
    limit = call.limit()
    rows = await audit.list_events(call.identity.store, call.tenant_id, after, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    data = [
        AuditEventOut(
            "audit_event",
            r.id,
            format_time(r.occurred_at_us),
            AuditActorOut(r.actor_type, r.actor_id),  # type: ignore[arg-type]
            r.action,
            r.object_id,
            r.status_code,
            r.code,
            r.request_id,
            r.client_address,
            r.chain_seq,
            r.chain_hash,
        )
        for r in rows
    ]
    next_cursor = encode_cursor(rows[-1].id) if more else None
    return json(AuditEventList(data, more, next_cursor))


# -- the table ----------------------------------------------------------------------

_MEMBER_ID = Param("id", "path", {"type": "string", "maxLength": 64}, required=True)
_LIMIT = Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100})
_CURSOR = Param(
    "cursor",
    "query",
    {"type": "string", "minLength": 1, "maxLength": CURSOR_CHARS_MAX, "pattern": "^[^\u0000]*$"},
    "Opaque: the next_cursor of the previous page. Any other value is a 422 naming cursor.",
)
_OPEN_WRITE = (400, 413, 415, 422, 503)
_WRITE = (400, 401, 403, 413, 415, 422, 503)
_READ = (401, 403, 422, 503)

IDENTITY_ROUTES: tuple[RouteSpec, ...] = (
    RouteSpec(
        "POST", "/v1/signup", "signup", "Sign up: a new tenant and its owner",
        signup, "", {201: SignupOut}, SignupCreate, (*_OPEN_WRITE, 409),
        tag="Identity", auth=False, idempotency_key=False,
    ),
    RouteSpec(
        "POST", "/v1/auth/login", "login", "Log in with email and password",
        login, "", {200: TokenOut}, LoginCreate, (*_OPEN_WRITE, 401),
        tag="Identity", auth=False, idempotency_key=False,
    ),
    RouteSpec(
        "POST", "/v1/auth/refresh", "refreshSession",
        "Trade a refresh token for a new pair (the old one is spent)",
        refresh, "", {200: TokenOut}, RefreshCreate, (*_OPEN_WRITE, 401),
        tag="Identity", auth=False, idempotency_key=False,
    ),
    RouteSpec(
        "POST", "/v1/auth/accept-invitation", "acceptInvitation",
        "Accept an invitation: choose a password, become an active member",
        accept_invitation, "", {200: MemberOut}, InvitationAccept, (*_OPEN_WRITE, 404),
        tag="Identity", auth=False, idempotency_key=False,
    ),
    RouteSpec(
        "POST", "/v1/auth/logout", "logout", "End this session (its refresh tokens too)",
        logout, "", {204: None}, None, _WRITE, tag="Identity", idempotency_key=False,
    ),
    RouteSpec(
        "GET", "/v1/me", "getMe", "The caller: a user or an API key, its tenant and rights",
        me, "", {200: MeOut}, None, _READ, tag="Identity",
    ),
    RouteSpec(
        "POST", "/v1/users/me/password", "changePassword",
        "Change your password; your other sessions end",
        change_password, "", {204: None}, PasswordChange, _WRITE,
        tag="Identity", idempotency_key=False,
    ),
    RouteSpec(
        "GET", "/v1/members", "listMembers", "List the tenant's members",
        list_members, ADMIN, {200: MemberList}, None, _READ, (_LIMIT, _CURSOR), tag="Members",
    ),
    RouteSpec(
        "POST", "/v1/members", "inviteMember", "Invite a member (the token is shown once)",
        invite_member, ADMIN, {201: MemberInvitedOut}, MemberInvite, (*_WRITE, 409),
        tag="Members", idempotency_key=False,
    ),
    RouteSpec(
        "PATCH", "/v1/members/{id}", "updateMember", "Change a member's role",
        update_member, ADMIN, {200: MemberOut}, MemberUpdate, (*_WRITE, 404, 409),
        (_MEMBER_ID,), tag="Members", idempotency_key=False,
    ),
    RouteSpec(
        "DELETE", "/v1/members/{id}", "disableMember",
        "Disable a member: their sessions end at once",
        disable_member, ADMIN, {204: None}, None, (401, 403, 404, 409, 503),
        (_MEMBER_ID,), tag="Members", idempotency_key=False,
    ),
    RouteSpec(
        "GET", "/v1/api-keys", "listApiKeys", "List API keys (prefixes only, never secrets)",
        list_api_keys, ADMIN, {200: ApiKeyList}, None, _READ, (_LIMIT, _CURSOR), tag="API keys",
    ),
    RouteSpec(
        "POST", "/v1/api-keys", "createApiKey", "Create an API key (the secret is shown once)",
        create_api_key, ADMIN, {201: ApiKeyCreatedOut}, ApiKeyCreate, _WRITE,
        tag="API keys", idempotency_key=False,
    ),
    RouteSpec(
        "DELETE", "/v1/api-keys/{id}", "revokeApiKey", "Revoke an API key, at once",
        revoke_api_key, ADMIN, {204: None}, None, (401, 403, 404, 503),
        (_MEMBER_ID,), tag="API keys", idempotency_key=False,
    ),
    RouteSpec(
        "GET", "/v1/audit-events", "listAuditEvents", "The tenant's audit log, oldest first",
        list_audit_events, ADMIN, {200: AuditEventList}, None, _READ, (_LIMIT, _CURSOR),
        tag="Audit",
    ),
)  # fmt: skip

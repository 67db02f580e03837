"""The member routes of api.md §6: invite, list, change a role, disable."""

from __future__ import annotations

from starlette.responses import Response

from tally.api.answers import list_response
from tally.api.endpoint import Call, RouteTable
from tally.api.responses import json_response
from tally.api.routes.identity import (
    CURSOR,
    LIMIT,
    READ_ERRORS,
    WRITE_ERRORS,
    audit_of,
    cursor,
    no_content,
)
from tally.api.routes.params import ID
from tally.api.schemas.identity import (
    MemberInvite,
    MemberInvitedOut,
    MemberList,
    MemberOut,
    MemberUpdate,
    member_out,
)
from tally.identity import ADMIN
from tally.support.clock import format_time

routes = RouteTable(tag="Members")


@routes.route(
    "GET", "/v1/members", "listMembers", "List the tenant's members",
    scope=ADMIN, success={200: MemberList}, errors=READ_ERRORS, params=(LIMIT, CURSOR),
)  # fmt: skip
async def list_members(call: Call) -> Response:
    page = await call.services.identity.members(call.principal, call.limit(), cursor(call))
    return list_response(page, member_out, MemberList)


@routes.route(
    "POST", "/v1/members", "inviteMember", "Invite a member (the token is shown once)",
    scope=ADMIN, success={201: MemberInvitedOut}, request=MemberInvite,
    errors=(*WRITE_ERRORS, 409), idempotency_key=False,
)  # fmt: skip
async def invite_member(call: Call) -> Response:
    body: MemberInvite = await call.body(MemberInvite)
    # An invitation of a taken email answers 409: that tells whether the address
    # has an account, so it spends the login buckets, no faster an oracle than login.
    await call.services.limits.for_login(body.email, call.client_address)
    invited = await call.services.identity.invite(
        call.principal, body.email, body.role, audit_of(call)
    )
    out = MemberInvitedOut(
        member_out(invited.user), invited.token, format_time(invited.expires_at_us)
    )
    return json_response(out, 201, (("location", f"/v1/members/{invited.user.id}"),))


@routes.route(
    "PATCH", "/v1/members/{id}", "updateMember", "Change a member's role",
    scope=ADMIN, success={200: MemberOut}, request=MemberUpdate,
    errors=(*WRITE_ERRORS, 404, 409), params=(ID,), idempotency_key=False,
)  # fmt: skip
async def update_member(call: Call) -> Response:
    user_id = call.path_id()
    body: MemberUpdate = await call.body(MemberUpdate)
    user = await call.services.identity.change_role(
        call.principal, user_id, body.role, audit_of(call)
    )
    return json_response(member_out(user))


@routes.route(
    "DELETE", "/v1/members/{id}", "disableMember",
    "Disable a member: their sessions end at once",
    scope=ADMIN, success={204: None}, errors=(401, 403, 404, 409, 503), params=(ID,),
    idempotency_key=False,
)  # fmt: skip
async def disable_member(call: Call) -> Response:
    await call.services.identity.disable(call.principal, call.path_id(), audit_of(call))
    return no_content()

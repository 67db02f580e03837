"""Request and response schemas of the identity routes (api.md §6), as msgspec Structs.

As for the ledger: one Struct per direction, and unknown request fields are
refused (422), so nobody can slip a ``role``, a ``tenant_id`` or a ``status``
into a sign-up or an invitation (mass assignment). No response carries a
password hash, a token hash or a key's secret, except the one response that
creates the secret, once.
"""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta, Struct

from tally.api.schemas.common import NO_NUL, RequestBody, Timestamp, pattern
from tally.identity.passwords import PASSWORD_CHARS_MAX, PASSWORD_CHARS_MIN
from tally.identity.repository import KeyRecord, UserRecord
from tally.identity.roles import ALL_SCOPES
from tally.identity.service import EMAIL_PATTERN
from tally.support.clock import format_time

# No NUL anywhere (NO_NUL): PostgreSQL's text cannot hold it (a 500 there, found by
# the security tests), and no email, name or token has one.
Email = Annotated[
    str,
    Meta(
        min_length=5,
        max_length=254,
        pattern=pattern(EMAIL_PATTERN, "Must be an email address, such as ada@example.com."),
        examples=["ada@example.com"],
    ),
]
# Login takes any text as the email: a malformed one gets the very answer, after
# the very work, of an unknown one (docs/security.md).
LoginEmail = Annotated[str, Meta(min_length=1, max_length=1024)]
# A password being set: the policy's length (it also refuses common passwords,
# which no schema can state). One being checked: any text up to a bound.
# The bounds are published, not enforced by the decoder, so that the policy's own
# answer (too_short, too_long, too_common) is the one a client gets.
NewPassword = Annotated[
    str,
    Meta(
        description="12-128 characters, not a common password.",
        extra_json_schema={"minLength": PASSWORD_CHARS_MIN, "maxLength": PASSWORD_CHARS_MAX},
    ),
]
Password = Annotated[str, Meta(min_length=1, max_length=PASSWORD_CHARS_MAX * 4)]
Name = Annotated[str, Meta(min_length=1, max_length=200, pattern=NO_NUL)]
# What the service takes as a name (_check_name): at least one character that is
# neither NUL nor white space as Python's str.isspace() has it. \s in ECMA-262
# differs (U+001C-U+001F), so the characters are spelled out. Published for Name
# fields by the OpenAPI document; the decoder keeps NO_NUL, so that the
# service's own answer is the one a blank name gets.
NOT_BLANK_PATTERN = (
    "^[^\u0000]*[^\u0000\t-\r\u001c- \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029"
    "\u202f\u205f\u3000][^\u0000]*$"
)
Token = Annotated[str, Meta(min_length=1, max_length=4096, pattern=NO_NUL)]
Role = Literal["owner", "admin", "operator", "viewer"]
Scope = Literal[ALL_SCOPES]  # type: ignore[valid-type]


class SignupCreate(RequestBody):
    email: Email
    password: NewPassword
    tenant_name: Name


class SignupOut(Struct):
    tenant_id: str
    user_id: str


class LoginCreate(RequestBody):
    email: LoginEmail
    password: Password


class TokenOut(Struct):
    access_token: str
    refresh_token: str
    token_type: Literal["Bearer"]
    expires_in: int


class RefreshCreate(RequestBody):
    refresh_token: Token


class InvitationAccept(RequestBody):
    token: Token
    password: NewPassword


class PasswordChange(RequestBody):
    current_password: Password
    new_password: NewPassword


class MeOut(Struct):
    object: Literal["user", "api_key"]
    id: str
    tenant_id: str
    role: Role | None
    scopes: list[str]


class MemberOut(Struct):
    object: Literal["member"]
    id: str
    email: str
    role: Role
    status: Literal["invited", "active", "disabled"]
    created_at: Timestamp
    updated_at: Timestamp


class MemberInvite(RequestBody):
    email: Email
    role: Role


class MemberInvitedOut(Struct):
    member: MemberOut
    invitation_token: str  # shown once: the invitee sends it to /v1/auth/accept-invitation
    invitation_expires_at: Timestamp


class MemberUpdate(RequestBody):
    role: Role


class MemberList(Struct):
    data: list[MemberOut]
    has_more: bool
    next_cursor: str | None


class ApiKeyCreate(RequestBody):
    name: Name
    scopes: Annotated[list[Scope], Meta(min_length=1, max_length=len(ALL_SCOPES))]


class ApiKeyOut(Struct):
    object: Literal["api_key"]
    id: str
    name: str
    prefix: str  # "tly_<id>": enough to recognise a key, never enough to use it
    scopes: list[str]
    created_at: Timestamp
    revoked_at: Timestamp | None
    created_by: str | None


class ApiKeyCreatedOut(Struct):
    api_key: ApiKeyOut
    secret: str  # the whole key, shown this once


class ApiKeyList(Struct):
    data: list[ApiKeyOut]
    has_more: bool
    next_cursor: str | None


def member_out(u: UserRecord) -> MemberOut:
    return MemberOut(
        "member",
        u.id,
        u.email,
        u.role,  # type: ignore[arg-type]
        u.status,  # type: ignore[arg-type]
        format_time(u.created_at_us),
        format_time(u.updated_at_us),
    )


def api_key_out(k: KeyRecord) -> ApiKeyOut:
    return ApiKeyOut(
        "api_key",
        k.id,
        k.name,
        f"tly_{k.id}",
        k.scopes.split(),
        format_time(k.created_at_us),
        None if k.revoked_at_us is None else format_time(k.revoked_at_us),
        k.created_by,
    )

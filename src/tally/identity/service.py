"""The use cases of identity: sign-up, login, refresh, logout, password change,
members and API keys.

Each write is one transaction that also holds its audit row (tally.audit). The
answers to a failed login are the same, and take the same time, whether the
email is unknown, the password wrong, or the user invited or disabled.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tally import audit
from tally.audit import AuditContext
from tally.errors import (
    Conflict,
    FieldError,
    Forbidden,
    NotFound,
    Unauthenticated,
    ValidationFailed,
)
from tally.identity import repository as db
from tally.identity.api_keys import new_api_key
from tally.identity.passwords import PasswordHasher, check_policy
from tally.identity.principals import Principal
from tally.identity.roles import ADMIN, ALL_SCOPES, ROLE_SCOPES, may_grant
from tally.identity.tokens import AccessClaims, Keyring, new_refresh_token, sha256_hex
from tally.storage import Store
from tally.storage.store import Tx, UniqueViolation
from tally.support.clock import Clock
from tally.support.cursors import Page, decode_id_cursor, page_of
from tally.support.ids import new_id

EMAIL_CHARS_MAX = 254
NAME_CHARS_MAX = 200
# What is accepted as an address, published in the schema too: no space or control
# character, one @, a dot in the domain. The class is spelled out rather than \s,
# whose meaning differs between Python's regular expressions and JSON Schema's
# (ECMA-262), and the end is (?![\s\S]) because Python's $ also matches before a
# final newline (see ids.ID_PATTERN).
_NOT_IN_EMAIL = "[^@\\u0000-\\u0020\\u007f]"
EMAIL_PATTERN = f"^{_NOT_IN_EMAIL}{{1,64}}@{_NOT_IN_EMAIL}+\\.{_NOT_IN_EMAIL}+(?![\\s\\S])"
_EMAIL = re.compile(EMAIL_PATTERN)
_LOGIN_FAILED = "The email or password is not right."


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int


@dataclass(frozen=True, slots=True)
class CreatedApiKey:
    record: db.KeyRecord
    token: str  # shown once


@dataclass(frozen=True, slots=True)
class Invited:
    user: db.UserRecord
    token: str  # shown once
    expires_at_us: int


def normalize_email(email: str, field: str = "email") -> str:
    email = email.lower()
    if len(email) > EMAIL_CHARS_MAX or not _EMAIL.match(email):
        raise ValidationFailed([FieldError(field, "invalid", "Not an email address.")])
    return email


class Identity:
    def __init__(
        self,
        store: Store,
        passwords: PasswordHasher,
        keyring: Keyring,
        *,
        clock: Clock,
        session_ttl_seconds: int,
        invitation_ttl_seconds: int,
    ) -> None:
        self.store = store
        self.passwords = passwords
        self.keyring = keyring
        self._clock = clock
        self._session_ttl_us = session_ttl_seconds * 1_000_000
        self._invitation_ttl_us = invitation_ttl_seconds * 1_000_000

    # -- sign-up, login, sessions ------------------------------------------------------

    async def signup(
        self, email: str, password: str, tenant_name: str, ctx: AuditContext
    ) -> tuple[str, str]:
        email = normalize_email(email)
        check_policy(password)
        _check_name(tenant_name, "tenant_name")
        password_hash = await self.passwords.hash(password)
        tenant_id, user_id, now_us = new_id("ten"), new_id("usr"), self._clock()
        ctx.tenant_id, ctx.actor_type, ctx.actor_id, ctx.object_id = (
            tenant_id, "user", user_id, user_id,
        )  # fmt: skip
        user = db.UserRecord(
            user_id, tenant_id, email, password_hash, "owner", "active", now_us, now_us
        )
        try:
            async with self.store.transaction() as tx:
                await db.insert_tenant(tx, tenant_id, tenant_name, now_us)
                await db.insert_user(tx, user)
                await audit.record(tx, ctx, 201, None, now_us)
        except UniqueViolation:
            ctx.tenant_id = ctx.actor_id = ctx.object_id = None
            ctx.actor_type = "anonymous"
            raise Conflict(
                "A user with this email exists already: log in instead, or sign up with "
                "another email."
            ) from None
        return tenant_id, user_id

    async def login(self, email: str, password: str, ctx: AuditContext) -> TokenPair:
        try:
            email = normalize_email(email)
        except ValidationFailed:
            email = ""  # verified like an unknown address: same answer, same time
        user = await db.user_by_email(self.store, email) if email else None
        usable_hash = user.password_hash if user is not None and user.status == "active" else None
        matches = await self.passwords.verify(usable_hash, password)
        if user is not None:  # a known user's tenant sees attempts on its accounts
            ctx.tenant_id, ctx.object_id = user.tenant_id, user.id
        if user is None or usable_hash is None or not matches:
            raise Unauthenticated(_LOGIN_FAILED)
        ctx.actor_type, ctx.actor_id = "user", user.id
        if self.passwords.needs_rehash(usable_hash):
            new_hash = await self.passwords.hash(password)
        else:
            new_hash = None
        now_us, session_id = self._clock(), new_id("ses")
        refresh, refresh_sha256 = new_refresh_token()
        async with self.store.transaction() as tx:
            await db.insert_session(tx, session_id, user.id, now_us, self._session_ttl_us)
            await db.insert_refresh_token(tx, refresh_sha256, session_id, now_us)
            if new_hash is not None:
                await db.set_user(tx, user.id, now_us, password_hash=new_hash)
            await audit.record(tx, ctx, 200, None, now_us)
        return await self._pair(user.id, user.tenant_id, session_id, refresh)

    async def _pair(self, user_id: str, tenant_id: str, session_id: str, refresh: str) -> TokenPair:
        access = await self.keyring.issue(AccessClaims(user_id, tenant_id, session_id))
        return TokenPair(access, refresh, self.keyring.access_ttl_seconds)

    async def refresh(self, refresh_token: str, ctx: AuditContext) -> TokenPair:
        token_sha256, now_us = sha256_hex(refresh_token), self._clock()
        new_refresh, new_sha256 = new_refresh_token()
        async with self.store.transaction() as tx:
            found = await db.refresh_token_session(tx, token_sha256)
            if found is None:
                raise Unauthenticated("The refresh token is not valid; log in again.")
            session_id, user_id, expires_at_us, revoked = found
            ctx.actor_type, ctx.actor_id, ctx.object_id = "user", user_id, session_id
            user = await db.user_by_id(tx, user_id)
            assert user is not None, "users are disabled, never deleted"
            ctx.tenant_id = user.tenant_id
            spent_now = await db.spend_refresh_token(tx, token_sha256, now_us) == 1
            if not spent_now and not revoked:
                # Reuse of a spent token: it was stolen, or its pair was. End the whole
                # family, so neither the thief nor the victim keeps a session.
                await db.revoke_sessions(tx, user_id, now_us, "reuse", session_id=session_id)
                await audit.record(tx, ctx, 401, "refresh_token_reused", now_us)
            ok = spent_now and not revoked and expires_at_us > now_us and user.status == "active"
            if ok:
                await db.insert_refresh_token(tx, new_sha256, session_id, now_us)
                await audit.record(tx, ctx, 200, None, now_us)
        if not ok:
            raise Unauthenticated("The refresh token is not valid; log in again.")
        return await self._pair(user_id, user.tenant_id, session_id, new_refresh)

    async def logout(self, principal: Principal, ctx: AuditContext) -> None:
        session_id = _session_of(principal)
        now_us = self._clock()
        ctx.object_id = session_id
        async with self.store.transaction() as tx:
            await db.revoke_sessions(
                tx, principal.actor_id, now_us, "logout", session_id=session_id
            )
            await audit.record(tx, ctx, 204, None, now_us)

    async def email_of(self, principal: Principal) -> str:
        user = await db.user_in_tenant(self.store, principal.tenant_id, _user_of(principal))
        if user is None:
            raise Forbidden(_USERS_ONLY)
        return user.email

    async def change_password(
        self, principal: Principal, current: str, new: str, ctx: AuditContext
    ) -> None:
        session_id = _session_of(principal)
        check_policy(new, "new_password")
        user = await db.user_in_tenant(self.store, principal.tenant_id, principal.actor_id)
        if user is None or not await self.passwords.verify(user.password_hash, current):
            raise ValidationFailed(
                [FieldError("current_password", "invalid", "Not your current password.")]
            )
        new_hash = await self.passwords.hash(new)
        now_us = self._clock()
        ctx.object_id = user.id
        async with self.store.transaction() as tx:
            await db.set_user(tx, user.id, now_us, password_hash=new_hash)
            await db.revoke_sessions(
                tx, user.id, now_us, "password_changed", keep_session_id=session_id
            )
            await audit.record(tx, ctx, 204, None, now_us)

    # -- members ----------------------------------------------------------------------

    async def invite(
        self, principal: Principal, email: str, role: str, ctx: AuditContext
    ) -> Invited:
        email = normalize_email(email)
        _check_grant(principal, role)
        token, now_us = new_refresh_token()[0].replace("tlr_", "tli_", 1), self._clock()
        user = db.UserRecord(
            new_id("usr"), principal.tenant_id, email, None, role, "invited", now_us, now_us
        )
        ctx.object_id = user.id
        try:
            async with self.store.transaction() as tx:
                await db.insert_user(tx, user)
                await db.insert_invitation(
                    tx, sha256_hex(token), user.id, now_us, self._invitation_ttl_us
                )
                await audit.record(tx, ctx, 201, None, now_us)
        except UniqueViolation:
            ctx.object_id = None
            raise Conflict(
                "A user with this email exists already, in this or another tenant; a user "
                "belongs to one tenant, so invite another address."
            ) from None
        return Invited(user, token, now_us + self._invitation_ttl_us)

    async def accept_invitation(
        self, token: str, password: str, ctx: AuditContext
    ) -> db.UserRecord:
        check_policy(password)
        password_hash = await self.passwords.hash(password)
        now_us = self._clock()
        async with self.store.transaction() as tx:
            user_id = await db.accept_invitation(tx, sha256_hex(token), now_us)
            user = await db.user_by_id(tx, user_id) if user_id else None
            if user is None or user.status != "invited":
                raise NotFound(
                    "No open invitation has this token (it was used, or it expired): ask "
                    "an admin of the tenant for a new one."
                )
            ctx.tenant_id, ctx.actor_type, ctx.actor_id, ctx.object_id = (
                user.tenant_id, "user", user.id, user.id,
            )  # fmt: skip
            await db.set_user(tx, user.id, now_us, password_hash=password_hash, status="active")
            await audit.record(tx, ctx, 200, None, now_us)
        return await db.user_in_tenant(self.store, user.tenant_id, user.id) or user

    async def members(
        self, principal: Principal, limit: int, cursor: str | None
    ) -> Page[db.UserRecord]:
        after = decode_id_cursor(cursor) if cursor else ""
        users = await db.users_page(self.store, principal.tenant_id, after, limit + 1)
        return page_of(users, limit, lambda u: u.id)

    async def change_role(
        self, principal: Principal, user_id: str, role: str, ctx: AuditContext
    ) -> db.UserRecord:
        ctx.object_id = user_id
        now_us = self._clock()
        async with self.store.transaction() as tx:
            user = await _member_to_change(tx, principal, user_id)
            _check_grant(principal, role)
            await db.set_user(tx, user.id, now_us, role=role)
            await _keep_an_owner(tx, principal.tenant_id)
            await audit.record(tx, ctx, 200, None, now_us)
        changed = await db.user_in_tenant(self.store, principal.tenant_id, user_id)
        assert changed is not None
        return changed

    async def disable(self, principal: Principal, user_id: str, ctx: AuditContext) -> None:
        ctx.object_id = user_id
        now_us = self._clock()
        async with self.store.transaction() as tx:
            user = await _member_to_change(tx, principal, user_id)
            await db.set_user(tx, user.id, now_us, status="disabled")
            await db.revoke_sessions(tx, user.id, now_us, "disabled")
            await _keep_an_owner(tx, principal.tenant_id)
            await audit.record(tx, ctx, 204, None, now_us)

    # -- API keys ---------------------------------------------------------------------

    async def create_api_key(
        self, principal: Principal, name: str, scopes: list[str], ctx: AuditContext
    ) -> CreatedApiKey:
        _check_name(name, "name")
        unknown = [s for s in scopes if s not in ALL_SCOPES]
        if unknown or not scopes:
            raise ValidationFailed(
                [FieldError("scopes", "invalid", f"Each scope is one of {', '.join(ALL_SCOPES)}.")]
            )
        # admin opens every route, so it may grant every scope; otherwise only one's own.
        beyond = [] if ADMIN in principal.scopes else sorted(set(scopes) - principal.scopes)
        if beyond:  # nobody makes a key that can do more than they can
            raise Forbidden(
                f"A key cannot have scopes its creator lacks: {', '.join(beyond)}; leave them "
                "out, or ask an admin to create the key."
            )
        key, now_us = new_api_key(), self._clock()
        record = db.KeyRecord(
            key.key_id,
            principal.tenant_id,
            name,
            " ".join(s for s in ALL_SCOPES if s in scopes),
            now_us,
            None,
            principal.actor_id,
        )
        ctx.object_id = key.key_id
        async with self.store.transaction() as tx:
            await db.insert_api_key(tx, record, key.secret_sha256)
            await audit.record(tx, ctx, 201, None, now_us)
        return CreatedApiKey(record, key.token)

    async def api_keys(
        self, principal: Principal, limit: int, cursor: str | None
    ) -> Page[db.KeyRecord]:
        after = decode_id_cursor(cursor) if cursor else ""
        keys = await db.api_keys_page(self.store, principal.tenant_id, after, limit + 1)
        return page_of(keys, limit, lambda k: k.id)

    async def revoke_api_key(self, principal: Principal, key_id: str, ctx: AuditContext) -> None:
        ctx.object_id = key_id
        now_us = self._clock()
        async with self.store.transaction() as tx:
            if not await db.revoke_api_key(tx, principal.tenant_id, key_id, now_us):
                raise NotFound(f"This tenant has no API key with id {key_id!r}.")
            await audit.record(tx, ctx, 204, None, now_us)


_USERS_ONLY = (
    "This route is for a logged-in user, not an API key: log in with an email and "
    "password, and call it with that access token."
)


def _user_of(principal: Principal) -> str:
    if principal.actor_type != "user":
        raise Forbidden(_USERS_ONLY)
    return principal.actor_id


def _session_of(principal: Principal) -> str:
    if principal.session_id is None:
        raise Forbidden(_USERS_ONLY)
    return principal.session_id


def _check_name(name: str, field: str) -> None:
    if not name.strip() or len(name) > NAME_CHARS_MAX or "\x00" in name:
        raise ValidationFailed(
            [
                FieldError(
                    field,
                    "invalid",
                    f"Must be 1-{NAME_CHARS_MAX} characters, and not only white space.",
                )
            ]
        )


def _check_grant(principal: Principal, role: str) -> None:
    if ADMIN not in principal.scopes or not may_grant(principal.role, role):
        if role == "owner":
            raise Forbidden("Only an owner can grant, change or disable the owner role.")
        raise Forbidden(f"Only an owner or an admin can grant, change or disable the {role} role.")


async def _member_to_change(tx: Tx, principal: Principal, user_id: str) -> db.UserRecord:
    """The member, locked against other changes to the tenant's members, whose
    current role the caller may manage."""
    await db.lock_tenant(tx, principal.tenant_id)
    user = await db.user_in_tenant(tx, principal.tenant_id, user_id)
    if user is None:
        raise NotFound(f"This tenant has no member with id {user_id!r}.")
    _check_grant(principal, user.role)
    return user


async def _keep_an_owner(tx: Tx, tenant_id: str) -> None:
    if await db.active_owners(tx, tenant_id) == 0:
        raise Conflict("A tenant keeps at least one active owner: make another member owner first.")


__all__ = ["ROLE_SCOPES", "CreatedApiKey", "Identity", "Invited", "TokenPair"]

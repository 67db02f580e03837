"""Identity's use cases driven directly, with no HTTP, on SQLite and PostgreSQL:
sign-up, login, sessions, members and keys, and the authenticator every entry
point asks who is calling. The HTTP side is in tests/api and tests/security."""

from __future__ import annotations

import secrets

import pytest

from tally.errors import Conflict, Forbidden, Unauthenticated
from tally.identity import ALL_SCOPES
from tally.identity.tenants import create_tenant
from tally.services import Services
from tests.integration.conftest import audit_context, run_services

PASSWORD = "correct horse battery staple"


def _email() -> str:
    return f"{secrets.token_hex(6)}@example.com"


def test_a_signed_up_owner_logs_in_refreshes_and_logs_out(database_url: str) -> None:
    async def scenario(services: Services) -> None:
        identity, authenticate = services.identity, services.authenticator.authenticate
        email = _email()
        tenant_id, user_id = await identity.signup(email, PASSWORD, "Acme", audit_context("signup"))
        pair = await identity.login(email, PASSWORD, audit_context("login"))
        caller = await authenticate(f"Bearer {pair.access_token}")
        assert (caller.tenant_id, caller.actor_id, caller.role) == (tenant_id, user_id, "owner")
        assert caller.scopes == frozenset(ALL_SCOPES)
        renewed = await identity.refresh(pair.refresh_token, audit_context("refresh"))
        with pytest.raises(Unauthenticated):  # a refresh token is spent once
            await identity.refresh(pair.refresh_token, audit_context("refresh"))
        with pytest.raises(Unauthenticated):  # ...and its reuse ended the session
            await authenticate(f"Bearer {renewed.access_token}")

    run_services(database_url, scenario)


def test_a_wrong_password_and_an_unknown_email_get_the_same_answer(database_url: str) -> None:
    async def scenario(services: Services) -> None:
        identity = services.identity
        email = _email()
        await identity.signup(email, PASSWORD, "Acme", audit_context("signup"))
        answers = []
        for who, password in ((email, "not the password at all"), (_email(), PASSWORD)):
            with pytest.raises(Unauthenticated) as refused:
                await identity.login(who, password, audit_context("login"))
            answers.append(refused.value.detail)
        assert answers[0] == answers[1]

    run_services(database_url, scenario)


def test_an_operators_tenant_key_has_every_scope_until_revoked(database_url: str) -> None:
    async def scenario(services: Services) -> None:
        tenant_id, key = await create_tenant(services.store, "ops", services.clock())
        caller = await services.authenticator.authenticate(f"Bearer {key}")
        assert (caller.tenant_id, caller.actor_type) == (tenant_id, "api_key")
        assert caller.scopes == frozenset(ALL_SCOPES)
        reader = await services.identity.create_api_key(
            caller, "reader", ["accounts:read"], audit_context("createApiKey")
        )
        read_only = await services.authenticator.authenticate(f"Bearer {reader.token}")
        assert read_only.scopes == frozenset({"accounts:read"})
        with pytest.raises(Forbidden):  # no key can grant more than its maker holds
            await services.identity.create_api_key(
                read_only, "more", ["transfers:write"], audit_context("createApiKey")
            )
        await services.identity.revoke_api_key(
            caller, reader.record.id, audit_context("revokeApiKey")
        )
        with pytest.raises(Unauthenticated):
            await services.authenticator.authenticate(f"Bearer {reader.token}")

    run_services(database_url, scenario)


def test_a_member_is_invited_promoted_and_the_last_owner_is_kept(database_url: str) -> None:
    async def scenario(services: Services) -> None:
        identity = services.identity
        owner_email = _email()
        await identity.signup(owner_email, PASSWORD, "Acme", audit_context("signup"))
        pair = await identity.login(owner_email, PASSWORD, audit_context("login"))
        owner = await services.authenticator.authenticate(f"Bearer {pair.access_token}")
        invited = await identity.invite(owner, _email(), "viewer", audit_context("inviteMember"))
        member = await identity.accept_invitation(
            invited.token, PASSWORD, audit_context("acceptInvitation")
        )
        assert (member.status, member.role) == ("active", "viewer")
        promoted = await identity.change_role(
            owner, member.id, "admin", audit_context("updateMember")
        )
        assert promoted.role == "admin"
        with pytest.raises(Conflict):
            await identity.change_role(
                owner, owner.actor_id, "admin", audit_context("updateMember")
            )
        page = await identity.members(owner, 10, None)
        assert {u.id for u in page.items} == {owner.actor_id, member.id}

    run_services(database_url, scenario)

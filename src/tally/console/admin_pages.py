"""The admins' pages: API keys (create, with the secret shown once; revoke),
members (invite, with the invitation token shown once; change a role; disable)
and the audit log. Each calls the same ``Identity`` or ``AuditLog`` use case as
the REST route of the same name, and needs the same ``admin`` scope."""

from __future__ import annotations

from starlette.responses import Response

from tally.console import fields
from tally.console.errors import status_of
from tally.console.web import Visit
from tally.errors import TallyError
from tally.identity.roles import ALL_SCOPES, ROLES
from tally.support.clock import format_time

PAGE_SIZE = 100


def _cursor(visit: Visit) -> str | None:
    return visit.query("cursor", 256) or None


async def api_keys(
    visit: Visit, *, created: tuple[str, str] | None = None, error: TallyError | None = None
) -> Response:
    visit.audit_code = error.code if error else None
    page = await visit.services.identity.api_keys(visit.principal, PAGE_SIZE, _cursor(visit))
    return visit.page(
        "api_keys.html",
        201 if created else (status_of(error.code) if error else 200),
        keys=page.items,
        next_cursor=page.next_cursor,
        scopes=ALL_SCOPES,
        created=created,
        error=error,
    )


async def create_api_key(visit: Visit) -> Response:
    form = visit.form
    scopes = [s for s in ALL_SCOPES if form.checked(f"scope:{s}")]
    try:
        made = await visit.services.identity.create_api_key(
            visit.principal, form.text("name"), scopes, visit.audit_of()
        )
    except TallyError as error:
        if error.code in ("forbidden", "rate_limited"):
            raise
        return await api_keys(visit, error=error)
    # Shown on this one page, never again (the console does not redirect here: the
    # secret must not end up in a URL or the history).
    return await api_keys(visit, created=(made.record.id, made.token))


async def revoke_api_key(visit: Visit) -> Response:
    key_id = visit.path_id()
    await visit.services.identity.revoke_api_key(visit.principal, key_id, visit.audit_of())
    return visit.see_other("/console/api-keys")


async def members(
    visit: Visit, *, invited: tuple[str, str, str] | None = None, error: TallyError | None = None
) -> Response:
    visit.audit_code = error.code if error else None
    page = await visit.services.identity.members(visit.principal, PAGE_SIZE, _cursor(visit))
    return visit.page(
        "members.html",
        201 if invited else (status_of(error.code) if error else 200),
        members=page.items,
        next_cursor=page.next_cursor,
        roles=ROLES,
        invited=invited,
        error=error,
    )


async def invite_member(visit: Visit) -> Response:
    form = visit.form
    services = visit.services
    email = form.text("email")
    try:
        role = fields.choice(form, "role", ROLES[::-1])  # viewer first: the least rights
        # As REST: an invitation of a taken address tells it has an account, so it
        # spends the login buckets, no faster an oracle than the login form.
        await services.limits.for_login(email, visit.client_address)
        made = await services.identity.invite(visit.principal, email, role, visit.audit_of())
    except TallyError as error:
        if error.code in ("forbidden", "rate_limited"):
            raise
        return await members(visit, error=error)
    return await members(
        visit, invited=(made.user.email, made.token, format_time(made.expires_at_us))
    )


async def change_role(visit: Visit) -> Response:
    role = fields.choice(visit.form, "role", ROLES[::-1])
    await visit.services.identity.change_role(
        visit.principal, visit.path_id(), role, visit.audit_of()
    )
    return visit.see_other("/console/members")


async def disable_member(visit: Visit) -> Response:
    await visit.services.identity.disable(visit.principal, visit.path_id(), visit.audit_of())
    return visit.see_other("/console/members")


async def audit(visit: Visit) -> Response:
    page = await visit.services.audit_log.list(
        visit.tenant_id, limit=PAGE_SIZE, cursor=_cursor(visit)
    )
    return visit.page("audit.html", rows=page.items, next_cursor=page.next_cursor)

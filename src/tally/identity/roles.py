"""Roles, scopes, and which roles may grant which.

A route names one scope (api.md §6). An API key carries scopes; a user's scopes
come from their role, read from the database on every request, so a change of
role applies to the very next request.
"""

from __future__ import annotations

READ_SCOPES = ("accounts:read", "transfers:read", "events:read")
WRITE_SCOPES = ("accounts:write", "transfers:write")
ADMIN = "admin"
ALL_SCOPES = (
    "accounts:read",
    "accounts:write",
    "transfers:read",
    "transfers:write",
    "events:read",
    ADMIN,
)

ROLES = ("owner", "admin", "operator", "viewer")
ROLE_SCOPES: dict[str, frozenset[str]] = {
    "owner": frozenset(ALL_SCOPES),
    "admin": frozenset(ALL_SCOPES),
    "operator": frozenset((*READ_SCOPES, *WRITE_SCOPES)),
    "viewer": frozenset(READ_SCOPES),
}


def allows(scopes: frozenset[str], scope: str) -> bool:
    """Whether a caller holding ``scopes`` may use a route that needs ``scope``
    (empty: any authenticated caller). ``admin`` opens every route (api.md §6).
    Every entry point asks this one question: REST and the console alike."""
    return not scope or scope in scopes or ADMIN in scopes


def may_grant(granter_role: str | None, role: str) -> bool:
    """Only an owner makes (or unmakes) another owner; admins manage the rest.
    ``granter_role`` is None for an API key with the admin scope: it may manage
    every role but owner, like an admin."""
    if role == "owner":
        return granter_role == "owner"
    return granter_role in ("owner", "admin", None)

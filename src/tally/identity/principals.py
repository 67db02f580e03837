"""Who is calling: the result of authentication, which every use case is given."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Principal:
    tenant_id: str
    actor_type: str  # "api_key" or "user"
    actor_id: str  # the key id or the user id
    scopes: frozenset[str]
    role: str | None = None  # users only
    session_id: str | None = None  # users only

"""The SQL of identity, written once in the ``$n`` style for both backends.

Reads take the store; writes take an open transaction (``Store.transaction``),
so that a use case's statements and its audit row commit together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tally.identity.credentials import CHANNEL, key_message, session_message, user_message
from tally.storage import Store
from tally.storage.store import Tx


@dataclass(frozen=True, slots=True)
class UserRecord:
    id: str
    tenant_id: str
    email: str
    password_hash: str | None
    role: str
    status: str
    created_at_us: int
    updated_at_us: int


@dataclass(frozen=True, slots=True)
class SessionState:
    """What every request with an access token is checked against."""

    user_id: str
    tenant_id: str
    role: str
    user_status: str
    revoked: bool
    expires_at_us: int


@dataclass(frozen=True, slots=True)
class KeyCheck:
    """What authenticating an API key reads."""

    id: str
    tenant_id: str
    secret_sha256: str
    scopes: str
    revoked: bool


@dataclass(frozen=True, slots=True)
class KeyRecord:
    id: str
    tenant_id: str
    name: str
    scopes: str
    created_at_us: int
    revoked_at_us: int | None
    created_by: str | None


_USER_COLUMNS = "id, tenant_id, email, password_hash, role, status, created_at_us, updated_at_us"
_KEY_COLUMNS = "id, tenant_id, name, scopes, created_at_us, revoked_at_us, created_by"


def _user(row: Any) -> UserRecord:
    return UserRecord(*row)


async def user_by_email(store: Store, email: str) -> UserRecord | None:
    rows = await store.fetch(f"SELECT {_USER_COLUMNS} FROM users WHERE email = $1", email)
    return _user(rows[0]) if rows else None


async def user_in_tenant(db: Store | Tx, tenant_id: str, user_id: str) -> UserRecord | None:
    rows = await db.fetch(
        f"SELECT {_USER_COLUMNS} FROM users WHERE tenant_id = $1 AND id = $2", tenant_id, user_id
    )
    return _user(rows[0]) if rows else None


async def user_by_id(db: Store | Tx, user_id: str) -> UserRecord | None:
    rows = await db.fetch(f"SELECT {_USER_COLUMNS} FROM users WHERE id = $1", user_id)
    return _user(rows[0]) if rows else None


async def users_page(store: Store, tenant_id: str, after_id: str, limit: int) -> list[UserRecord]:
    rows = await store.fetch(
        f"SELECT {_USER_COLUMNS} FROM users WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3",
        tenant_id,
        after_id,
        limit,
    )
    return [_user(r) for r in rows]


async def session_state(store: Store, session_id: str) -> SessionState | None:
    rows = await store.fetch_point(
        "SELECT u.id, u.tenant_id, u.role, u.status, s.revoked_at_us, s.expires_at_us"
        " FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id = $1",
        session_id,
    )
    if not rows:
        return None
    r = rows[0]
    return SessionState(r[0], r[1], r[2], r[3], r[4] is not None, r[5])


@dataclass(frozen=True, slots=True)
class TenantRecord:
    id: str
    name: str
    created_at_us: int


async def tenants_page(store: Store, after_id: str, limit: int) -> list[TenantRecord]:
    rows = await store.fetch(
        "SELECT id, name, created_at_us FROM tenants WHERE id > $1 ORDER BY id LIMIT $2",
        after_id,
        limit,
    )
    return [TenantRecord(*r) for r in rows]


async def tenant_by_id(store: Store, tenant_id: str) -> TenantRecord | None:
    rows = await store.fetch("SELECT id, name, created_at_us FROM tenants WHERE id = $1", tenant_id)
    return TenantRecord(*rows[0]) if rows else None


async def insert_tenant(tx: Tx, tenant_id: str, name: str, now_us: int) -> None:
    await tx.execute(
        "INSERT INTO tenants (id, name, created_at_us) VALUES ($1, $2, $3)", tenant_id, name, now_us
    )


async def lock_tenant(tx: Tx, tenant_id: str) -> None:
    """Serialise changes to a tenant's members (a no-op update takes the row lock on
    PostgreSQL; SQLite's one writer serialises them anyway), so that two admins
    demoting the last two owners at once cannot leave a tenant with none."""
    await tx.execute("UPDATE tenants SET name = name WHERE id = $1", tenant_id)


async def insert_user(tx: Tx, user: UserRecord) -> None:
    await tx.execute(
        f"INSERT INTO users ({_USER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        user.id,
        user.tenant_id,
        user.email,
        user.password_hash,
        user.role,
        user.status,
        user.created_at_us,
        user.updated_at_us,
    )


async def set_user(tx: Tx, user_id: str, now_us: int, **fields: Any) -> None:
    names = sorted(fields)  # only names this module passes: never a client's text
    assignments = ", ".join(f"{name} = ${i}" for i, name in enumerate(names, start=3))
    await tx.execute(
        f"UPDATE users SET updated_at_us = $2, {assignments} WHERE id = $1",
        user_id,
        now_us,
        *(fields[n] for n in names),
    )
    # A role, a status or a password: every session of the user is read afresh.
    await tx.notify(CHANNEL, user_message(user_id))


async def active_owners(tx: Tx, tenant_id: str) -> int:
    rows = await tx.fetch(
        "SELECT COUNT(*) FROM users WHERE tenant_id = $1 AND role = 'owner' AND status = 'active'",
        tenant_id,
    )
    return int(rows[0][0])


async def insert_session(tx: Tx, session_id: str, user_id: str, now_us: int, ttl_us: int) -> None:
    await tx.execute(
        "INSERT INTO sessions (id, user_id, created_at_us, expires_at_us) VALUES ($1, $2, $3, $4)",
        session_id,
        user_id,
        now_us,
        now_us + ttl_us,
    )


async def insert_refresh_token(tx: Tx, token_sha256: str, session_id: str, now_us: int) -> None:
    await tx.execute(
        "INSERT INTO refresh_tokens (token_sha256, session_id, created_at_us) VALUES ($1, $2, $3)",
        token_sha256,
        session_id,
        now_us,
    )


async def spend_refresh_token(tx: Tx, token_sha256: str, now_us: int) -> int:
    """Mark the token spent if it was not; 1 if this call spent it. The update's row
    lock decides between two processes refreshing with the same token."""
    return await tx.execute(
        "UPDATE refresh_tokens SET spent_at_us = $2"
        " WHERE token_sha256 = $1 AND spent_at_us IS NULL",
        token_sha256,
        now_us,
    )


async def refresh_token_session(tx: Tx, token_sha256: str) -> tuple[str, str, int, bool] | None:
    """(session id, user id, session expiry, session revoked) of a known token."""
    rows = await tx.fetch(
        "SELECT s.id, s.user_id, s.expires_at_us, s.revoked_at_us FROM refresh_tokens r"
        " JOIN sessions s ON s.id = r.session_id WHERE r.token_sha256 = $1",
        token_sha256,
    )
    if not rows:
        return None
    r = rows[0]
    return r[0], r[1], r[2], r[3] is not None


async def revoke_sessions(
    tx: Tx, user_id: str, now_us: int, reason: str, *, session_id: str | None = None,
    keep_session_id: str | None = None,
) -> int:  # fmt: skip
    """End one session, or all of a user's but ``keep_session_id``."""
    if session_id is not None:
        await tx.notify(CHANNEL, session_message(session_id))
        return await tx.execute(
            "UPDATE sessions SET revoked_at_us = $2, revoked_reason = $3"
            " WHERE id = $1 AND revoked_at_us IS NULL",
            session_id,
            now_us,
            reason,
        )
    await tx.notify(CHANNEL, user_message(user_id))
    return await tx.execute(
        "UPDATE sessions SET revoked_at_us = $2, revoked_reason = $3"
        " WHERE user_id = $1 AND revoked_at_us IS NULL AND id <> $4",
        user_id,
        now_us,
        reason,
        keep_session_id or "",
    )


async def insert_invitation(
    tx: Tx, token_sha256: str, user_id: str, now_us: int, ttl_us: int
) -> None:
    await tx.execute(
        "INSERT INTO invitations (token_sha256, user_id, created_at_us, expires_at_us)"
        " VALUES ($1, $2, $3, $4)",
        token_sha256,
        user_id,
        now_us,
        now_us + ttl_us,
    )


async def accept_invitation(tx: Tx, token_sha256: str, now_us: int) -> str | None:
    """The invited user's id, if the token is valid; it cannot be used again."""
    rows = await tx.fetch(
        "SELECT user_id FROM invitations WHERE token_sha256 = $1"
        " AND accepted_at_us IS NULL AND expires_at_us > $2",
        token_sha256,
        now_us,
    )
    if not rows:
        return None
    changed = await tx.execute(
        "UPDATE invitations SET accepted_at_us = $2 WHERE token_sha256 = $1"
        " AND accepted_at_us IS NULL",
        token_sha256,
        now_us,
    )
    return str(rows[0][0]) if changed == 1 else None


async def insert_api_key(tx: Tx, key: KeyRecord, secret_sha256: str) -> None:
    await tx.execute(
        f"INSERT INTO api_keys ({_KEY_COLUMNS}, secret_sha256)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        key.id,
        key.tenant_id,
        key.name,
        key.scopes,
        key.created_at_us,
        key.revoked_at_us,
        key.created_by,
        secret_sha256,
    )


async def api_keys_page(store: Store, tenant_id: str, after_id: str, limit: int) -> list[KeyRecord]:
    rows = await store.fetch(
        f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE tenant_id = $1 AND id > $2"
        " ORDER BY id LIMIT $3",
        tenant_id,
        after_id,
        limit,
    )
    return [KeyRecord(*r) for r in rows]


async def api_key_by_id(db: Store | Tx, key_id: str) -> KeyRecord | None:
    rows = await db.fetch(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE id = $1", key_id)
    return KeyRecord(*rows[0]) if rows else None


async def find_api_key(store: Store, key_id: str) -> KeyCheck | None:
    rows = await store.fetch_point(
        "SELECT id, tenant_id, secret_sha256, scopes, revoked_at_us FROM api_keys WHERE id = $1",
        key_id,
    )
    if not rows:
        return None
    r = rows[0]
    return KeyCheck(r[0], r[1], r[2], r[3], r[4] is not None)


async def revoke_api_key(tx: Tx, tenant_id: str, key_id: str, now_us: int) -> bool:
    """True if the key is this tenant's (revoking twice is not an error)."""
    rows = await tx.fetch(
        "SELECT revoked_at_us FROM api_keys WHERE tenant_id = $1 AND id = $2", tenant_id, key_id
    )
    if not rows:
        return False
    await tx.notify(CHANNEL, key_message(key_id))
    await tx.execute(
        "UPDATE api_keys SET revoked_at_us = $3 WHERE tenant_id = $1 AND id = $2"
        " AND revoked_at_us IS NULL",
        tenant_id,
        key_id,
        now_us,
    )
    return True

"""Who is calling: an API key or a user's access token, checked on every request.

An API key reads ``tly_<key id>_<secret>``. The key id (16 base32 characters,
80 bits) is public: it finds the row and is what a list of keys shows. The
secret is 256 bits from the operating system's CSPRNG; only its SHA-256 is
stored. A fast hash is right here (unlike for passwords): a 256-bit random
secret cannot be guessed by brute force, however fast the hash.

Anything else is taken for an access token (tally.identity.tokens): its
signature and expiry are checked in memory, then its session and user are read.

Both reads happen on every request, with no cache: a revoked key, a logged-out
session, a disabled user or a changed role takes effect on the very next
request, in every process. Each is one primary-key lookup.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from tally.errors import Unauthenticated
from tally.identity import store as identity_store
from tally.identity.roles import ALL_SCOPES, ROLE_SCOPES
from tally.identity.tokens import Keyring
from tally.storage import Store

KEY_PREFIX = "tly_"
KEY_ID_CHARS = 16
SECRET_BYTES = 32
TOKEN_CHARS_MAX = 4096
_BASE32 = "abcdefghijklmnopqrstuvwxyz234567"
_ASK = "Send Authorization: Bearer <api key or access token>."


@dataclass(frozen=True, slots=True)
class NewKey:
    key_id: str
    secret_sha256: str
    token: str  # the whole key: shown once, never stored


@dataclass(frozen=True, slots=True)
class Principal:
    tenant_id: str
    actor_type: str  # "api_key" or "user"
    actor_id: str  # the key id or the user id
    scopes: frozenset[str]
    role: str | None = None  # users only
    session_id: str | None = None  # users only


def new_api_key() -> NewKey:
    key_id = "".join(secrets.choice(_BASE32) for _ in range(KEY_ID_CHARS))
    secret = secrets.token_urlsafe(SECRET_BYTES)
    return NewKey(key_id, _sha256(secret), f"{KEY_PREFIX}{key_id}_{secret}")


def _sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _split(token: str) -> tuple[str, str] | None:
    key_id, sep, secret = token[len(KEY_PREFIX) :].partition("_")
    if not sep or len(key_id) != KEY_ID_CHARS or not secret or len(secret) > 128:
        return None
    return key_id, secret


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise Unauthenticated(_ASK)
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > TOKEN_CHARS_MAX:
        raise Unauthenticated(_ASK)
    return token


class Authenticator:
    def __init__(self, store: Store, keyring: Keyring | None) -> None:
        self._store = store
        self._keyring = keyring

    async def authenticate(self, authorization: str | None) -> Principal:
        token = bearer_token(authorization)
        if token.startswith(KEY_PREFIX):
            return await self._api_key(token)
        if self._keyring is None:
            raise Unauthenticated("That is not a Tally API key.")
        return await self._access_token(token)

    async def _api_key(self, token: str) -> Principal:
        parts = _split(token)
        if parts is None:
            raise Unauthenticated("That is not a Tally API key.")
        key_id, secret = parts
        record = await self._store.find_api_key(key_id)
        # compare_digest even when the key id is unknown, so timing does not tell.
        expected = record.secret_sha256 if record is not None else "0" * 64
        matches = hmac.compare_digest(expected, _sha256(secret))
        if record is None or not matches or record.revoked:
            raise Unauthenticated("The API key is not valid.")
        return Principal(record.tenant_id, "api_key", record.id, frozenset(record.scopes.split()))

    async def _access_token(self, token: str) -> Principal:
        assert self._keyring is not None
        claims = await self._keyring.verify(token)
        state = await identity_store.session_state(self._store, claims.session_id)
        if (
            state is None
            or state.revoked
            or state.user_status != "active"
            or state.user_id != claims.user_id
            or state.tenant_id != claims.tenant_id
        ):
            raise Unauthenticated("The session has ended; log in again.")
        return Principal(
            state.tenant_id,
            "user",
            state.user_id,
            ROLE_SCOPES[state.role],
            role=state.role,
            session_id=claims.session_id,
        )


__all__ = ["ALL_SCOPES", "Authenticator", "NewKey", "Principal", "new_api_key"]

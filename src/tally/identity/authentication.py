"""Who is calling: an API key or a user's access token, checked on every request.

Anything that does not start like an API key (``tally.identity.api_keys``) is
taken for an access token (``tally.identity.tokens``): its signature and expiry
are checked in memory, then its session and user are read.

Both reads are one primary-key lookup, kept per process on PostgreSQL by
``tally.identity.credentials``: a revoked key, a logged-out session, a disabled
user or a changed role still takes effect on the very next request, in every
process, because the change itself tells every process to drop its copy.
"""

from __future__ import annotations

import hmac

from tally.errors import Unauthenticated
from tally.identity import repository as db
from tally.identity.api_keys import KEY_PREFIX, split_api_key
from tally.identity.credentials import CredentialCache, key_message, session_message
from tally.identity.principals import Principal
from tally.identity.roles import ROLE_SCOPES
from tally.identity.tokens import Keyring, sha256_hex
from tally.storage import Store

TOKEN_CHARS_MAX = 4096
_ASK = "Send Authorization: Bearer <api key or access token>."


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise Unauthenticated(_ASK)
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > TOKEN_CHARS_MAX:
        raise Unauthenticated(_ASK)
    return token


class Authenticator:
    def __init__(
        self, store: Store, keyring: Keyring | None, cache: CredentialCache | None = None
    ) -> None:
        self._store = store
        self._keyring = keyring
        self._cache = (
            cache if cache is not None else CredentialCache(store.notifications, ttl_seconds=0)
        )

    async def authenticate(self, authorization: str | None) -> Principal:
        """The caller named by an ``Authorization`` header, or Unauthenticated."""
        token = bearer_token(authorization)
        if token.startswith(KEY_PREFIX):
            return await self._api_key(token)
        if self._keyring is None:
            raise Unauthenticated("That is not a Tally API key (tly_<key id>_<secret>).")
        return await self._access_token(token)

    async def _api_key(self, token: str) -> Principal:
        parts = split_api_key(token)
        if parts is None:
            raise Unauthenticated("That is not a Tally API key (tly_<key id>_<secret>).")
        key_id, secret = parts
        name = key_message(key_id)
        record: db.KeyCheck | None = self._cache.get(name)
        if record is None:
            generation = self._cache.generation
            record = await db.find_api_key(self._store, key_id)
            if record is not None:
                self._cache.put(name, record, user_id="", read_in=generation)
        # compare_digest even when the key id is unknown, so timing does not tell.
        expected = record.secret_sha256 if record is not None else "0" * 64
        matches = hmac.compare_digest(expected, sha256_hex(secret))
        if record is None or not matches or record.revoked:
            raise Unauthenticated("The API key is not valid (unknown or revoked).")
        return Principal(record.tenant_id, "api_key", record.id, frozenset(record.scopes.split()))

    async def _access_token(self, token: str) -> Principal:
        assert self._keyring is not None
        claims = await self._keyring.verify(token)
        name = session_message(claims.session_id)
        state: db.SessionState | None = self._cache.get(name)
        if state is None:
            generation = self._cache.generation
            state = await db.session_state(self._store, claims.session_id)
            if state is not None:
                self._cache.put(name, state, user_id=state.user_id, read_in=generation)
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

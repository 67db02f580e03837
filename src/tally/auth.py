"""API keys: random, identifiable by a prefix, stored only as a hash, shown once.

A key reads ``tly_<key id>_<secret>``. The key id (16 base32 characters, 80
bits) is public: it finds the row and is what a list of keys shows. The secret
is 256 bits from the operating system's CSPRNG; only its SHA-256 is stored.
A fast hash is right here (unlike for passwords): a 256-bit random secret cannot
be guessed by brute force, however fast the hash.

A verified key is remembered for ``api_key_cache_seconds`` in each process, so
the hot path does not read the database for every request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass

from tally.errors import Unauthenticated
from tally.storage import Store

KEY_PREFIX = "tly_"
KEY_ID_CHARS = 16
SECRET_BYTES = 32
ALL_SCOPES = (
    "accounts:read",
    "accounts:write",
    "transfers:read",
    "transfers:write",
    "events:read",
    "admin",
)
_BASE32 = "abcdefghijklmnopqrstuvwxyz234567"


@dataclass(frozen=True, slots=True)
class NewKey:
    key_id: str
    secret_sha256: str
    token: str  # the whole key: shown once, never stored


@dataclass(frozen=True, slots=True)
class Principal:
    tenant_id: str
    key_id: str
    scopes: frozenset[str]


def new_api_key() -> NewKey:
    key_id = "".join(secrets.choice(_BASE32) for _ in range(KEY_ID_CHARS))
    secret = secrets.token_urlsafe(SECRET_BYTES)
    return NewKey(key_id, _sha256(secret), f"{KEY_PREFIX}{key_id}_{secret}")


def _sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _split(token: str) -> tuple[str, str] | None:
    if not token.startswith(KEY_PREFIX):
        return None
    key_id, sep, secret = token[len(KEY_PREFIX) :].partition("_")
    if not sep or len(key_id) != KEY_ID_CHARS or not secret or len(secret) > 128:
        return None
    return key_id, secret


class Authenticator:
    def __init__(self, store: Store, *, cache_seconds: float, cache_entries_max: int) -> None:
        self._store = store
        self._cache_seconds = cache_seconds
        self._cache_entries_max = cache_entries_max
        # sha256 of the whole token -> (principal, expiry on the monotonic clock)
        self._cache: OrderedDict[str, tuple[Principal, float]] = OrderedDict()

    async def authenticate(self, authorization: str | None) -> Principal:
        if not authorization:
            raise Unauthenticated("Send Authorization: Bearer <api key>.")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("Send Authorization: Bearer <api key>.")
        token = token.strip()
        cache_key = _sha256(token)
        cached = self._cache.get(cache_key)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        principal = await self._verify(token)
        self._remember(cache_key, principal)
        return principal

    async def _verify(self, token: str) -> Principal:
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
        return Principal(record.tenant_id, record.id, frozenset(record.scopes.split()))

    def _remember(self, cache_key: str, principal: Principal) -> None:
        if self._cache_seconds <= 0:
            return
        self._cache[cache_key] = (principal, time.monotonic() + self._cache_seconds)
        self._cache.move_to_end(cache_key)
        while len(self._cache) > self._cache_entries_max:
            self._cache.popitem(last=False)

"""Access tokens (JWT, EdDSA) and refresh tokens (opaque, stored hashed).

An access token is short-lived (``access_token_ttl_seconds``) and signed with
Ed25519. Its header names the key (``kid``); verification accepts only the
algorithms in ``ALGORITHMS`` (never ``none``, never an HMAC that an attacker
could key with our public key) and requires ``exp``, ``iat``, ``aud``, ``iss``,
``sub`` and ``sid``.

Signing keys live in the database, so that every process signs and verifies with
the same ones. Rotation (``tally signing-keys rotate``) adds a key and retires
the old one: the newest key signs, and a retired key still verifies for as long
as tokens it signed can live, so nobody is logged out. Processes re-read the
keys every ``signing_key_reload_seconds`` and whenever they meet an unknown
``kid``.

A signature proves who the token was issued to; it does not prove that the
session is still open. That is checked against the database on every request
(tally.auth), which is what makes logout, password change and disabling a user
take effect at once.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tally.errors import Unauthenticated
from tally.storage import Store
from tally.support.ids import new_id

log = logging.getLogger(__name__)

ALGORITHMS = ["EdDSA"]
REFRESH_PREFIX = "tlr_"
REFRESH_SECRET_BYTES = 32
REQUIRED_CLAIMS = ["exp", "iat", "aud", "iss", "sub", "sid"]
# Unknown kids trigger a reload of the keys at most this often: a flood of forged
# kids must not become a flood of queries.
UNKNOWN_KID_RELOAD_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class AccessClaims:
    user_id: str
    tenant_id: str
    session_id: str


@dataclass(frozen=True, slots=True)
class _Key:
    kid: str
    private_key: Any
    public_key: Any
    created_at_us: int
    retired_at_us: int | None


def new_refresh_token() -> tuple[str, str]:
    """(the token, shown once; its SHA-256, stored)."""
    token = REFRESH_PREFIX + secrets.token_urlsafe(REFRESH_SECRET_BYTES)
    return token, sha256_hex(token)


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def new_signing_key(now_us: int) -> tuple[str, str, str, str, int]:
    """A fresh Ed25519 key as a signing_keys row: kid, algorithm, private, public PEM."""
    private = Ed25519PrivateKey.generate()
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return new_id("kid"), "EdDSA", private_pem, public_pem, now_us


_INSERT_KEY = (
    "INSERT INTO signing_keys (kid, algorithm, private_key_pem, public_key_pem, created_at_us)"
    " VALUES ($1, $2, $3, $4, $5)"
)


async def rotate_signing_key(store: Store, now_us: int) -> str:
    """Add a signing key and retire the others; returns the new kid."""
    row = new_signing_key(now_us)
    async with store.transaction() as tx:
        await tx.execute(
            "UPDATE signing_keys SET retired_at_us = $1 WHERE retired_at_us IS NULL", now_us
        )
        await tx.execute(_INSERT_KEY, *row)
    return row[0]


class Keyring:
    def __init__(
        self,
        store: Store,
        *,
        issuer: str,
        audience: str,
        access_ttl_seconds: int,
        reload_seconds: float,
        clock: Callable[[], int],
    ) -> None:
        self._store = store
        self._issuer = issuer
        self._audience = audience
        self._access_ttl_seconds = access_ttl_seconds
        self._reload_seconds = reload_seconds
        self._clock = clock
        self._keys: dict[str, _Key] = {}
        self._signing: _Key | None = None
        self._loaded_at = float("-inf")  # monotonic

    @property
    def access_ttl_seconds(self) -> int:
        return self._access_ttl_seconds

    def _verify_window_us(self) -> int:
        """How long a retired key must still verify: the life of a token it signed,
        plus the time a process may go on signing with it before it reloads."""
        return int((self._access_ttl_seconds + self._reload_seconds + 60) * 1_000_000)

    async def load(self) -> None:
        now_us = self._clock()
        rows = await self._store.fetch(
            "SELECT kid, private_key_pem, public_key_pem, created_at_us, retired_at_us"
            " FROM signing_keys WHERE retired_at_us IS NULL OR retired_at_us > $1",
            now_us - self._verify_window_us(),
        )
        if not rows:
            row = new_signing_key(now_us)
            async with self._store.transaction() as tx:
                await tx.execute(_INSERT_KEY, *row)
            # Another process may have made one at the same moment: both verify.
            return await self.load()
        keys = {}
        for kid, private_pem, public_pem, created_at_us, retired_at_us in rows:
            private = serialization.load_pem_private_key(private_pem.encode(), password=None)
            public = serialization.load_pem_public_key(public_pem.encode())
            keys[kid] = _Key(kid, private, public, created_at_us, retired_at_us)
        active = [k for k in keys.values() if k.retired_at_us is None] or list(keys.values())
        self._signing = max(active, key=lambda k: (k.created_at_us, k.kid))
        self._keys = keys
        self._loaded_at = time.monotonic()

    async def _fresh(self, *, unknown_kid: bool = False) -> None:
        age = time.monotonic() - self._loaded_at
        if age > self._reload_seconds or (unknown_kid and age > UNKNOWN_KID_RELOAD_SECONDS):
            await self.load()

    async def issue(self, claims: AccessClaims) -> str:
        await self._fresh()
        key = self._signing
        assert key is not None, "load() runs before the first token"
        now_s = self._clock() // 1_000_000
        payload = {
            "iss": self._issuer,
            "aud": self._audience,
            "sub": claims.user_id,
            "tid": claims.tenant_id,
            "sid": claims.session_id,
            "iat": now_s,
            "nbf": now_s,
            "exp": now_s + self._access_ttl_seconds,
            "jti": secrets.token_urlsafe(12),
        }
        token: str = jwt.encode(
            payload, key.private_key, algorithm="EdDSA", headers={"kid": key.kid}
        )
        return token

    async def verify(self, token: str) -> AccessClaims:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthenticated(
                "The credential is neither an API key (tly_...) nor an access token."
            ) from None
        kid = header.get("kid")
        if header.get("alg") not in ALGORITHMS or not isinstance(kid, str):
            raise Unauthenticated("The access token was not issued by Tally; log in again.")
        await self._fresh(unknown_kid=kid not in self._keys)
        key = self._keys.get(kid)
        if key is None:
            raise Unauthenticated("The access token was signed by an unknown key; log in again.")
        try:
            payload = jwt.decode(
                token,
                key.public_key,
                algorithms=ALGORITHMS,
                audience=self._audience,
                issuer=self._issuer,
                # Times are checked below against our clock (injectable in tests).
                options={
                    "require": REQUIRED_CLAIMS,
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.PyJWTError:
            raise Unauthenticated("The access token is not valid; log in again.") from None
        now_s = self._clock() // 1_000_000
        exp, iat = payload.get("exp"), payload.get("iat")
        if not isinstance(exp, int) or not isinstance(iat, int) or iat > now_s + 60:
            raise Unauthenticated("The access token is not valid; log in again.")
        if exp <= now_s:
            raise Unauthenticated(
                "The access token has expired: get a new one from /v1/auth/refresh."
            )
        sub, tid, sid = payload.get("sub"), payload.get("tid"), payload.get("sid")
        if not (isinstance(sub, str) and isinstance(tid, str) and isinstance(sid, str)):
            raise Unauthenticated("The access token is not valid; log in again.")
        return AccessClaims(sub, tid, sid)

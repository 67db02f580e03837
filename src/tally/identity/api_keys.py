"""API keys: how they are made, and how one is read back from a bearer token.

A key reads ``tly_<key id>_<secret>``. The key id (16 base32 characters, 80
bits) is public: it finds the row and is what a list of keys shows. The secret
is 256 bits from the operating system's CSPRNG; only its SHA-256 is stored. A
fast hash is right here (unlike for passwords): a 256-bit random secret cannot
be guessed by brute force, however fast the hash.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from tally.identity.tokens import sha256_hex

KEY_PREFIX = "tly_"
KEY_ID_CHARS = 16
SECRET_BYTES = 32
SECRET_CHARS_MAX = 128
_BASE32 = "abcdefghijklmnopqrstuvwxyz234567"


@dataclass(frozen=True, slots=True)
class GeneratedKey:
    key_id: str
    secret_sha256: str
    token: str  # the whole key: shown once, never stored


def new_api_key() -> GeneratedKey:
    key_id = "".join(secrets.choice(_BASE32) for _ in range(KEY_ID_CHARS))
    secret = secrets.token_urlsafe(SECRET_BYTES)
    return GeneratedKey(key_id, sha256_hex(secret), f"{KEY_PREFIX}{key_id}_{secret}")


def split_api_key(token: str) -> tuple[str, str] | None:
    """(key id, secret) of a token shaped like a key, else None."""
    key_id, sep, secret = token[len(KEY_PREFIX) :].partition("_")
    if not sep or len(key_id) != KEY_ID_CHARS or not secret or len(secret) > SECRET_CHARS_MAX:
        return None
    return key_id, secret

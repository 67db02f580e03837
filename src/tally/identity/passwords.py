"""Passwords: Argon2id hashes, a policy, and a login that takes the same time
whether or not the email exists.

Parameters are OWASP's minimum for Argon2id (19 MiB of memory, two passes, one
lane), raised by configuration only. Hashing costs tens of milliseconds of CPU
by design, so it runs in worker threads (argon2-cffi releases the GIL) and at
most ``password_hash_concurrency_max`` run at once: a flood of logins queues
instead of starving the ledger of CPU.
"""

from __future__ import annotations

import asyncio
import unicodedata
from functools import lru_cache

import argon2

from tally.errors import FieldError, ValidationFailed

PASSWORD_CHARS_MIN = 12
PASSWORD_CHARS_MAX = 128

# OWASP Password Storage Cheat Sheet: m=19 MiB, t=2, p=1 is the floor.
MEMORY_KIB_MIN = 19 * 1024
TIME_COST_MIN = 2
PARALLELISM = 1


@lru_cache(maxsize=1)
def _common_passwords() -> frozenset[str]:
    """The 30,000 most common passwords of the zxcvbn project's leaked-password
    list, lower-cased (a common password with capitals is still common).

    Loaded on the first password checked, not at import: the list and its
    dictionaries are about 12 MiB that a server process answering only API keys
    never needs."""
    from zxcvbn.frequency_lists import FREQUENCY_LISTS

    return frozenset(p.lower() for p in FREQUENCY_LISTS["passwords"])


def normalize(password: str) -> str:
    """NFC, so that the same characters typed on two keyboards hash the same."""
    return unicodedata.normalize("NFC", password)


def check_policy(password: str, field: str = "password") -> None:
    """Refuse a password that is too short, too long or too common (422)."""
    password = normalize(password)
    problem = None
    if len(password) < PASSWORD_CHARS_MIN:
        problem = ("too_short", f"Use at least {PASSWORD_CHARS_MIN} characters.")
    elif len(password) > PASSWORD_CHARS_MAX:
        problem = ("too_long", f"Use at most {PASSWORD_CHARS_MAX} characters.")
    elif password.lower() in _common_passwords() or len(set(password)) < 4:
        problem = ("too_common", "This password is too common; choose another.")
    if problem is not None:
        raise ValidationFailed([FieldError(field, *problem)])


class PasswordHasher:
    def __init__(self, *, memory_kib: int, time_cost: int, concurrency_max: int) -> None:
        assert memory_kib >= MEMORY_KIB_MIN, "below OWASP's floor"
        assert time_cost >= TIME_COST_MIN, "below OWASP's floor"
        self._hasher = argon2.PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_kib,
            parallelism=PARALLELISM,
            type=argon2.Type.ID,
        )
        self._slots = asyncio.Semaphore(concurrency_max)
        # Verified against when the email is unknown, so that answer costs the same.
        self._dummy_hash = self._hasher.hash("not a password anyone has")

    async def hash(self, password: str) -> str:
        async with self._slots:
            return await asyncio.to_thread(self._hasher.hash, normalize(password))

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """True if the password matches. With no hash (unknown email, or an invited
        user who has not chosen one) it does the same work and answers False."""
        async with self._slots:
            return await asyncio.to_thread(self._verify, password_hash, normalize(password))

    def _verify(self, password_hash: str | None, password: str) -> bool:
        try:
            self._hasher.verify(password_hash or self._dummy_hash, password)
        except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
            return False
        return password_hash is not None

    def needs_rehash(self, password_hash: str) -> bool:
        return bool(self._hasher.check_needs_rehash(password_hash))

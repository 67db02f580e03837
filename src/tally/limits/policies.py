"""Which buckets each kind of request spends (docs/security.md)."""

from __future__ import annotations

from tally.config import Settings
from tally.limits.buckets import Limiter, Policy


class Limits:
    """The policies of api.md §6 and docs/security.md, over one Limiter.

    - every authenticated request: a bucket per API key or per user;
    - every unauthenticated request (sign-up, login, refresh): a bucket per client
      address;
    - login, besides: a stricter bucket per email and one per client address, so
      that guessing one account's password, or many accounts' from one place,
      runs dry fast. Each is spent by every attempt, failed or not. Sign-up and
      accepting an invitation spend the same per-address bucket.
    """

    def __init__(self, limiter: Limiter, settings: Settings) -> None:
        self._limiter = limiter
        self._enabled = bool(settings.rate_limit_enabled)
        self.api = Policy("api", settings.rate_limit_burst, settings.rate_limit_per_second)
        self.login_email = Policy(
            "login-email",
            settings.login_limit_per_email_burst,
            settings.login_limit_per_email_per_minute / 60,
        )
        self.login_address = Policy(
            "login-address",
            settings.login_limit_per_address_burst,
            settings.login_limit_per_address_per_minute / 60,
        )

    async def for_credential(self, actor_type: str, actor_id: str) -> dict[str, str]:
        """An authenticated request: the bucket of its API key or user."""
        if not self._enabled:
            return {}
        key = f"{actor_type}:{actor_id}"
        return (await self._limiter.take(key, self.api)).check("for this credential")

    async def for_address(self, address: str | None) -> dict[str, str]:
        if not self._enabled:
            return {}
        key = f"address:{address or 'unknown'}"
        return (await self._limiter.take(key, self.api)).check("from this address")

    async def for_sign_up(self, address: str | None) -> dict[str, str]:
        """Sign-up and accepting an invitation spend the login bucket of the address:
        making tenants or trying invitation tokens in bulk is as sensitive a flow."""
        if not self._enabled:
            return {}
        bucket = await self._limiter.take(f"{address or 'unknown'}", self.login_address)
        return bucket.check("to sign up from this address")

    async def for_login(self, email: str, address: str | None) -> dict[str, str]:
        if not self._enabled:
            return {}
        by_address = await self._limiter.take(f"{address or 'unknown'}", self.login_address)
        headers = by_address.check("to log in from this address")
        by_email = await self._limiter.take(email.strip().lower(), self.login_email)
        return {**headers, **by_email.check("to log in to this account")}

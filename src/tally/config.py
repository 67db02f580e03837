"""Every setting, its default and its unit, in one place.

Settings come from ``TALLY_*`` environment variables (docs/configuration.md lists
them). Limits are written down here rather than scattered as literals, so that a
reader can see every bound the service keeps.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TALLY_", extra="ignore", frozen=True)

    database_url: str = Field(
        default="sqlite:///tally.db",
        description="sqlite:///relative/or/absolute/path.db or postgresql://user@host:port/db",
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    workers: int = Field(default=1, ge=1, le=64)

    # HTTP limits.
    body_bytes_max: int = Field(default=1024 * 1024, ge=1024)
    page_limit_default: int = 100
    page_limit_max: int = 1000

    # The batching writer (one per process).
    writer_queue_commands_max: int = Field(default=20_000, ge=1)
    writer_batch_commands_max: int = Field(default=2_000, ge=1)
    writer_retry_after_seconds: int = 1

    # Database sessions.
    db_pool_size: int = Field(default=8, ge=1, le=200)
    db_statement_timeout_ms: int = Field(default=5_000, ge=100)
    db_lock_timeout_ms: int = Field(default=3_000, ge=100)
    db_connect_timeout_seconds: float = 5.0
    db_unavailable_retry_after_seconds: int = 2

    # Background work.
    expiry_interval_seconds: float = Field(default=1.0, gt=0, le=5)
    expiry_batch_max: int = Field(default=1_000, ge=1)

    # Users, sessions and tokens (docs/security.md). Passwords: Argon2id, never below
    # OWASP's floor (19 MiB, two passes, one lane).
    password_hash_memory_kib: int = Field(default=19 * 1024, ge=19 * 1024)
    password_hash_time_cost: int = Field(default=2, ge=2)
    password_hash_concurrency_max: int = Field(default=2, ge=1, le=64)
    access_token_ttl_seconds: int = Field(default=900, ge=60, le=86_400)
    session_ttl_seconds: int = Field(default=30 * 86_400, ge=3_600)
    invitation_ttl_seconds: int = Field(default=7 * 86_400, ge=3_600)
    jwt_issuer: str = "tally"
    jwt_audience: str = "tally-api"
    signing_key_reload_seconds: float = Field(default=60.0, gt=0, le=3_600)
    # API keys and sessions read by authentication, kept per process on PostgreSQL
    # and dropped at once on every change (identity.credentials); 0 turns it off.
    credential_cache_seconds: float = Field(default=30.0, ge=0, le=3_600)

    # Rate limits: token buckets (capacity = burst, refilled at rate_per_second).
    # Shared through Redis when redis_url is set; per process otherwise.
    redis_url: str | None = None
    redis_timeout_seconds: float = Field(default=0.5, gt=0)
    rate_limit_enabled: bool = True
    rate_limit_per_second: float = Field(default=1_000.0, gt=0)
    rate_limit_burst: int = Field(default=2_000, ge=1)
    login_limit_per_email_per_minute: float = Field(default=5.0, gt=0)
    login_limit_per_email_burst: int = Field(default=10, ge=1)
    login_limit_per_address_per_minute: float = Field(default=30.0, gt=0)
    login_limit_per_address_burst: int = Field(default=60, ge=1)

    # Hardening (security headers are always on; see docs/security.md).
    cors_origins: list[str] = Field(default_factory=list)  # empty: CORS off

    # The audit log (docs/security.md).
    audit_flush_seconds: float = Field(default=0.05, gt=0, le=5)
    audit_queue_rows_max: int = Field(default=10_000, ge=100)
    audit_batch_rows_max: int = Field(default=500, ge=1)
    audit_seal_interval_seconds: float = Field(default=1.0, gt=0, le=60)
    audit_seal_rows_max: int = Field(default=1_000, ge=1)

    # Idempotency keys (api.md §3, docs/idempotency.md).
    require_idempotency_key: bool = False
    idempotency_retention_seconds: int = Field(default=86_400, ge=60)
    idempotency_purge_interval_seconds: float = Field(default=60.0, gt=0)
    idempotency_purge_batch_max: int = Field(default=1_000, ge=1)
    idempotency_in_use_retry_after_seconds: int = 1

    # Live events (docs/events.md): long polling, Server-Sent Events, WebSocket.
    # A stream's buffer of events not yet written to its client; a client that
    # lets it fill is sent a final ``overflow`` and disconnected.
    events_buffer_events_max: int = Field(default=1_024, ge=1, le=100_000)
    # A comment line (SSE) or heartbeat message (WebSocket) this often.
    events_heartbeat_seconds: float = Field(default=15.0, gt=0, le=300)
    # Each tenant's reader looks for new events this often even without a wakeup:
    # a lost notification delays an event by at most this, never loses it.
    events_poll_seconds: float = Field(default=10.0, gt=0, le=300)
    # A stream ends after this long (the client resumes with Last-Event-ID), so
    # that streams spread over new processes after a deploy; 0: never.
    events_stream_seconds_max: float = Field(default=3_600.0, ge=0)
    # A write to a stream's client that takes longer than this ends the stream.
    events_send_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    # Long polling: GET /v1/events?wait_seconds= at most this (api.md §8).
    events_wait_seconds_max: int = Field(default=30, ge=0, le=30)
    # WebSocket: a connection without a handshake credential must send its
    # {"type": "auth"} message within this.
    events_ws_auth_seconds: float = Field(default=5.0, gt=0, le=60)

    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    # One line per request (tally.access, at info whatever log_level says). Off by
    # default: it costs throughput (docs/performance.md has the measurement).
    access_log: bool = False

    @field_validator("database_url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        if not url.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError("TALLY_DATABASE_URL must start with sqlite:/// or postgresql://")
        return url

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite:///")

    @property
    def sqlite_path(self) -> str:
        return self.database_url.removeprefix("sqlite:///")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()

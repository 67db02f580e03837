"""Every setting, its default and its unit, in one place.

Settings come from ``TALLY_*`` environment variables (docs/configuration.md lists
them). Limits are written down here rather than scattered as literals, so that a
reader can see every bound the service keeps.
"""

from __future__ import annotations

import ipaddress
import json
from functools import lru_cache
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TALLY_", extra="ignore", frozen=True)

    database_url: str = Field(
        default="sqlite:///tally.db",
        description="sqlite:///relative/or/absolute/path.db or postgresql://user@host:port/db",
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    workers: int = Field(default=1, ge=1, le=64)

    # Transport (docs/protocols.md). TLS: a PEM certificate chain and its key
    # (``tally dev-cert`` makes a local pair); TLS 1.2 at least, 1.3 preferred.
    tls_cert: str | None = None
    tls_key: str | None = None
    # HTTP/2 beside HTTP/1.1 (granian and hypercorn): h2 by ALPN over TLS, h2c by
    # prior knowledge on a plain port. Off: HTTP/1.1 only, the measured default.
    http2: bool = False
    # HTTP/3 over QUIC on this UDP port (hypercorn only, one process, TLS required);
    # None: no UDP socket at all.
    quic_port: int | None = Field(default=None, ge=1, le=65535)
    # Session tickets kept for TLS resumption and 0-RTT over QUIC (one process's
    # memory; a ticket is used once).
    quic_session_tickets_max: int = Field(default=10_000, ge=0, le=1_000_000)

    # HTTP limits.
    body_bytes_max: int = Field(default=1024 * 1024, ge=1024)
    page_limit_default: int = 100
    page_limit_max: int = 1000

    # The batching writer (one per process).
    writer_queue_commands_max: int = Field(default=20_000, ge=1)
    writer_batch_commands_max: int = Field(default=2_000, ge=1)
    writer_retry_after_seconds: int = 1
    # Group commit (ledger/writer.py): how long after a transaction that answered
    # several requests the writer waits for their clients' next ones; 0: never.
    writer_gather_ms: float = Field(default=5.0, ge=0, le=100)

    # Database sessions.
    db_pool_size: int = Field(default=8, ge=1, le=200)
    db_statement_timeout_ms: int = Field(default=5_000, ge=100)
    db_lock_timeout_ms: int = Field(default=3_000, ge=100)
    db_connect_timeout_seconds: float = 5.0
    db_unavailable_retry_after_seconds: int = 2
    # PgBouncer in transaction pooling mode between Tally and PostgreSQL: asyncpg
    # keeps no prepared statements and sends no session settings; LISTEN and
    # migrations, which need a session of their own, go to db_direct_url
    # (docs/deploy.md#pgbouncer).
    db_pgbouncer: bool = False
    db_direct_url: str | None = None

    # Background work.
    expiry_interval_seconds: float = Field(default=1.0, gt=0, le=5)
    expiry_batch_max: int = Field(default=1_000, ge=1)

    # Webhooks (docs/webhooks.md). Delivery runs in every server process that has
    # webhooks_deliver on; the live ones share the endpoints by rendezvous hashing.
    webhooks_deliver: bool = True
    # Local development and tests only: allow http:// and loopback addresses.
    webhooks_allow_loopback: bool = False
    webhooks_poll_interval_seconds: float = Field(default=0.5, gt=0, le=60)
    webhooks_attempt_timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    webhooks_lease_margin_seconds: float = Field(default=10.0, gt=0, le=600)
    webhooks_attempts_max: int = Field(default=14, ge=1, le=50)
    webhooks_retry_base_seconds: float = Field(default=10.0, gt=0, le=3_600)
    webhooks_retry_delay_max_seconds: float = Field(default=43_200.0, gt=0, le=86_400)
    webhooks_retry_jitter: float = Field(default=0.2, ge=0, le=1)
    webhooks_concurrency_max: int = Field(default=32, ge=1, le=1_000)
    webhooks_fill_batch_max: int = Field(default=500, ge=1, le=10_000)
    webhooks_heartbeat_seconds: float = Field(default=2.0, gt=0, le=60)
    webhooks_worker_ttl_seconds: float = Field(default=10.0, gt=0, le=600)
    webhooks_secret_overlap_seconds: int = Field(default=86_400, ge=0, le=7 * 86_400)
    webhooks_endpoints_per_tenant_max: int = Field(default=100, ge=1, le=10_000)

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
    # Proxies whose X-Forwarded-For is believed (api/proxies.py): comma-separated
    # CIDRs or addresses, or a JSON list. Empty: the socket's peer is the client.
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)

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

    # GraphQL at /graphql (docs/graphql.md): every limit on by default. Page sizes
    # are REST's (page_limit_default, page_limit_max).
    # Introspection is on: /graphql needs a credential anyway, and the schema is
    # public (docs/schema.graphql), as the OpenAPI document is; GraphiQL needs it.
    graphql_introspection: bool = True
    graphql_depth_max: int = Field(default=10, ge=2, le=64)
    graphql_cost_max: int = Field(default=10_000, ge=1)
    graphql_aliases_max: int = Field(default=20, ge=0, le=1_000)
    graphql_tokens_max: int = Field(default=2_000, ge=100, le=100_000)
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

    # The gRPC service (docs/grpc.md): off unless a port is set (tally serve
    # --grpc-port). It runs in each server process, in the HTTP app's loop; with
    # several workers they share the port (SO_REUSEPORT).
    grpc_port: int | None = Field(default=None, ge=1, le=65535)
    grpc_host: str = "127.0.0.1"
    # On shutdown: calls in flight get this long to finish (streams end at once,
    # cleanly); what is still running then is cancelled.
    grpc_shutdown_grace_seconds: float = Field(default=5.0, ge=0, le=60)
    # Calls (streams included) served at once per process; past it, RESOURCE_EXHAUSTED.
    grpc_concurrent_calls_max: int = Field(default=10_000, ge=1, le=100_000)

    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    # text: one human line per record; json: one object per line with the request
    # id, for log pipelines (support/logs.py).
    log_format: Literal["text", "json"] = "text"
    # OpenTelemetry traces over OTLP/HTTP (api/tracing.py; the endpoint from the
    # standard OTEL_EXPORTER_OTLP_* variables). Needs the otel extra.
    otel_traces: bool = False
    otel_service_name: str = "tally"
    # One line per request (tally.access, at info whatever log_level says). Off by
    # default: it costs throughput (docs/performance.md has the measurement).
    access_log: bool = False

    @field_validator("database_url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        if not url.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError("TALLY_DATABASE_URL must start with sqlite:/// or postgresql://")
        return url

    @model_validator(mode="after")
    def _heartbeats_fit_the_ttl(self) -> Settings:
        # A worker must be heard from at least twice within the TTL, or a live one
        # would flicker out of the ring and its endpoints move back and forth.
        if self.webhooks_worker_ttl_seconds < 2 * self.webhooks_heartbeat_seconds:
            raise ValueError(
                "TALLY_WEBHOOKS_WORKER_TTL_SECONDS must be at least twice "
                "TALLY_WEBHOOKS_HEARTBEAT_SECONDS"
            )
        return self

    @model_validator(mode="after")
    def _tls_is_a_pair(self) -> Settings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("TALLY_TLS_CERT and TALLY_TLS_KEY go together: set both or neither")
        if self.quic_port is not None and self.tls_cert is None:
            raise ValueError("TALLY_QUIC_PORT needs TLS: QUIC has no plain-text mode")
        return self

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @field_validator("db_direct_url")
    @classmethod
    def _direct_is_postgres(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("postgresql://", "postgres://")):
            raise ValueError("TALLY_DB_DIRECT_URL must start with postgresql://")
        return url

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _proxy_networks(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            value = json.loads(text) if text.startswith("[") else text.split(",")
        if isinstance(value, list):
            value = [str(v).strip() for v in value if str(v).strip()]
            for v in value:
                try:
                    ipaddress.ip_network(v, strict=False)
                except ValueError:
                    raise ValueError(
                        f"TALLY_TRUSTED_PROXIES: {v!r} is not an IP address or CIDR network"
                    ) from None
        return value

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite:///")

    @property
    def session_database_url(self) -> str | None:
        """Where work that needs a session of its own (LISTEN, migrations' advisory
        lock) connects: never through a transaction-mode PgBouncer. None when there
        is no such place (PgBouncer without a direct URL)."""
        if self.db_direct_url is not None:
            return self.db_direct_url
        return None if self.db_pgbouncer else self.database_url

    @property
    def sqlite_path(self) -> str:
        return self.database_url.removeprefix("sqlite:///")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()

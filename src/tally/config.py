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

    # Authentication: a verified key is remembered this long in each process.
    api_key_cache_seconds: float = Field(default=5.0, ge=0)
    api_key_cache_entries_max: int = 10_000

    # Idempotency keys (api.md §3, docs/idempotency.md).
    require_idempotency_key: bool = False
    idempotency_retention_seconds: int = Field(default=86_400, ge=60)
    idempotency_purge_interval_seconds: float = Field(default=60.0, gt=0)
    idempotency_purge_batch_max: int = Field(default=1_000, ge=1)
    idempotency_in_use_retry_after_seconds: int = 1

    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"

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

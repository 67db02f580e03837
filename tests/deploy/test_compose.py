"""deploy/compose.yaml, read (no engine runs it here: docs/deploy.md): Tally,
PostgreSQL and Redis, migrations as a one-shot before the server, the server
locked down, and every TALLY_* variable one Tally has."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tally.config import Settings

COMPOSE = Path(__file__).resolve().parents[2] / "deploy" / "compose.yaml"
SETTINGS = {f"TALLY_{name.upper()}" for name in Settings.model_fields}


def services() -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return spec["services"]  # type: ignore[no-any-return]


def test_tally_postgres_and_redis_with_health_checks() -> None:
    found = services()
    assert {"tally", "migrate", "postgres", "redis"} <= found.keys()
    for name in ("postgres", "redis"):
        assert "healthcheck" in found[name], name


def test_the_server_starts_only_after_migrations_succeeded() -> None:
    found = services()
    assert found["migrate"]["command"] == ["migrate"]
    assert found["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert found["tally"]["command"] == ["serve"]
    assert found["tally"]["depends_on"]["migrate"]["condition"] == (
        "service_completed_successfully"
    )


def test_the_server_is_locked_down_and_stops_gracefully() -> None:
    tally = services()["tally"]
    assert tally["read_only"] is True
    assert tally["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in tally["security_opt"]
    grace = int(str(tally["stop_grace_period"]).removesuffix("s"))
    assert grace > 10  # tally serve's own graceful shutdown
    assert all(p.startswith("127.0.0.1:") for p in tally["ports"])


def test_every_setting_named_is_tallys_and_no_password_is_written_down() -> None:
    environment = services()["tally"]["environment"]
    assert set(environment) <= SETTINGS, set(environment) - SETTINGS
    assert "${TALLY_DB_PASSWORD:?" in environment["TALLY_DATABASE_URL"]

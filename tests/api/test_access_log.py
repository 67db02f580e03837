"""Access logs (TALLY_ACCESS_LOG): one logfmt line per request with its request id,
method, route, status, duration, and tenant and actor once known; never a
credential, a query string or a body; nothing at all when the setting is off."""

from __future__ import annotations

import logging
import re
import shlex
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from tally.api import create_app
from tally.config import Settings
from tests.conftest import create_tenant

LINE = re.compile(r"^request_id=\S+ method=\S+ (route=\S+ )?path=\S+ status=\d{3} duration_ms=")


@pytest.fixture(scope="module")
def logged_client(database_url: str) -> Iterator[TestClient]:
    settings = Settings(database_url=database_url, access_log=True)
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def fields(line: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in shlex.split(line))


def access_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "tally.access"]


def test_each_request_is_one_line_with_its_id_route_status_duration_and_caller(
    logged_client: TestClient, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    tenant_id, key = create_tenant(database_url, "logged")
    caplog.set_level(logging.INFO, logger="tally.access")

    r = logged_client.get("/v1/accounts/nobody", headers={"Authorization": f"Bearer {key}"})

    (line,) = access_lines(caplog)
    assert LINE.match(line), line
    found = fields(line)
    assert found["request_id"] == r.headers["request-id"]
    assert (found["method"], found["route"], found["path"]) == (
        "GET",
        "/v1/accounts/{id}",
        "/v1/accounts/nobody",
    )
    assert found["status"] == "404"
    assert float(found["duration_ms"]) >= 0
    assert found["tenant"] == tenant_id
    assert found["actor"].startswith("api_key:")
    assert key not in line and key.split("_", 2)[2] not in line


def test_a_refused_credential_logs_no_caller_and_no_secret(
    logged_client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tally.access")

    logged_client.post(
        "/v1/transfers?secret=hunter2",
        headers={"Authorization": "Bearer tly_aaaaaaaaaaaaaaaa_topsecret"},
        json={"amount": 1, "password": "hunter2"},
    )

    (line,) = access_lines(caplog)
    found = fields(line)
    assert (found["route"], found["status"]) == ("/v1/transfers", "401")
    assert "tenant" not in found and "actor" not in found
    for secret in ("topsecret", "hunter2", "secret="):
        assert secret not in line


def test_a_login_logs_the_user_it_found(
    logged_client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    email, password = "logged-login@example.com", "a long passphrase of mine"
    body = {"email": email, "password": password, "tenant_name": "Logged"}
    signed_up = logged_client.post("/v1/signup", json=body).json()
    caplog.set_level(logging.INFO, logger="tally.access")

    logged_client.post("/v1/auth/login", json={"email": email, "password": password})

    found = fields(access_lines(caplog)[-1])
    assert found["route"] == "/v1/auth/login" and found["status"] == "200"
    assert found["tenant"] == signed_up["tenant_id"]
    assert found["actor"] == f"user:{signed_up['user_id']}"
    assert "passphrase" not in access_lines(caplog)[-1]
    assert email not in access_lines(caplog)[-1]


def test_routes_outside_v1_and_unknown_paths_are_logged_too(
    logged_client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tally.access")

    logged_client.get("/healthz")
    logged_client.get("/nowhere")

    health, unknown = (fields(line) for line in access_lines(caplog))
    assert (health["route"], health["status"]) == ("/healthz", "200")
    assert "route" not in unknown and (unknown["path"], unknown["status"]) == ("/nowhere", "404")


def test_a_hostile_path_cannot_forge_or_split_a_line(
    logged_client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tally.access")

    logged_client.get('/v1/x"%0Astatus=200 tenant=ten_forged' + "a" * 500)

    (line,) = access_lines(caplog)
    assert "\n" not in line
    found = fields(line)
    assert found["status"] == "404" and "tenant" not in found
    assert len(found["path"]) <= 210


def test_nothing_is_logged_when_the_setting_is_off(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="tally.access")

    client.get("/healthz")
    client.get("/v1/accounts")

    assert access_lines(caplog) == []

"""The ``tally`` command as an operator uses it (api.md §7), against a real server."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import httpx
import pytest

import tally
from tests.e2e.conftest import StartServer, cli_create_tenant, run_tally

HTTP_TIMEOUT_SECONDS = 10.0
ACCESS_LINE_WAIT_SECONDS = 5.0


@pytest.fixture
def fresh_sqlite_url(tmp_path: Path) -> str:
    """A database file that does not exist yet: the CLI has to make everything."""
    return f"sqlite:///{tmp_path / 'cli.db'}"


def _bearer(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


def test_migrate_twice_is_a_no_op_the_second_time(fresh_sqlite_url: str, tmp_path: Path) -> None:
    first = run_tally(fresh_sqlite_url, "migrate")
    assert first.returncode == 0, first.stderr
    path = fresh_sqlite_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        tables_after_first = db.execute(
            "SELECT name, sql FROM sqlite_master ORDER BY name"
        ).fetchall()
        version_after_first = db.execute("SELECT version_num FROM alembic_version").fetchall()

    second = run_tally(fresh_sqlite_url, "migrate")

    assert second.returncode == 0, second.stderr
    # Progress goes to stderr, so that stdout stays clean for scripts.
    assert first.stdout == second.stdout == ""
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall() == (
            tables_after_first
        )
        assert db.execute("SELECT version_num FROM alembic_version").fetchall() == (
            version_after_first
        )
    assert len(version_after_first) == 1


def test_migrate_says_what_it_applied_and_then_that_there_was_nothing(
    fresh_sqlite_url: str,
) -> None:
    first = run_tally(fresh_sqlite_url, "migrate")
    second = run_tally(fresh_sqlite_url, "migrate")

    assert (first.returncode, second.returncode) == (0, 0), first.stderr + second.stderr
    applied = [line for line in first.stderr.splitlines() if line.startswith("applied ")]
    assert [line.split(":")[0] for line in applied] == [
        "applied 0001",
        "applied 0002",
        "applied 0003",
        "applied 0004",
        "applied 0005",
        "applied 0006",
        "applied 0007",
        "applied 0008",
        "applied 0009",
        "applied 0010",
    ]
    assert "up to date" not in first.stderr
    assert second.stderr.strip() == "the database schema was already up to date; nothing to apply"


def test_serve_refuses_an_unmigrated_database_in_one_line_naming_the_fix(
    fresh_sqlite_url: str,
) -> None:
    done = run_tally(fresh_sqlite_url, "serve", "--no-migrate", "--port", "1")

    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("tally serve: ") and "`tally migrate`" in lines[0]
    assert done.stdout == ""


def test_migrate_twice_on_postgres_succeeds(postgres_url: str) -> None:
    for _ in range(2):
        done = run_tally(postgres_url, "migrate")
        assert done.returncode == 0, done.stderr
        assert done.stdout == ""


def test_tenants_create_json_prints_one_object_and_nothing_else(fresh_sqlite_url: str) -> None:
    done = run_tally(fresh_sqlite_url, "tenants", "create", "Acme Ltd", "--json")

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout
    created = json.loads(lines[0])
    assert isinstance(created, dict)
    assert set(created) == {"tenant_id", "api_key"}
    assert isinstance(created["tenant_id"], str) and created["tenant_id"]
    assert isinstance(created["api_key"], str)
    assert created["api_key"].startswith("tly_")
    # The key is a secret: it is on stdout, shown once, and nowhere else.
    assert created["api_key"] not in done.stderr


def test_tenants_create_makes_a_new_tenant_and_key_each_time(fresh_sqlite_url: str) -> None:
    first = cli_create_tenant(fresh_sqlite_url, "same name")
    second = cli_create_tenant(fresh_sqlite_url, "same name")

    assert first[0] != second[0]
    assert first[1] != second[1]


def test_tenants_create_rejects_an_empty_name(fresh_sqlite_url: str) -> None:
    done = run_tally(fresh_sqlite_url, "tenants", "create", "", "--json")

    assert done.returncode != 0
    assert done.stdout == ""


def test_cli_key_moves_money_on_a_served_sqlite_ledger(
    fresh_sqlite_url: str, start_server: StartServer
) -> None:
    _, api_key = cli_create_tenant(fresh_sqlite_url, "e2e")
    server = start_server(fresh_sqlite_url)

    with httpx.Client(
        base_url=server.base_url, headers=_bearer(api_key), timeout=HTTP_TIMEOUT_SECONDS
    ) as api:
        bank = api.post(
            "/v1/accounts", json={"id": "bank", "currency": "USD", "normal_balance": "debit"}
        )
        assert bank.status_code == 201, bank.text
        wallet = api.post("/v1/accounts", json={"id": "wallet", "currency": "USD"})
        assert wallet.status_code == 201, wallet.text

        moved = api.post(
            "/v1/transfers",
            json={
                "id": "deposit-1",
                "debit_account_id": "bank",
                "credit_account_id": "wallet",
                "amount": 12_345,
            },
        )
        assert moved.status_code == 201, moved.text
        assert moved.json()["status"] == "posted"

        read = api.get("/v1/accounts/wallet")
        assert read.status_code == 200, read.text
        account = read.json()
        assert account["credits_posted"] == 12_345
        assert account["debits_posted"] == 0
        assert account["balance"] == {"posted": 12_345, "pending": 0, "available": 12_345}

        bank_read = api.get("/v1/accounts/bank").json()
        assert bank_read["debits_posted"] == 12_345
        # Debit-normal: the bank's balance grows with its debits.
        assert bank_read["balance"]["posted"] == 12_345

        assert api.get("/v1/transfers/deposit-1").json()["amount"] == 12_345


def test_wrong_or_missing_key_is_401_with_bearer_challenge(
    fresh_sqlite_url: str, start_server: StartServer
) -> None:
    _, api_key = cli_create_tenant(fresh_sqlite_url, "e2e")
    server = start_server(fresh_sqlite_url)
    forged = api_key[:-4] + ("aaaa" if not api_key.endswith("aaaa") else "bbbb")

    with httpx.Client(base_url=server.base_url, timeout=HTTP_TIMEOUT_SECONDS) as client:
        for headers in ({}, _bearer(forged), _bearer("tly_nonsense"), {"Authorization": api_key}):
            answer = client.get("/v1/accounts", headers=headers)
            assert answer.status_code == 401, (headers, answer.text)
            assert answer.headers["www-authenticate"].startswith("Bearer")
            assert answer.headers["content-type"].startswith("application/problem+json")
            assert answer.json()["code"] == "unauthenticated"
            assert api_key not in answer.text

        refused = client.post(
            "/v1/accounts", headers=_bearer(forged), json={"id": "x", "currency": "USD"}
        )
        assert refused.status_code == 401
        # Nothing was created by the refused request.
        assert client.get("/v1/accounts/x", headers=_bearer(api_key)).status_code == 404


def test_one_tenants_key_cannot_see_another_tenants_accounts(
    fresh_sqlite_url: str, start_server: StartServer
) -> None:
    _, key_a = cli_create_tenant(fresh_sqlite_url, "a")
    _, key_b = cli_create_tenant(fresh_sqlite_url, "b")
    server = start_server(fresh_sqlite_url)

    with httpx.Client(base_url=server.base_url, timeout=HTTP_TIMEOUT_SECONDS) as client:
        made = client.post(
            "/v1/accounts", headers=_bearer(key_a), json={"id": "mine", "currency": "USD"}
        )
        assert made.status_code == 201, made.text

        assert client.get("/v1/accounts/mine", headers=_bearer(key_b)).status_code == 404
        listed = client.get("/v1/accounts", headers=_bearer(key_b)).json()
        assert listed["data"] == []


# -- the operator's view: version, help, tenants and keys ----------------------------------


def test_version_prints_the_package_version(fresh_sqlite_url: str) -> None:
    # The installed entry point; the help of every command is tests/unit/cli's.
    done = run_tally(fresh_sqlite_url, "--version")

    assert done.returncode == 0, done.stderr
    assert done.stdout == f"tally {tally.__version__}\n"


def test_tenants_list_prints_every_tenant_oldest_first(fresh_sqlite_url: str) -> None:
    made = [cli_create_tenant(fresh_sqlite_url, name)[0] for name in ("Acme", "Globex")]

    as_json = run_tally(fresh_sqlite_url, "tenants", "list", "--json")
    as_text = run_tally(fresh_sqlite_url, "tenants", "list")

    assert as_json.returncode == 0, as_json.stderr
    rows = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [(r["tenant_id"], r["name"]) for r in rows] == list(
        zip(made, ["Acme", "Globex"], strict=True)
    )
    assert all(r["created_at"].endswith("Z") for r in rows)
    assert as_json.stderr.strip() == "2 tenant(s)"
    assert [line.split()[0] for line in as_text.stdout.splitlines()] == made


def test_api_keys_list_shows_prefixes_and_never_a_secret(fresh_sqlite_url: str) -> None:
    tenant_id, api_key = cli_create_tenant(fresh_sqlite_url, "Acme")

    done = run_tally(fresh_sqlite_url, "api-keys", "list", tenant_id, "--json")

    assert done.returncode == 0, done.stderr
    (row,) = [json.loads(line) for line in done.stdout.splitlines()]
    assert api_key.startswith(row["prefix"] + "_")
    assert row["tenant_id"] == tenant_id and row["revoked_at"] is None
    assert "admin" in row["scopes"]
    secret = api_key.split("_", 2)[2]
    assert secret not in done.stdout + done.stderr


def test_api_keys_list_of_an_unknown_tenant_says_so_and_fails(fresh_sqlite_url: str) -> None:
    done = run_tally(fresh_sqlite_url, "api-keys", "list", "ten_nope")

    assert done.returncode == 1
    assert done.stdout == ""
    assert "no tenant has id 'ten_nope'" in done.stderr


def test_api_keys_revoke_applies_at_once_and_is_audited(
    fresh_sqlite_url: str, start_server: StartServer
) -> None:
    tenant_id, api_key = cli_create_tenant(fresh_sqlite_url, "Acme")
    server = start_server(fresh_sqlite_url)
    prefix = "_".join(api_key.split("_", 2)[:2])  # tly_<key id>
    with httpx.Client(
        base_url=server.base_url, headers=_bearer(api_key), timeout=HTTP_TIMEOUT_SECONDS
    ) as api:
        assert api.get("/v1/accounts").status_code == 200

        done = run_tally(fresh_sqlite_url, "api-keys", "revoke", prefix)

        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"revoked {prefix} (default) of {tenant_id} at ")
        assert api.get("/v1/accounts").status_code == 401
    listed = run_tally(fresh_sqlite_url, "api-keys", "list", tenant_id, "--json")
    assert json.loads(listed.stdout)["revoked_at"] is not None
    again = run_tally(fresh_sqlite_url, "api-keys", "revoke", prefix)
    assert again.returncode == 0, again.stderr
    with sqlite3.connect(fresh_sqlite_url.removeprefix("sqlite:///")) as db:
        rows = db.execute(
            "SELECT tenant_id, actor_type, action, object_id FROM audit_events"
            " WHERE actor_type = 'operator'"
        ).fetchall()
    key_id = prefix.removeprefix("tly_")
    assert rows == [(tenant_id, "operator", "revokeApiKey", key_id)] * 2


def test_api_keys_revoke_of_an_unknown_key_says_so_and_fails(fresh_sqlite_url: str) -> None:
    done = run_tally(fresh_sqlite_url, "api-keys", "revoke", "tly_aaaaaaaaaaaaaaaa")

    assert done.returncode == 1
    assert "no API key has id 'aaaaaaaaaaaaaaaa'" in done.stderr


def test_serve_writes_one_access_line_per_request_when_asked(
    fresh_sqlite_url: str, start_server: StartServer
) -> None:
    # At log level warning too: turning the access log on is its own, explicit choice.
    server = start_server(fresh_sqlite_url, access_log="true", log_level="warning")

    with httpx.Client(base_url=server.base_url, timeout=HTTP_TIMEOUT_SECONDS) as client:
        ids = [client.get(path).headers["request-id"] for path in ("/healthz", "/v1/accounts")]

    # A line is written once its response has gone, so it may trail the answer.
    deadline = time.monotonic() + ACCESS_LINE_WAIT_SECONDS
    while True:
        access = [line for line in server.log_text().splitlines() if " tally.access " in line]
        # The start-up's readiness probes are logged as well; these are the test's two.
        lines = [line for line in access if line.split("request_id=")[1].split()[0] in ids]
        if len(lines) == len(ids) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert [line.split("request_id=")[1].split()[0] for line in lines] == ids
    assert "route=/healthz" in lines[0] and "status=200" in lines[0]
    assert "route=/v1/accounts" in lines[1] and "status=401" in lines[1]


def test_serve_writes_no_access_line_by_default(
    fresh_sqlite_url: str, start_server: StartServer
) -> None:
    server = start_server(fresh_sqlite_url)

    with httpx.Client(base_url=server.base_url, timeout=HTTP_TIMEOUT_SECONDS) as client:
        assert client.get("/healthz").status_code == 200

    assert " tally.access " not in server.log_text()

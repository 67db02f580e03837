"""Tally through a real PgBouncer in transaction pooling mode (TALLY_DB_PGBOUNCER).

PgBouncer starts on a free loopback port with fewer server connections than
Tally opens (its pool, the writer's own, the audit appender's), so consecutive
transactions of one Tally connection land on different PostgreSQL sessions: the
case in which a prepared statement kept by asyncpg would be missing ("prepared
statement ... does not exist") and a session setting would be lost.

- ``tally serve`` with TALLY_DB_PGBOUNCER=true serves concurrent writes and reads
  through it without one error, and migrates (and LISTENs) over
  TALLY_DB_DIRECT_URL, past PgBouncer;
- without the setting, PgBouncer refuses Tally's connections outright (it does not
  take the session settings Tally sends at start-up): the setting is what makes
  it work, not luck.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tally.config import Settings
from tally.errors import Unavailable
from tally.storage import make_store
from tests.conftest import fresh_postgres_database
from tests.e2e.conftest import StartServer, cli_create_tenant, free_port

CLIENTS = 16
LOAD_SECONDS = 2.0
SERVER_CONNECTIONS = 2  # PgBouncer's pool: far fewer than Tally's connections
START_TIMEOUT_SECONDS = 10.0


@pytest.fixture
def direct_url() -> Iterator[str]:
    """A database of this test's own (created and migrated), reached directly."""
    yield from fresh_postgres_database()


@contextlib.contextmanager
def pgbouncer(direct_url: str) -> Iterator[str]:
    """PgBouncer in transaction mode in front of ``direct_url``; yields its URL."""
    binary = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin")
    if binary is None:
        if os.environ.get("TALLY_TEST_SKIP_PROXIES") == "1":
            pytest.skip("pgbouncer is not installed (TALLY_TEST_SKIP_PROXIES=1)")
        pytest.fail(
            "pgbouncer is not installed: `apt-get install pgbouncer` (.ci/run does)",
            pytrace=False,
        )
    target = urlsplit(direct_url)
    user, database = target.username or "postgres", target.path.lstrip("/")
    port = free_port()
    # PgBouncer will not run as root: as nobody, it must read these files, so
    # they live in a directory of their own that others may read.
    directory = Path(tempfile.mkdtemp(prefix="tally-pgbouncer-"))
    directory.chmod(0o755)
    (directory / "users.txt").write_text(f'"{user}" ""\n')
    (directory / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"{database} = host={target.hostname} port={target.port or 5432} dbname={database}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {directory}/users.txt\n"
        "pool_mode = transaction\n"
        f"default_pool_size = {SERVER_CONNECTIONS}\nmin_pool_size = 0\n"
        "reserve_pool_size = 0\nmax_client_conn = 200\n"
        "server_reset_query =\nlog_connections = 0\nlog_disconnections = 0\n"
    )
    for path in directory.iterdir():
        path.chmod(0o644)
    args = [binary, str(directory / "pgbouncer.ini")]
    if os.geteuid() == 0:
        args[1:1] = ["-u", "nobody"]
    log = directory / "pgbouncer.log"
    with log.open("wb") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_listening(port, process, log)
        yield f"postgresql://{user}@127.0.0.1:{port}/{database}"
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        shutil.rmtree(directory, ignore_errors=True)


def _wait_listening(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"pgbouncer exited with {process.returncode}:\n{log.read_text()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise AssertionError(f"pgbouncer did not listen on {port}:\n{log.read_text()}")


async def load(base_url: str, api_key: str) -> Counter[int]:
    statuses: Counter[int] = Counter()
    headers = {"Authorization": f"Bearer {api_key}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=10) as client:
        for name in ("pgb-bank", "pgb-shop"):
            r = await client.post("/v1/accounts", json={"id": name, "currency": "USD"})
            assert r.status_code == 201, r.text
        stop_at = time.monotonic() + LOAD_SECONDS

        async def one_client(n: int) -> None:
            i = 0
            while time.monotonic() < stop_at:
                i += 1
                body = {"debit_account_id": "pgb-bank", "credit_account_id": "pgb-shop"}
                r = await client.post(
                    "/v1/transfers",
                    json={**body, "amount": 1 + i % 9},
                    headers={"Idempotency-Key": f"pgb-{n}-{i}"},
                )
                statuses[r.status_code] += 1
                statuses[(await client.get("/v1/accounts/pgb-shop")).status_code] += 1

        await asyncio.gather(*(one_client(n) for n in range(CLIENTS)))
        shop = (await client.get("/v1/accounts/pgb-shop")).json()
        bank = (await client.get("/v1/accounts/pgb-bank")).json()
        assert shop["credits_posted"] == bank["debits_posted"] > 0
    return statuses


def test_tally_serves_through_pgbouncer_in_transaction_mode(
    start_server: StartServer, direct_url: str
) -> None:
    with pgbouncer(direct_url) as bouncer_url:
        server = start_server(
            bouncer_url,
            db_pgbouncer="true",
            db_direct_url=direct_url,
            log_level="warning",
        )
        _, api_key = cli_create_tenant(direct_url, "pgbouncer")
        statuses = asyncio.run(load(server.base_url, api_key))
        print(f"\nthrough PgBouncer (transaction mode, {SERVER_CONNECTIONS} server connections):"
              f" {dict(statuses)}")  # fmt: skip
        assert set(statuses) == {200, 201}, statuses
        assert statuses[201] > 100
        assert "prepared statement" not in server.log_text()


def test_without_the_setting_pgbouncer_refuses_tallys_connections(direct_url: str) -> None:
    async def ping(url: str) -> None:
        store = make_store(Settings(database_url=url, db_connect_timeout_seconds=2))
        await store.open()
        try:
            await store.ping()
        finally:
            await store.close()

    with pgbouncer(direct_url) as bouncer_url:
        with pytest.raises(Unavailable):
            asyncio.run(ping(bouncer_url))
        asyncio.run(ping_with_setting(bouncer_url, direct_url))


async def ping_with_setting(bouncer_url: str, direct_url: str) -> None:
    settings = Settings(database_url=bouncer_url, db_pgbouncer=True, db_direct_url=direct_url)
    store = make_store(settings)
    await store.open()
    try:
        await store.ping()
    finally:
        await store.close()

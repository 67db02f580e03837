"""``tally serve --server granian``: the same app under granian, on PostgreSQL.

Two granian workers (``TALLY_HTTP_SERVER=granian``) on the run's PostgreSQL
database. Concurrent clients move money among no-overdraft accounts; afterwards
every transfer answered 201 is listed, each account's totals are the sum of its
transfers and debits equal credits. Then a SIGTERM while transfers are in flight:
the server exits by itself within its grace period, and every transfer it
answered 201 is in the ledger a new server (uvicorn, the default) reads.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections import defaultdict
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Server, StartServer, cli_create_tenant, walk

pytestmark = pytest.mark.slow

WORKERS = 2
CLIENTS = 16
TRANSFERS_PER_CLIENT = 25
ACCOUNTS = tuple(f"acc-{i}" for i in range(6))
FUNDING_AMOUNT = 1_000_000
AMOUNT_MAX = 5_000
HTTP_TIMEOUT_SECONDS = 10.0
LOAD_BEFORE_SIGTERM_SECONDS = 1.0
# Granian's workers_kill_timeout is 10 s (tally serve's grace period), plus start-up
# slack on a busy machine.
EXIT_WITHIN_SECONDS = 20.0
TEST_BUDGET_SECONDS = 120.0
TOTALS = ("debits_pending", "debits_posted", "credits_pending", "credits_posted")


def _client(base_url: str, api_key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base_url,
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=HTTP_TIMEOUT_SECONDS,
    )


async def _fund(client: httpx.AsyncClient) -> None:
    body = {"id": "bank", "currency": "USD", "normal_balance": "debit"}
    assert (await client.post("/v1/accounts", json=body)).status_code == 201
    for account in ACCOUNTS:
        body = {"id": account, "currency": "USD", "flags": {"debits_must_not_exceed_credits": True}}
        assert (await client.post("/v1/accounts", json=body)).status_code == 201
        transfer = {"debit_account_id": "bank", "credit_account_id": account}
        r = await client.post("/v1/transfers", json={**transfer, "amount": FUNDING_AMOUNT})
        assert r.status_code == 201, r.text


def _random_transfer(rng: random.Random) -> dict[str, Any]:
    debit, credit = rng.sample(ACCOUNTS, 2)
    amount = rng.randint(1, AMOUNT_MAX)
    return {"debit_account_id": debit, "credit_account_id": credit, "amount": amount}


async def _check_ledger(client: httpx.AsyncClient, created: set[str]) -> None:
    accounts = await walk(client, "/v1/accounts")
    transfers = await walk(client, "/v1/transfers")
    listed = {t["id"] for t in transfers}
    assert created <= listed, f"{len(created - listed)} transfers answered 201 are missing"
    expected: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(TOTALS, 0))
    for t in transfers:
        assert t["status"] == "posted", t
        expected[t["debit_account_id"]]["debits_posted"] += t["amount"]
        expected[t["credit_account_id"]]["credits_posted"] += t["amount"]
    for a in accounts:
        assert {k: a[k] for k in TOTALS} == expected[a["id"]], a
        if a["flags"]["debits_must_not_exceed_credits"]:
            assert a["debits_posted"] + a["debits_pending"] <= a["credits_posted"], a
    assert sum(a["debits_posted"] for a in accounts) == sum(a["credits_posted"] for a in accounts)


def test_granian_moves_money_and_the_books_balance(
    start_server: StartServer, postgres_url: str
) -> None:
    server = start_server(postgres_url, workers=WORKERS, http_server="granian")
    _, api_key = cli_create_tenant(postgres_url, "granian")
    asyncio.run(asyncio.wait_for(_move_and_check(server.base_url, api_key), TEST_BUDGET_SECONDS))


async def _move_and_check(base_url: str, api_key: str) -> None:
    created: set[str] = set()
    async with _client(base_url, api_key) as client:
        ready = await client.get("/readyz")
        assert ready.headers.get("server") == "granian", ready.headers
        await _fund(client)

        async def move(seed: int) -> None:
            rng = random.Random(seed)
            for _ in range(TRANSFERS_PER_CLIENT):
                r = await client.post("/v1/transfers", json=_random_transfer(rng))
                assert r.status_code == 201, r.text
                created.add(r.json()["id"])

        await asyncio.gather(*(move(seed) for seed in range(CLIENTS)))
        assert len(created) == CLIENTS * TRANSFERS_PER_CLIENT
        await _check_ledger(client, created)


def test_granian_finishes_requests_in_flight_when_stopped(
    start_server: StartServer, postgres_url: str
) -> None:
    server = start_server(postgres_url, workers=WORKERS, http_server="granian")
    _, api_key = cli_create_tenant(postgres_url, "granian stop")
    created = asyncio.run(asyncio.wait_for(_stop_under_load(server, api_key), TEST_BUDGET_SECONDS))
    assert server.process.returncode == 0, server.log_tail()
    assert "Traceback" not in server.log_text(), server.log_tail()
    assert created, "no transfer was answered before the SIGTERM"
    reader = start_server(postgres_url, migrate=False)

    async def check() -> None:
        async with _client(reader.base_url, api_key) as client:
            await _check_ledger(client, created)

    asyncio.run(asyncio.wait_for(check(), TEST_BUDGET_SECONDS))


async def _stop_under_load(server: Server, api_key: str) -> set[str]:
    """Transfers from every client, a SIGTERM to the server's group a second in,
    and the transfers it answered 201 once it has exited."""
    created: set[str] = set()
    async with _client(server.base_url, api_key) as client:
        await _fund(client)
        stopping = asyncio.Event()

        async def move(seed: int) -> None:
            rng = random.Random(seed)
            while True:
                try:
                    r = await client.post("/v1/transfers", json=_random_transfer(rng))
                except httpx.TransportError:
                    assert stopping.is_set(), "a connection failed before the SIGTERM"
                    return
                if r.status_code != 201:
                    # Only a stopping server may refuse (e.g. 503 while it drains).
                    assert stopping.is_set() and r.status_code >= 500, r.text
                    return
                created.add(r.json()["id"])

        movers = [asyncio.create_task(move(seed)) for seed in range(CLIENTS)]
        await asyncio.sleep(LOAD_BEFORE_SIGTERM_SECONDS)
        stopping.set()
        os.killpg(server.process.pid, signal.SIGTERM)
        started = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*movers), EXIT_WITHIN_SECONDS)
        while server.process.poll() is None:
            assert time.monotonic() - started < EXIT_WITHIN_SECONDS, "granian did not exit"
            await asyncio.sleep(0.1)
    return created

"""Two ``tally serve`` processes behind a real load balancer, one SIGKILLed under load.

For each proxy in ``deploy/`` (nginx at L7 over TLS and HTTP/2; HAProxy at L4),
two servers run on their own ports over the run's PostgreSQL database, and the
proxy starts on a free loopback port from its template. ``CLIENTS`` clients send
keyed transfers through the proxy; after ``KILL_AFTER_SECONDS`` one server's whole
process group gets SIGKILL, and the load goes on for ``AFTER_KILL_SECONDS``.

A request cut off by the kill gets an error from the proxy (502) or a broken
connection; its client retries with the same Idempotency-Key and the same body,
and the surviving process answers: a 201, or the stored answer if the dead one
had committed it. Afterwards:

- no response was a 500 (a proxy's 502/504 or a broken connection are expected
  while the kill is noticed; nothing else);
- every logical transfer got a final 201, and every acknowledged transfer is in
  the ledger, once, with its amount;
- debits equal credits, and the accounts' totals equal the sum of the transfers.

Bounded: every request has a deadline, the load a fixed duration; about 15 s a
proxy on this machine. The proxies must be installed (.ci/run installs them).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.e2e import balancers
from tests.e2e.conftest import Server, StartServer, cli_create_tenant, free_port, walk

CLIENTS = 12
KILL_AFTER_SECONDS = 1.5
AFTER_KILL_SECONDS = 2.5
REQUEST_DEADLINE_SECONDS = 10.0
RETRY_PAUSE_SECONDS = 0.05
HTTP_TIMEOUT = httpx.Timeout(5.0, connect=2.0)
BANK, ACCOUNTS = "lb-bank", tuple(f"lb-{i}" for i in range(4))
# The only failures a client may see while a process dies: the proxy's "no answer
# from upstream" and a connection that breaks. Never a 500.
TRANSIENT_STATUSES = {502, 503, 504}


@dataclass
class Load:
    acked: dict[str, int] = field(default_factory=dict)  # transfer id -> amount
    statuses: Counter[int] = field(default_factory=Counter)
    broken_connections: int = 0
    retried_then_answered: int = 0
    replayed: int = 0
    failures: list[str] = field(default_factory=list)


async def transfer(client: httpx.AsyncClient, load: Load, key: str, body: bytes) -> None:
    """One logical transfer: retried under its key until it is answered."""
    headers = {"Idempotency-Key": key, "Content-Type": "application/json"}
    deadline = time.monotonic() + REQUEST_DEADLINE_SECONDS
    attempts = 0
    while time.monotonic() < deadline:
        attempts += 1
        try:
            r = await client.post("/v1/transfers", content=body, headers=headers)
        except httpx.TransportError:
            load.broken_connections += 1
            await asyncio.sleep(RETRY_PAUSE_SECONDS)
            continue
        load.statuses[r.status_code] += 1
        if r.status_code in TRANSIENT_STATUSES or r.status_code == 409:
            await asyncio.sleep(RETRY_PAUSE_SECONDS)
            continue
        if r.status_code != 201:
            load.failures.append(f"{key}: {r.status_code} {r.text[:300]}")
            return
        created = r.json()
        load.acked[created["id"]] = created["amount"]
        load.retried_then_answered += attempts > 1
        load.replayed += r.headers.get("idempotent-replayed") == "true"
        return
    load.failures.append(f"{key}: no answer within {REQUEST_DEADLINE_SECONDS} s")


async def run_load(client: httpx.AsyncClient, victim: Server, tag: str) -> Load:
    load = Load()
    stop_at = time.monotonic() + KILL_AFTER_SECONDS + AFTER_KILL_SECONDS

    async def one_client(n: int) -> None:
        i = 0
        while time.monotonic() < stop_at:
            i += 1
            body = {
                "debit_account_id": BANK,
                "credit_account_id": ACCOUNTS[(n + i) % len(ACCOUNTS)],
                "amount": 1 + (n * 7 + i) % 50,
            }
            await transfer(client, load, f"{tag}-{n}-{i}", json.dumps(body).encode())

    async def kill() -> None:
        await asyncio.sleep(KILL_AFTER_SECONDS)
        os.killpg(victim.process.pid, signal.SIGKILL)

    await asyncio.gather(kill(), *(one_client(n) for n in range(CLIENTS)))
    return load


async def check_ledger(client: httpx.AsyncClient, load: Load) -> None:
    listed = await walk(client, "/v1/transfers", account_id=BANK)
    amounts = {t["id"]: t["amount"] for t in listed}
    assert len(amounts) == len(listed), "a transfer listed twice"
    missing = load.acked.keys() - amounts.keys()
    assert not missing, f"{len(missing)} acknowledged transfers are not in the ledger"
    for transfer_id, amount in load.acked.items():
        assert amounts[transfer_id] == amount, transfer_id
    bank = (await client.get(f"/v1/accounts/{BANK}")).json()
    credits = 0
    for name in ACCOUNTS:
        credits += (await client.get(f"/v1/accounts/{name}")).json()["credits_posted"]
    assert bank["debits_posted"] == credits == sum(amounts.values())


def set_up(client: httpx.Client) -> None:
    for name in (BANK, *ACCOUNTS):
        r = client.post("/v1/accounts", json={"id": name, "currency": "USD"})
        assert r.status_code in (201, 409), r.text


def report(name: str, load: Load, seconds: float) -> None:
    print(
        f"\n{name}: {len(load.acked)} transfers acknowledged in {seconds:.1f} s, "
        f"statuses {dict(load.statuses)}, broken connections {load.broken_connections}, "
        f"answered after a retry {load.retried_then_answered} "
        f"(of which replays of a commit by the killed process: {load.replayed})"
    )


def assert_survived(load: Load) -> None:
    assert not load.failures, load.failures[:10]
    assert load.statuses[500] == 0
    assert set(load.statuses) <= {201, 409} | TRANSIENT_STATUSES, load.statuses
    assert len(load.acked) > 100, "too little load to prove anything"


@pytest.fixture
def pair(start_server: StartServer, postgres_url: str) -> tuple[Server, Server, str]:
    """Two servers on one database, and an API key of a tenant of their own."""
    settings = {
        "trusted_proxies": "127.0.0.1",
        "log_format": "json",
        "access_log": "true",
        "log_level": "warning",
    }
    first = start_server(postgres_url, **settings)
    second = start_server(postgres_url, migrate=False, **settings)
    _, api_key = cli_create_tenant(postgres_url, f"lb-{time.monotonic_ns()}")
    return first, second, api_key


def test_nginx_keeps_every_acknowledged_transfer_when_a_process_dies(
    pair: tuple[Server, Server, str], tmp_path: Path
) -> None:
    first, second, api_key = pair
    port = free_port()
    ports = [int(s.base_url.rpartition(":")[2]) for s in (first, second)]
    with balancers.nginx(tmp_path, port, ports) as certificate:
        base = f"https://127.0.0.1:{port}"
        trust = ssl.create_default_context(cafile=str(certificate))
        headers = {"Authorization": f"Bearer {api_key}"}
        with httpx.Client(base_url=base, headers=headers, verify=trust) as sync:
            set_up(sync)
            check_forwarding(sync, second)

        async def scenario() -> tuple[Load, float]:
            async with httpx.AsyncClient(
                base_url=base, headers=headers, verify=trust, http2=True,
                timeout=HTTP_TIMEOUT,
            ) as client:  # fmt: skip
                started = time.monotonic()
                load = await run_load(client, first, "nginx")
                seconds = time.monotonic() - started
                assert (await client.get("/healthz")).http_version == "HTTP/2"
                await check_ledger(client, load)
                return load, seconds

        load, seconds = asyncio.run(scenario())
    report("nginx", load, seconds)
    assert_survived(load)


def check_forwarding(client: httpx.Client, server: Server) -> None:
    """Through nginx, Tally sees the client nginx forwarded for (the peer is a
    trusted proxy) and logs it, with nginx's request id, as JSON."""
    claimed = "203.0.113.66"
    for _ in range(4):  # round robin: at least one of these reaches ``server``
        r = client.get("/v1/accounts", headers={"X-Forwarded-For": claimed})
        assert r.status_code == 200, r.text
    assert len(r.headers["request-id"]) == 32  # nginx's $request_id, passed on
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [json.loads(x) for x in server.log_text().splitlines() if x.startswith("{")]
        access = [x for x in lines if x.get("logger") == "tally.access"]
        if access:
            break
        time.sleep(0.1)
    assert access, server.log_tail()
    # nginx appended 127.0.0.1 (trusted) to the client's header: the client
    # claimed 203.0.113.66 and, being the first untrusted hop, is believed to be it.
    assert access[-1]["client"] == claimed, access[-1]
    assert len(access[-1]["request_id"]) == 32
    assert access[-1]["status"] == 200


def test_haproxy_keeps_every_acknowledged_transfer_when_a_process_dies(
    pair: tuple[Server, Server, str], tmp_path: Path
) -> None:
    first, second, api_key = pair
    port = free_port()
    ports = [int(s.base_url.rpartition(":")[2]) for s in (first, second)]
    with balancers.haproxy(tmp_path, port, ports):
        base = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {api_key}"}
        with httpx.Client(base_url=base, headers=headers) as sync:
            set_up(sync)

        async def scenario() -> tuple[Load, float]:
            async with httpx.AsyncClient(
                base_url=base, headers=headers, timeout=HTTP_TIMEOUT
            ) as client:
                started = time.monotonic()
                load = await run_load(client, first, "haproxy")
                seconds = time.monotonic() - started
                await check_ledger(client, load)
                return load, seconds

        load, seconds = asyncio.run(scenario())
    report("haproxy", load, seconds)
    assert_survived(load)

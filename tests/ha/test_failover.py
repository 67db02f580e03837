"""The PostgreSQL primary dies under load: no acknowledged transfer is lost.

``make ha-test`` (TALLY_HA_TEST=1; not part of ``make test``: about a minute for
each route). A three-node Patroni cluster over a three-member etcd runs with
synchronous replication (tests/ha/cluster.py). ``tally serve`` follows whichever
node is primary, by one of two routes: the multi-host URL with
``target_session_attrs=read-write``, or one address, HAProxy, which asks each
node's Patroni REST API which is primary (deploy/haproxy/patroni.cfg.template).
``CLIENTS`` clients send keyed transfers; after ``KILL_AFTER_SECONDS`` the
primary's Patroni and PostgreSQL get SIGKILL together.

While no primary is elected, Tally answers 503 with ``Retry-After`` (the clients
wait that long and retry under the same key); a commit cut off mid-flight is
answered 503 too, and its retry replays or applies it once. Afterwards:

- no 500, ever; every 503 carried Retry-After;
- every logical transfer got its 201 within its deadline;
- every acknowledged transfer is in the ledger on the new primary, once, with its
  amount; debits equal credits; the accounts' totals are the sum of the transfers;
- the window (kill to the first write acknowledged by the new primary) is
  measured and printed, with the 503s seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.e2e import balancers
from tests.e2e.conftest import cli_create_tenant, free_port, run_tally, tally_server, walk
from tests.ha.cluster import Cluster, patroni_cluster

pytestmark = pytest.mark.skipif(
    os.environ.get("TALLY_HA_TEST") != "1", reason="the failover test runs with make ha-test"
)

CLIENTS = 16
KILL_AFTER_SECONDS = 3.0
AFTER_RECOVERY_SECONDS = 3.0
LOAD_SECONDS_MAX = 90.0
REQUEST_DEADLINE_SECONDS = 75.0
RETRY_PAUSE_SECONDS_MAX = 1.0
SYNC_TIMEOUT_SECONDS = 30.0
BANK, ACCOUNTS = "ha-bank", tuple(f"ha-{i}" for i in range(4))


@dataclass
class Load:
    acked: dict[str, int] = field(default_factory=dict)
    statuses: Counter[int] = field(default_factory=Counter)
    without_retry_after: int = 0
    broken: int = 0
    failures: list[str] = field(default_factory=list)
    killed_at: float | None = None
    first_ack_after_kill: float | None = None
    unavailable: list[float] = field(default_factory=list)  # when each 503 came


async def transfer(client: httpx.AsyncClient, load: Load, key: str, amount: int, n: int) -> None:
    body = {"debit_account_id": BANK, "credit_account_id": ACCOUNTS[n % 4], "amount": amount}
    deadline = time.monotonic() + REQUEST_DEADLINE_SECONDS
    while time.monotonic() < deadline:
        try:
            r = await client.post("/v1/transfers", json=body, headers={"Idempotency-Key": key})
        except httpx.TransportError:
            load.broken += 1
            await asyncio.sleep(0.1)
            continue
        load.statuses[r.status_code] += 1
        if r.status_code in (503, 409):
            retry_after = r.headers.get("retry-after")
            if r.status_code == 503:
                load.unavailable.append(time.monotonic())
                load.without_retry_after += retry_after is None
            await asyncio.sleep(min(float(retry_after or 0.1), RETRY_PAUSE_SECONDS_MAX))
            continue
        if r.status_code != 201:
            load.failures.append(f"{key}: {r.status_code} {r.text[:300]}")
            return
        now = time.monotonic()
        outage_seen = load.killed_at is not None and any(
            t >= load.killed_at for t in load.unavailable[-CLIENTS:]
        )
        if outage_seen and load.first_ack_after_kill is None:
            # The first write the new primary acknowledged (requests that were in
            # flight at the kill and answered from the old one's last moments
            # come before any 503 and do not count).
            load.first_ack_after_kill = now
        load.acked[r.json()["id"]] = amount
        return
    load.failures.append(f"{key}: no 201 within {REQUEST_DEADLINE_SECONDS} s")


async def run_load(client: httpx.AsyncClient, cluster: Cluster) -> Load:
    load = Load()
    started = time.monotonic()

    def done() -> bool:
        if time.monotonic() - started > LOAD_SECONDS_MAX:
            return True
        ack = load.first_ack_after_kill
        return ack is not None and time.monotonic() > ack + AFTER_RECOVERY_SECONDS

    async def one_client(n: int) -> None:
        i = 0
        while not done():
            i += 1
            await transfer(client, load, f"ha-{n}-{i}", 1 + (n * 5 + i) % 40, n)

    async def kill() -> None:
        await asyncio.sleep(KILL_AFTER_SECONDS)
        leader = cluster.leader(timeout_seconds=1)
        load.killed_at = time.monotonic()
        await asyncio.to_thread(cluster.kill, leader)

    await asyncio.gather(kill(), *(one_client(n) for n in range(CLIENTS)))
    return load


async def check_ledger(client: httpx.AsyncClient, load: Load) -> None:
    listed = await walk(client, "/v1/transfers", account_id=BANK)
    amounts = {t["id"]: t["amount"] for t in listed}
    assert len(amounts) == len(listed), "a transfer listed twice"
    lost = load.acked.keys() - amounts.keys()
    assert not lost, f"{len(lost)} acknowledged transfers were lost in the failover"
    assert all(amounts[i] == a for i, a in load.acked.items())
    bank = (await client.get(f"/v1/accounts/{BANK}")).json()
    credits = sum(
        [(await client.get(f"/v1/accounts/{a}")).json()["credits_posted"] for a in ACCOUNTS]
    )
    assert bank["debits_posted"] == credits == sum(amounts.values())


def prepare(cluster: Cluster, url: str) -> None:
    leader = cluster.leader()
    with psycopg.connect(cluster.node_url(leader, "postgres"), autocommit=True) as conn:
        conn.execute("CREATE DATABASE tally")
        # Patroni names a synchronous standby on its next loop after one streams.
        deadline = time.monotonic() + SYNC_TIMEOUT_SECONDS
        while True:
            query = "SELECT sync_state FROM pg_stat_replication"
            states = [row[0] for row in conn.execute(query)]
            if "sync" in states or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert "sync" in states, f"no synchronous standby: {states}"
    done = run_tally(url, "migrate")  # the way Tally reaches the primary
    assert done.returncode == 0, done.stderr


def report(load: Load) -> str:
    assert load.killed_at is not None and load.first_ack_after_kill is not None
    window = load.first_ack_after_kill - load.killed_at
    after_kill = [t - load.killed_at for t in load.unavailable if t >= load.killed_at]
    first = min(after_kill, default=0)
    return (
        f"failover: first 503 at +{first:.1f} s, writes resumed {window:.1f} s after the "
        "primary was killed; "
        f"{len(load.acked)} transfers acknowledged, statuses {dict(load.statuses)}, "
        f"503s after the kill {len(after_kill)} (last at +{max(after_kill, default=0):.1f} s), "
        f"broken connections {load.broken}"
    )


@contextlib.contextmanager
def primary_url(cluster: Cluster, route: str, directory: Path) -> Iterator[str]:
    """How Tally reaches the primary: the multi-host URL, or one host, HAProxy,
    which follows Patroni's REST checks (deploy/haproxy/patroni.cfg.template)."""
    if route == "multi-host":
        yield cluster.url
        return
    binary = balancers.require("haproxy", "haproxy")
    port = free_port()
    servers = "\n".join(
        f"    server {n.name} 127.0.0.1:{n.pg_port} check port {n.rest_port}" for n in cluster.nodes
    )
    config = balancers.render(
        balancers.DEPLOY / "haproxy" / "patroni.cfg.template",
        LISTEN=f"127.0.0.1:{port}",
        POSTGRES_SERVERS=servers,
    )
    (directory / "patroni-haproxy.cfg").write_text(config)
    args = [binary, "-db", "-f", str(directory / "patroni-haproxy.cfg")]
    with balancers.running(args, port, directory / "haproxy.out"):
        yield f"postgresql://postgres@127.0.0.1:{port}/tally"


@pytest.mark.parametrize("route", ["multi-host", "haproxy"])
def test_every_acknowledged_transfer_survives_the_primarys_death(
    tmp_path: Path, route: str
) -> None:
    with patroni_cluster() as cluster, primary_url(cluster, route, tmp_path) as url:
        prepare(cluster, url)
        _, api_key = cli_create_tenant(url, "ha")
        settings = {
            "db_connect_timeout_seconds": "2",
            "db_unavailable_retry_after_seconds": "1",
            "log_level": "warning",
        }
        with tally_server(url, tmp_path / "serve.log", migrate=False, **settings) as server:
            headers = {"Authorization": f"Bearer {api_key}"}

            async def scenario() -> Load:
                async with httpx.AsyncClient(
                    base_url=server.base_url, headers=headers, timeout=10
                ) as client:
                    for name in (BANK, *ACCOUNTS):
                        r = await client.post("/v1/accounts", json={"id": name, "currency": "USD"})
                        assert r.status_code == 201, r.text
                    load = await run_load(client, cluster)
                    await check_ledger(client, load)
                    return load

            load = asyncio.run(scenario())
            print(f"\n{route}: " + report(load))
            assert not load.failures, load.failures[:10]
            assert load.statuses[500] == 0
            assert load.without_retry_after == 0
            assert set(load.statuses) <= {201, 409, 503}, load.statuses
            assert "Traceback" not in server.log_text(), server.log_tail()

"""Webhooks end to end: real ``tally serve`` processes on PostgreSQL, a real
receiver on 127.0.0.1, signatures checked with the ``standardwebhooks`` package.

- the receiver of docs/webhooks.md, run as the doc shows it, prints every event
  exactly as ``GET /v1/events`` lists it;
- 500s and timeouts are retried under one webhook-id; a 410 disables the
  endpoint; a dead letter is replayed under its webhook-id;
- without ``TALLY_WEBHOOKS_ALLOW_LOOPBACK``, a URL on ``localhost`` (a name
  that resolves to 127.0.0.1) or any loopback address is refused, and nothing
  connects to it;
- ``tally serve --workers 2``: the two workers share the endpoints; the one
  delivering is SIGKILLed mid-attempt, and the other delivers it, same webhook-id.

Each test has a database of its own, so no endpoint of another test is in its ring.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from standardwebhooks import Webhook

from tests.conftest import fresh_postgres_database
from tests.e2e.conftest import StartServer, cli_create_tenant, free_port
from tests.receiver import Answer, receiving

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
FAST = {
    "webhooks_allow_loopback": "true",
    "webhooks_poll_interval_seconds": "0.05",
    "webhooks_retry_base_seconds": "0.3",
    "webhooks_retry_jitter": "0",
    # Far above what an attempt takes, even paused on a loaded CI machine: only an
    # attempt a test holds on purpose times out, so attempt counts are exact.
    "webhooks_attempt_timeout_seconds": "5",
    "webhooks_lease_margin_seconds": "0.5",
    "webhooks_heartbeat_seconds": "0.2",
    "webhooks_worker_ttl_seconds": "1.5",
}


@pytest.fixture
def database() -> Iterator[str]:
    """A database of the test's own, dropped after its servers stopped (ask for it
    before ``start_server``)."""
    yield from fresh_postgres_database()


class Client:
    def __init__(self, base_url: str, api_key: str) -> None:
        self.http = httpx.Client(
            base_url=base_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=10
        )

    def ok(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        r = self.http.request(method, path, json=body)
        assert r.status_code == status, r.text
        return r.json() if r.content else None

    def endpoint(self, url: str, types: list[str] | None = None) -> tuple[str, str]:
        created = self.ok(
            "POST", "/v1/webhook-endpoints", {"url": url, "event_types": types or ["*"]}, 201
        )
        return created["webhook_endpoint"]["id"], created["secret"]

    def deliveries(self, endpoint_id: str) -> list[dict[str, Any]]:
        return self.ok("GET", f"/v1/webhook-endpoints/{endpoint_id}/deliveries")["data"]  # type: ignore[no-any-return]

    def wait(self, endpoint_id: str, predicate: Any, timeout_seconds: float = 20) -> Any:
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            found = self.deliveries(endpoint_id)
            if predicate(found):
                return found
            time.sleep(0.1)
        raise AssertionError(f"deliveries never got there: {found}")


def client_of(start_server: StartServer, database: str, **settings: str) -> Client:
    server = start_server(database, **{**FAST, **settings})
    _, key = cli_create_tenant(database, "hooks")
    return Client(server.base_url, key)


def documented_receiver() -> str:
    """The receiver's code, as docs/webhooks.md shows it."""
    text = (ROOT / "docs" / "webhooks.md").read_text()
    match = re.search(r"```python\n(# receiver\.py.*?)```", text, re.DOTALL)
    assert match, "docs/webhooks.md shows the receiver in a ```python block starting # receiver.py"
    return match.group(1)


def test_the_documented_receiver_prints_every_event_verified(
    database: str, start_server: StartServer, tmp_path: Path
) -> None:
    c = client_of(start_server, database)
    port = free_port()
    script = tmp_path / "receiver.py"
    script.write_text(documented_receiver())
    endpoint_id, secret = c.endpoint(f"http://127.0.0.1:{port}/")
    env = {**os.environ, "TALLY_WEBHOOK_SECRET": secret, "PORT": str(port)}
    out = (tmp_path / "receiver.out").open("w+")
    receiver = subprocess.Popen(
        [sys.executable, str(script)], env=env, stdout=out, stderr=subprocess.DEVNULL
    )
    try:
        for account in ("a", "b"):
            c.ok("POST", "/v1/accounts", {"id": account, "currency": "USD"}, 201)
        c.ok("POST", "/v1/transfers", {"debit_account_id": "a", "credit_account_id": "b",
                                        "amount": 70}, 201)  # fmt: skip
        c.wait(endpoint_id, lambda d: len(d) == 3 and {x["status"] for x in d} == {"succeeded"})
    finally:
        receiver.terminate()
        receiver.wait(10)
    out.seek(0)
    lines = out.read().split("\n")
    events = c.ok("GET", "/v1/events")["data"]
    assert [line for line in lines if line] == [
        f"{e['sequence']} {e['type']} {e['data']['id']}" for e in events
    ]


def test_failures_are_retried_410_disables_and_a_dead_letter_is_replayed(
    database: str, start_server: StartServer
) -> None:
    # The second attempt is held until long after it timed out; the third has 2 s.
    c = client_of(
        start_server, database, webhooks_attempts_max="3", webhooks_attempt_timeout_seconds="2"
    )
    with receiving() as flaky, receiving() as gone:
        flaky.script = [Answer(500), Answer(204, delay_seconds=30)]  # then a timeout
        flaky_id, flaky_secret = c.endpoint(flaky.url)
        gone.default = Answer(410)
        gone_id, _ = c.endpoint(gone.url.replace("127.0.0.1", "localhost"))
        c.ok("POST", "/v1/accounts", {"id": "a", "currency": "USD"}, 201)
        got = flaky.wait_count(3)
        assert len({r.headers["webhook-id"] for r in got}) == 1
        for r in got:
            assert Webhook(flaky_secret).verify(r.body, r.headers)["data"]["id"] == "a"
        (done,) = c.wait(flaky_id, lambda d: d and d[0]["status"] == "succeeded")
        assert done["attempts"] == 3
        (dead,) = c.wait(gone_id, lambda d: d and d[0]["status"] == "failed")
        assert dead["last_status_code"] == 410
        endpoint = c.ok("GET", f"/v1/webhook-endpoints/{gone_id}")
        assert (endpoint["status"], endpoint["disabled_reason"]) == ("disabled", "gone")

        flaky.default = Answer(503)
        c.ok("POST", "/v1/accounts", {"id": "b", "currency": "USD"}, 201)
        dead = c.wait(flaky_id, lambda d: len(d) == 2 and d[0]["status"] == "failed")[0]
        assert dead["attempts"] == 3
        flaky.default = Answer(200)
        replay = f"/v1/webhook-endpoints/{flaky_id}/deliveries/{dead['id']}/replay"
        c.ok("POST", replay, None, 202)
        c.wait(flaky_id, lambda d: d[0]["status"] == "succeeded")
        assert flaky.received[-1].headers["webhook-id"] == dead["id"]


def test_loopback_urls_are_refused_without_the_development_setting(
    database: str, start_server: StartServer
) -> None:
    server = start_server(database)  # the defaults: no loopback, https only
    _, key = cli_create_tenant(database, "ssrf")
    c = Client(server.base_url, key)
    with receiving() as receiver:
        for url in (
            f"https://localhost:{receiver.port}/hooks",
            f"https://127.0.0.1:{receiver.port}/hooks",
            f"https://[::1]:{receiver.port}/hooks",
            receiver.url,  # plain http
            "https://169.254.169.254/latest/meta-data/",
        ):
            r = c.http.post("/v1/webhook-endpoints", json={"url": url, "event_types": ["*"]})
            assert r.status_code == 422, (url, r.text)
            assert r.headers["content-type"] == "application/problem+json"
            assert r.json()["code"] == "url_not_allowed", r.text
        c.ok("POST", "/v1/accounts", {"currency": "USD"}, 201)
        time.sleep(0.5)
        assert receiver.received == []
    assert c.ok("GET", "/v1/webhook-endpoints")["data"] == []


def lease_owner(database: str, webhook_id: str) -> str | None:
    with psycopg.connect(database, autocommit=True) as conn:
        row = conn.execute(
            "SELECT lease_owner FROM webhook_deliveries WHERE id = %s", (webhook_id,)
        ).fetchone()
    return None if row is None else row[0]


def live_workers(database: str) -> list[str]:
    with psycopg.connect(database, autocommit=True) as conn:
        rows = conn.execute("SELECT id FROM webhook_workers ORDER BY id").fetchall()
    return [r[0] for r in rows]


def test_a_worker_killed_mid_delivery_loses_nothing_and_the_retry_keeps_the_id(
    database: str, start_server: StartServer
) -> None:
    settings = {"webhooks_attempt_timeout_seconds": "8", "webhooks_lease_margin_seconds": "1"}
    c = client_of(start_server, database, workers="2", **settings)
    deadline = time.monotonic() + 10
    while len(live_workers(database)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(live_workers(database)) == 2, live_workers(database)
    with receiving() as receiver:
        receiver.script = [Answer(204, delay_seconds=30)]  # holds the first attempt
        endpoint_id, secret = c.endpoint(receiver.url)
        c.ok("POST", "/v1/accounts", {"id": "a", "currency": "USD"}, 201)
        (first,) = receiver.wait_count(1)
        webhook_id = first.headers["webhook-id"]
        owner = lease_owner(database, webhook_id)
        assert owner is not None and owner in live_workers(database)
        pid = int(owner.split(":")[1])
        os.kill(pid, signal.SIGKILL)
        got = receiver.wait_count(2, timeout_seconds=30)
        assert got[1].headers["webhook-id"] == webhook_id
        assert Webhook(secret).verify(got[1].body, got[1].headers)["data"]["id"] == "a"
        assert Webhook(secret).verify(first.body, first.headers)["data"]["id"] == "a"
        # Not before the lease (8 s + 1 s from the claim) ran out.
        assert got[1].at - first.at >= 8.5
        (done,) = c.wait(endpoint_id, lambda d: d and d[0]["status"] == "succeeded")
        assert done["id"] == webhook_id
        assert len(receiver.received) == 2

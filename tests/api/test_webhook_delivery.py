"""Webhook delivery in-process, to a real receiver on 127.0.0.1: signed per the
Standard Webhooks spec (checked with its reference package), at least once,
in order per endpoint, retried with backoff, Retry-After honoured, 410
disabling the endpoint, dead letters visible and replayable.

Each test has a database of its own: a dispatcher joins the ring of every
process on its database, and must not meet another test's endpoints.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from standardwebhooks import Webhook
from starlette.testclient import TestClient

from tally.webhooks import queue, ring
from tests.conftest import create_tenant
from tests.receiver import Answer, Receiver, receiving
from tests.security.conftest import Db, new_database, serve

HELD_SECONDS = 30.0  # an answer held past any attempt's timeout
FAST: dict[str, Any] = {
    "webhooks_deliver": True,
    "webhooks_allow_loopback": True,
    "webhooks_poll_interval_seconds": 0.05,
    "webhooks_retry_base_seconds": 0.2,
    "webhooks_retry_jitter": 0.0,
    # Far above what an attempt takes, even paused on a loaded CI machine: only an
    # attempt a test holds on purpose times out, so attempt counts are exact.
    "webhooks_attempt_timeout_seconds": 5.0,
    "webhooks_lease_margin_seconds": 0.5,
    "webhooks_heartbeat_seconds": 0.2,
    "webhooks_worker_ttl_seconds": 2.0,
    "rate_limit_per_second": 1_000_000,
    "rate_limit_burst": 1_000_000,
}


@dataclass
class Hooked:
    client: TestClient
    headers: dict[str, str]
    receiver: Receiver
    endpoint_id: str
    secret: str
    database_url: str

    def get(self, path: str, **kwargs: Any) -> Any:
        r = self.client.get(path, headers=self.headers, **kwargs)
        assert r.status_code == 200, r.text
        return r.json()

    def post(self, path: str, body: Any = None) -> Any:
        return self.client.post(path, json=body, headers=self.headers)

    def account(self, account_id: str) -> None:
        r = self.post("/v1/accounts", {"id": account_id, "currency": "USD"})
        assert r.status_code == 201, r.text

    def deliveries(self, **params: str) -> list[dict[str, Any]]:
        path = f"/v1/webhook-endpoints/{self.endpoint_id}/deliveries"
        return self.get(path, params=params)["data"]  # type: ignore[no-any-return]

    def wait_deliveries(self, predicate: Any, timeout_seconds: float = 15.0) -> list[Any]:
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            found = self.deliveries()
            if predicate(found):
                return found
            time.sleep(0.05)
        raise AssertionError(f"deliveries never reached the state: {found}")


@contextmanager
def hooked(
    database_url: str, event_types: list[str] | None = None, **settings: Any
) -> Iterator[Hooked]:
    with new_database(database_url) as url, receiving() as receiver:
        _, key = create_tenant(url, "hooks")
        headers = {"Authorization": f"Bearer {key}"}
        with serve(url, **{**FAST, **settings}) as client:
            body = {"url": receiver.url, "event_types": event_types or ["account.created"]}
            r = client.post("/v1/webhook-endpoints", json=body, headers=headers)
            assert r.status_code == 201, r.text
            created = r.json()
            yield Hooked(
                client, headers, receiver, created["webhook_endpoint"]["id"], created["secret"], url
            )


def test_an_event_is_delivered_signed_as_get_events_shows_it(database_url: str) -> None:
    with hooked(database_url) as h:
        h.account("a1")
        (got,) = h.receiver.wait_count(1)
        event = Webhook(h.secret).verify(got.body, got.headers)
        (listed,) = h.get("/v1/events")["data"]
        assert event == listed
        assert (
            got.body
            == h.client.get("/v1/events", headers=h.headers).content[
                len(b'{"data":[') : len(b'{"data":[') + len(got.body)
            ]
        )
        assert got.headers["content-type"] == "application/json"
        assert got.path == "/hooks"
        (delivery,) = h.wait_deliveries(lambda d: d and d[0]["status"] == "succeeded")
        assert delivery["id"] == got.headers["webhook-id"]
        assert (delivery["attempts"], delivery["last_status_code"]) == (1, 204)
        assert delivery["event_sequence"] == listed["sequence"]
        assert delivery["next_attempt_at"] is None


def test_commits_wake_deliveries_without_reading_the_endpoints_each_time(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every commit of a tenant with an endpoint wakes the dispatcher; the list of
    enabled endpoints is read once a poll interval, or at once when one is created
    here."""
    reads: list[int] = []
    read = queue.enabled_endpoints

    async def counted(store: Any) -> list[tuple[str, str]]:
        found = await read(store)
        reads.append(len(found))
        return found

    monkeypatch.setattr(queue, "enabled_endpoints", counted)
    # The poll is 30 s away: only wakes can deliver within this test.
    with hooked(database_url, webhooks_poll_interval_seconds=30.0) as h:
        h.account("a1")
        h.receiver.wait_count(1)  # the new endpoint was read at once
        assert reads[-1] == 1
        seen = len(reads)
        for i in range(2, 11):
            h.account(f"a{i}")
        got = h.receiver.wait_count(10)
        assert [json.loads(g.body)["data"]["id"] for g in got] == [f"a{i}" for i in range(1, 11)]
        assert len(reads) == seen


def test_a_commit_wakes_a_round_only_for_a_tenant_with_an_endpoint(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another tenant's commit has nothing to deliver: it runs no round (a round
    and its timer had been part of every lone write's cost)."""
    rounds: list[str] = []
    claim = queue.claim

    async def counted(store: Any, endpoint_ids: list[str], *args: Any, **kwargs: Any) -> Any:
        rounds.append(",".join(endpoint_ids))
        return await claim(store, endpoint_ids, *args, **kwargs)

    monkeypatch.setattr(queue, "claim", counted)
    # The poll is 30 s away: every round here is a wake's.
    with hooked(database_url, webhooks_poll_interval_seconds=30.0) as h:
        h.account("a1")
        h.receiver.wait_count(1)
        h.wait_deliveries(lambda d: d and d[0]["status"] == "succeeded")
        time.sleep(0.3)  # the round that the finished attempt wakes
        before = len(rounds)
        _, other_key = create_tenant(h.database_url, "no hooks")
        other = {"Authorization": f"Bearer {other_key}"}
        for i in range(5):
            body = {"id": f"b{i}", "currency": "USD"}
            r = h.client.post("/v1/accounts", json=body, headers=other)
            assert r.status_code == 201, r.text
        time.sleep(0.3)
        assert len(rounds) == before
        h.account("a2")  # the hooked tenant's commit still wakes one at once
        got = h.receiver.wait_count(2)
        assert json.loads(got[1].body)["data"]["id"] == "a2"
        assert len(rounds) > before
        assert set(rounds) == {h.endpoint_id}


def test_only_subscribed_types_are_delivered(database_url: str) -> None:
    with hooked(database_url, event_types=["transfer.created"]) as h:
        h.account("a1")
        h.account("a2")
        r = h.post("/v1/transfers", {"debit_account_id": "a1", "credit_account_id": "a2",
                                      "amount": 5})  # fmt: skip
        assert r.status_code == 201, r.text
        (got,) = h.receiver.wait_count(1)
        assert Webhook(h.secret).verify(got.body, got.headers)["type"] == "transfer.created"
        time.sleep(0.3)
        assert len(h.receiver.received) == 1


def test_a_500_is_retried_with_backoff_under_the_same_webhook_id(database_url: str) -> None:
    with hooked(database_url) as h:
        h.receiver.script = [Answer(500), Answer(500)]
        h.account("a1")
        got = h.receiver.wait_count(3)
        assert len({r.headers["webhook-id"] for r in got}) == 1
        gaps = [b.at - a.at for a, b in itertools.pairwise(got)]
        assert gaps[0] >= 0.15 and gaps[1] >= 0.35, gaps  # 0.2 s, then 0.4 s
        for r in got:  # each attempt is signed afresh, and each verifies
            Webhook(h.secret).verify(r.body, r.headers)
        (d,) = h.wait_deliveries(lambda d: d and d[0]["status"] == "succeeded")
        assert d["attempts"] == 3


def test_a_receiver_that_does_not_answer_in_time_is_retried(database_url: str) -> None:
    # The first attempt is held until long after it timed out; the retry has 2 s.
    with hooked(database_url, webhooks_attempt_timeout_seconds=2.0) as h:
        h.receiver.script = [Answer(200, delay_seconds=HELD_SECONDS)]
        h.account("a1")
        got = h.receiver.wait_count(2)
        assert got[0].headers["webhook-id"] == got[1].headers["webhook-id"]
        (d,) = h.wait_deliveries(lambda d: d and d[0]["status"] == "succeeded")
        assert d["attempts"] == 2
        assert d["last_error"] is None


def test_retry_after_is_honoured(database_url: str) -> None:
    with hooked(database_url) as h:
        h.receiver.script = [Answer(503, {"Retry-After": "2"})]
        h.account("a1")
        (first,) = h.receiver.wait_count(1)
        pending = h.wait_deliveries(lambda d: d and d[0]["attempts"] == 1)
        assert pending[0]["last_status_code"] == 503
        assert pending[0]["next_attempt_at"] is not None
        got = h.receiver.wait_count(2, timeout_seconds=10)
        assert got[1].at - first.at >= 1.9


def test_events_reach_an_endpoint_in_order_each_after_the_last_succeeded(
    database_url: str,
) -> None:
    with hooked(database_url) as h:
        h.receiver.script = [Answer(500), Answer(500)]
        for i in range(4):
            h.account(f"a{i}")
        got = h.receiver.wait_count(6)
        sequences = [Webhook(h.secret).verify(r.body, r.headers)["sequence"] for r in got]
        assert sequences == [sequences[0]] * 3 + sorted(set(sequences))[1:]
        assert sorted(set(sequences)) == list(range(sequences[0], sequences[0] + 4))


def test_a_410_disables_the_endpoint(database_url: str) -> None:
    with hooked(database_url) as h:
        h.receiver.default = Answer(410)
        h.account("a1")
        h.receiver.wait_count(1)
        (d,) = h.wait_deliveries(lambda d: d and d[0]["status"] == "failed")
        assert d["last_status_code"] == 410
        endpoint = h.get(f"/v1/webhook-endpoints/{h.endpoint_id}")
        assert (endpoint["status"], endpoint["disabled_reason"]) == ("disabled", "gone")
        h.account("a2")
        time.sleep(0.5)
        assert len(h.receiver.received) == 1


def test_dead_letters_are_listed_and_a_replay_delivers_under_the_same_id(
    database_url: str,
) -> None:
    with hooked(database_url, webhooks_attempts_max=2) as h:
        h.receiver.default = Answer(500)
        h.account("a1")
        (dead,) = h.wait_deliveries(lambda d: d and d[0]["status"] == "failed")
        assert (dead["attempts"], dead["last_error"]) == (2, "HTTP 500")
        assert h.deliveries(status="failed") == [dead]
        assert h.deliveries(status="pending") == []
        h.receiver.default = Answer(200)
        path = f"/v1/webhook-endpoints/{h.endpoint_id}/deliveries/{dead['id']}/replay"
        r = h.post(path)
        assert r.status_code == 202, r.text
        assert (r.json()["status"], r.json()["attempts"]) == ("pending", 0)
        got = h.receiver.wait_count(3)
        assert {x.headers["webhook-id"] for x in got} == {dead["id"]}
        (d,) = h.wait_deliveries(lambda d: d and d[0]["status"] == "succeeded")
        assert d["attempts"] == 1
        r = h.post(f"/v1/webhook-endpoints/{h.endpoint_id}/deliveries/msg_none/replay")
        assert r.status_code == 404, r.text


def test_after_a_rotation_both_secrets_sign_until_the_overlap_ends(database_url: str) -> None:
    with hooked(database_url) as h:
        r = h.post(f"/v1/webhook-endpoints/{h.endpoint_id}/rotate-secret", {"overlap_seconds": 60})
        new_secret = r.json()["secret"]
        h.account("a1")
        (got,) = h.receiver.wait_count(1)
        assert got.headers["webhook-signature"].count("v1,") == 2
        Webhook(h.secret).verify(got.body, got.headers)
        Webhook(new_secret).verify(got.body, got.headers)
        r = h.post(f"/v1/webhook-endpoints/{h.endpoint_id}/rotate-secret", {"overlap_seconds": 0})
        newest = r.json()["secret"]
        h.account("a2")
        got = h.receiver.wait_count(2)[1]
        assert got.headers["webhook-signature"].count("v1,") == 1
        Webhook(newest).verify(got.body, got.headers)
        with pytest.raises(Exception, match="signature"):
            Webhook(new_secret).verify(got.body, got.headers)


def lease_owners(db: Db) -> dict[str, str]:
    rows = db.fetch(
        "SELECT endpoint_id, lease_owner FROM webhook_deliveries WHERE lease_owner IS NOT NULL"
    )
    return {r[0]: r[1] for r in rows}


WORKERS = "SELECT id FROM webhook_workers ORDER BY id"


def wait_succeeded(db: Db, count: int) -> None:
    deadline = time.monotonic() + 15
    sql = "SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'succeeded'"
    while db.fetch(sql)[0][0] < count:
        assert time.monotonic() < deadline, f"fewer than {count} deliveries succeeded"
        time.sleep(0.05)


def wait_leased(db: Db, count: int) -> dict[str, str]:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        owners = lease_owners(db)
        if len(owners) >= count:
            return owners
        time.sleep(0.05)
    raise AssertionError(f"only {len(lease_owners(db))} of {count} deliveries leased")


def wait_ring(clients: list[TestClient], members: list[str]) -> None:
    """Until each app's dispatcher sees the ring as ``members`` (its own view, read
    at its heartbeats: the one its next claim goes by)."""
    views = [c.app.app.state.services.dispatcher for c in clients]  # type: ignore[attr-defined]
    deadline = time.monotonic() + 10
    while any(v.workers != members for v in views):
        assert time.monotonic() < deadline, ([v.workers for v in views], members)
        time.sleep(0.05)


@pytest.mark.slow  # about 14 s: a worker's membership has to lapse
def test_two_processes_share_the_endpoints_by_the_ring_and_one_takes_all_when_the_other_leaves(
    database_url: str,
) -> None:
    endpoints_count = 16
    with new_database(database_url) as url, receiving() as receiver:
        # Holds each attempt, so that all the leases show at once, well within the
        # attempt's timeout.
        receiver.default = Answer(204, delay_seconds=5.0)
        _, key = create_tenant(url, "ring")
        headers = {"Authorization": f"Bearer {key}"}
        db = Db(url)
        # A live worker drops out of the other's view only after 10 s without a
        # heartbeat; a worker that stops deletes its row and leaves at once.
        settings = {
            **FAST,
            "webhooks_attempt_timeout_seconds": 10.0,
            "webhooks_worker_ttl_seconds": 10.0,
        }
        with serve(url, **settings) as a:
            with serve(url, **settings) as b:
                workers = sorted(c.app.app.state.services.dispatcher.worker_id for c in (a, b))  # type: ignore[attr-defined]
                wait_ring([a, b], workers)  # each has read the other's heartbeat
                ids = []
                for _ in range(endpoints_count):
                    body = {"url": receiver.url, "event_types": ["*"]}
                    r = a.post("/v1/webhook-endpoints", json=body, headers=headers)
                    assert r.status_code == 201, r.text
                    ids.append(r.json()["webhook_endpoint"]["id"])
                a.post("/v1/accounts", json={"currency": "USD"}, headers=headers)
                owners = wait_leased(db, endpoints_count)
                assert owners == {e: ring.owner(e, workers) for e in ids}
                assert set(owners.values()) == set(workers)  # both have a share
                wait_succeeded(db, endpoints_count)
            # b stopped: it left the ring, and a owns every endpoint now.
            survivor = a.app.app.state.services.dispatcher.worker_id  # type: ignore[attr-defined]
            deadline = time.monotonic() + 10
            while [r[0] for r in db.fetch(WORKERS)] != [survivor]:
                assert time.monotonic() < deadline, "b left the ring"
                time.sleep(0.05)
            # a has read that b left. Before, a leased only its own share, then b's
            # once the first had finished: never all at once.
            wait_ring([a], [survivor])
            a.post("/v1/accounts", json={"currency": "USD"}, headers=headers)
            owners = wait_leased(db, endpoints_count)
            assert set(owners.values()) == {survivor}
            wait_succeeded(db, 2 * endpoints_count)
            assert len(receiver.received) == 2 * endpoints_count

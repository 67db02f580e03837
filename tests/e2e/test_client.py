"""The Python client against a real ``tally serve``, on both backends.

The retry tests put a proxy between the two that drops answers after the
server committed, refuses with 503 and resets connections (tests/e2e/proxy.py):
every logical call must still create exactly one transfer.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import msgspec
import pytest

from tally.client import NO_RETRY, AsyncClient, Client, ConnectionFailed, RetryPolicy, errors
from tests.e2e.conftest import Server, StartServer, cli_create_tenant
from tests.e2e.proxy import Plan, faulty_proxy

QUICK = RetryPolicy(attempts=12, base_seconds=0.01, cap_seconds=0.05, deadline_seconds=30)
CLOSE = {"connection": "close"}  # one request per connection: one fault per request


@dataclass
class Ledger:
    server: Server
    api_key: str

    @property
    def port(self) -> int:
        port = urlsplit(self.server.base_url).port
        assert port is not None
        return port

    def client(self, **options: object) -> Client:
        return Client(self.server.base_url, self.api_key, **options)  # type: ignore[arg-type]


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path, start_server: StartServer) -> Ledger:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'client.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    server = start_server(url)
    _, api_key = cli_create_tenant(url, "client")
    return Ledger(server, api_key)


@pytest.fixture
def tally(ledger: Ledger) -> Iterator[Client]:
    with ledger.client() as client:
        yield client


def open_accounts(tally: Client, *names: str) -> None:
    for name in names:
        tally.accounts.create("USD", id=name)


def test_accounts_transfers_and_pages(tally: Client) -> None:
    cash = tally.accounts.create("USD", id="cash", normal_balance="debit", metadata={"k": "v"})
    assert (cash.id, cash.normal_balance, cash.metadata) == ("cash", "debit", {"k": "v"})
    open_accounts(tally, "revenue")
    made = [tally.transfers.create("cash", "revenue", 100 + i) for i in range(7)]
    assert [t.amount for t in made] == list(range(100, 107))
    walked = list(tally.transfers.iterate(account_id="cash", limit=3))  # three pages
    assert [t.id for t in walked] == [t.id for t in made]
    page = tally.transfers.list(account_id="cash", limit=3)
    assert page.has_more and len(page.data) == 3
    assert tally.accounts.get("revenue").credits_posted == sum(range(100, 107))
    history = list(tally.accounts.iterate_balances("revenue", limit=2))
    assert [h.credits_posted for h in history] == [sum(range(100, n)) for n in range(107, 100, -1)]
    assert tally.transfers.get(made[0].id) == made[0]
    assert [a.id for a in tally.accounts.iterate(metadata={"k": "v"})] == ["cash"]
    closed = tally.accounts.update("revenue", metadata={"note": "x"}, close=True)
    assert (closed.status, closed.metadata) == ("closed", {"note": "x"})
    events = list(tally.events.iterate(limit=5))
    assert [e.sequence for e in events] == sorted(e.sequence for e in events)
    assert len(events) >= 10


def test_refusals_are_typed_by_their_code_and_carry_the_request_id(
    ledger: Ledger, tally: Client
) -> None:
    tally.accounts.create("USD", id="capped", debits_must_not_exceed_credits=True)
    open_accounts(tally, "other")
    with pytest.raises(errors.ExceedsCredits) as refused:
        tally.transfers.create("capped", "other", 5)
    assert refused.value.status == 422 and refused.value.request_id
    with pytest.raises(errors.NotFound):
        tally.accounts.get("nobody")
    with pytest.raises(errors.ValidationError) as invalid:
        tally.transfers.create("capped", "other", 0)
    assert invalid.value.errors[0]["field"] == "amount"
    with pytest.raises(errors.AuthenticationFailed):
        Client(ledger.server.base_url, "tk_wrong").accounts.get("capped")


def test_two_phase_and_batches(tally: Client) -> None:
    open_accounts(tally, "a", "b")
    hold = tally.transfers.create("a", "b", 500, pending=True, timeout_seconds=60)
    posted = tally.transfers.post(hold.id, amount=300)
    assert (posted.amount, posted.pending_id) == (300, hold.id)
    with pytest.raises(errors.PendingTransferAlreadyPosted):
        tally.transfers.void(hold.id)
    other = tally.transfers.create("a", "b", 50, pending=True)
    assert tally.transfers.void(other.id).pending_id == other.id
    done = tally.transfers.batch(
        [
            {"debit_account_id": "a", "credit_account_id": "b", "amount": 1},
            {"pending_id": "x", "action": "void"},
        ]
    )
    assert [r.status for r in done.results] == ["created", "failed"]
    with pytest.raises(errors.BatchFailed) as failed:
        tally.transfers.batch(
            [
                {"debit_account_id": "a", "credit_account_id": "b", "amount": 2},
                {"pending_id": "x", "action": "void"},
            ],
            atomic=True,
        )
    assert [r["status"] for r in failed.value.results] == ["failed", "failed"]
    assert tally.accounts.get("b").credits_posted == 301


def test_the_same_idempotency_key_answers_the_first_result(tally: Client) -> None:
    open_accounts(tally, "p", "q")
    first = tally.transfers.create("p", "q", 10, idempotency_key="order-1")
    again = tally.transfers.create("p", "q", 10, idempotency_key="order-1")
    assert again == first
    with pytest.raises(errors.IdempotencyKeyReused):
        tally.transfers.create("p", "q", 11, idempotency_key="order-1")


def faults(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return rng.choices(["pass", "drop", "503", "reset"], weights=[4, 3, 2, 1], k=count)


def test_retries_through_dropped_answers_503s_and_resets_create_each_transfer_once(
    ledger: Ledger, tally: Client
) -> None:
    open_accounts(tally, "from", "to")
    plan = Plan(faults(300, seed=7))
    with (
        faulty_proxy(ledger.port, plan) as url,
        httpx.Client(base_url=url, headers=CLOSE, timeout=10) as http,
        Client(api_key=ledger.api_key, http=http, retry=QUICK, sleep=lambda _: None) as through,
    ):
        made = [through.transfers.create("from", "to", 1 + i) for i in range(60)]
    assert plan.seen.count("drop") >= 10, plan.seen  # the server committed, the client saw nothing
    assert len({t.id for t in made}) == 60
    stored = list(tally.transfers.iterate(account_id="from"))
    assert sorted(t.id for t in stored) == sorted(t.id for t in made)  # each once, none twice
    assert tally.accounts.get("to").credits_posted == sum(range(1, 61))


def test_without_retries_a_lost_answer_raises_and_the_same_key_finds_the_write(
    ledger: Ledger, tally: Client
) -> None:
    open_accounts(tally, "m", "n")
    with (
        faulty_proxy(ledger.port, Plan(["drop"])) as url,
        httpx.Client(base_url=url, headers=CLOSE, timeout=10) as http,
        Client(api_key=ledger.api_key, http=http, retry=NO_RETRY) as through,
    ):
        with pytest.raises(ConnectionFailed, match="idempotency key pay-42"):
            through.transfers.create("m", "n", 42, idempotency_key="pay-42")
        found = through.transfers.create("m", "n", 42, idempotency_key="pay-42")
    assert [t.id for t in tally.transfers.iterate(account_id="m")] == [found.id]


def test_the_async_client_retries_and_walks_pages_too(ledger: Ledger, tally: Client) -> None:
    open_accounts(tally, "x", "y")
    plan = Plan(faults(200, seed=11))

    async def run(url: str) -> list[str]:
        async with (
            httpx.AsyncClient(base_url=url, headers=CLOSE, timeout=10) as http,
            AsyncClient(api_key=ledger.api_key, http=http, retry=QUICK) as through,
        ):
            made = await asyncio.gather(*(through.transfers.create("x", "y", 5) for _ in range(20)))
            assert len({t.id for t in made}) == 20
            return [t.id async for t in through.transfers.iterate(account_id="x", limit=7)]

    with faulty_proxy(ledger.port, plan) as url:
        walked = asyncio.run(run(url))
    assert len(walked) == 20 and "drop" in plan.seen
    assert tally.accounts.get("y").credits_posted == 100


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_event_stream_resumes_across_reconnects_without_a_gap_or_a_repeat(
    request: pytest.FixtureRequest, tmp_path: Path, start_server: StartServer, backend: str
) -> None:
    url = (
        f"sqlite:///{tmp_path / 'stream.db'}"
        if backend == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    # Streams end every 0.5 s: the client must reconnect, with Last-Event-ID, many times.
    server = start_server(url, events_stream_seconds_max="0.5")
    _, api_key = cli_create_tenant(url, "stream")
    with Client(server.base_url, api_key) as tally:
        open_accounts(tally, "s1", "s2")
        start = tally.events.list(limit=1000).data[-1].sequence
        writer = threading.Thread(
            target=lambda: [
                (tally.transfers.create("s1", "s2", 1), time.sleep(0.05)) for _ in range(40)
            ]
        )
        writer.start()
        seen = []
        for event in tally.events.stream(after=start, types=["transfer.created"]):
            seen.append(event.sequence)
            if len(seen) == 40:
                break
        writer.join()
    assert seen == list(range(start + 1, start + 41))  # every one, once, in order


def test_the_async_event_stream_starts_after_the_sequence_it_is_given(ledger: Ledger) -> None:
    with ledger.client() as tally:
        open_accounts(tally, "e1", "e2")
        made = [tally.transfers.create("e1", "e2", 7) for _ in range(3)]
        first = tally.events.list(limit=1000).data[0].sequence

    async def read() -> list[str]:
        async with AsyncClient(ledger.server.base_url, ledger.api_key) as client:
            ids = []
            async for event in client.events.stream(after=first, types=["transfer.created"]):
                ids.append(msgspec.json.decode(event.data)["id"])
                if len(ids) == 3:
                    return ids
        return ids

    assert asyncio.run(read()) == [t.id for t in made]

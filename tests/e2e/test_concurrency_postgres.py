"""Many clients, two server processes, one PostgreSQL ledger: the books still balance.

``tally serve --workers 2`` runs on the run's PostgreSQL database. Fifty asyncio
clients move money among ten no-overdraft accounts for ``TALLY_E2E_SECONDS``
(default 20): single-phase transfers, pending ones (some with a 1-3 s timeout, so
the server expires them mid-run), and posts (full and partial) and voids of
pendings created earlier, sometimes two clients racing on the same pending. Two
readers watch at the same time: one checks that every page of accounts is a
balanced snapshot, one tails the event stream for gaps.

Afterwards every response is checked against what the server then lists, and the
ledger against the invariants of api.md §1: each account's totals are the sum of
its transfers, debits equal credits, no limited account is overdrawn, each pending
transfer was resolved exactly once (post, void or expiry, never a post after its
deadline), and the events are numbered 1..N without gaps, one ``transfer.created``
per transfer and one ``transfer.expired`` per expiry.
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import PAGE_LIMIT, StartServer, cli_create_tenant, pooled, walk

pytestmark = pytest.mark.slow

LOAD_SECONDS = float(os.environ.get("TALLY_E2E_SECONDS", "20"))
SEED = int(os.environ.get("TALLY_E2E_SEED", str(random.randrange(2**32))))
SERVER_WORKERS = 2
CLIENTS = 50
CONNECTIONS_MAX = 64
HTTP_TIMEOUT_SECONDS = 10.0
LIMITED_ACCOUNTS = 10
FUNDING_AMOUNT_MIN, FUNDING_AMOUNT_MAX = 5_000, 20_000
PENDING_TIMEOUT_SECONDS_MAX = 3
# api.md §1: the server expires a pending transfer within 5 s of its deadline.
EXPIRY_WITHIN_SECONDS = 5.0
# Slack for a busy two-core machine on top of the contract's 5 s.
EXPIRY_WAIT_SLACK_SECONDS = 1.5
EXPIRY_WAIT_SECONDS_MAX = 15.0
VERIFY_CONCURRENCY = 16
READER_PAUSE_SECONDS = 0.05
# Everything after the load (waiting for expiries, page walks, a GET per
# transfer) must finish within this, or the test fails instead of hanging.
TEST_BUDGET_SECONDS = LOAD_SECONDS + 240.0

BANK = "bank"
ACCOUNTS = tuple(f"acc-{i:02d}" for i in range(LIMITED_ACCOUNTS))
TOTALS = ("debits_pending", "debits_posted", "credits_pending", "credits_posted")

# What each kind of request may answer in this scenario, besides 201. Anything else
# (a 5xx above all) is a finding.
ALLOWED_REFUSALS = {
    "single": {(422, "exceeds_credits")},
    "pending": {(422, "exceeds_credits")},
    "post": {
        (409, "pending_transfer_already_posted"),
        (409, "pending_transfer_already_voided"),
        (409, "pending_transfer_expired"),
    },
    "void": {
        (409, "pending_transfer_already_posted"),
        (409, "pending_transfer_already_voided"),
        (409, "pending_transfer_expired"),
    },
}
FINAL_STATUS_OF_REFUSAL = {
    "pending_transfer_already_posted": "posted",
    "pending_transfer_already_voided": "voided",
    "pending_transfer_expired": "expired",
}


@dataclass(frozen=True, slots=True)
class Sent:
    """One request of the load and what came back (status None: no answer)."""

    kind: str  # single | pending | post | void
    transfer_id: str
    pending_id: str | None
    body: dict[str, Any]
    status: int | None
    code: str | None
    answer: dict[str, Any] | None
    error: str | None
    elapsed_seconds: float


@dataclass
class Load:
    """What the clients share: the pendings they may resolve, and the record."""

    pendings: list[tuple[str, int]] = field(default_factory=list)
    sent: list[Sent] = field(default_factory=list)
    reads: int = 0
    read_problems: list[str] = field(default_factory=list)


def _parse_time(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def _amount(rng: random.Random) -> int:
    # Mostly affordable amounts, sometimes more than an account could hold, so that
    # exceeds_credits is decided under contention too.
    if rng.random() < 0.8:
        return rng.randint(1, 2_000)
    return rng.randint(2_000, 30_000)


async def _send(
    client: httpx.AsyncClient,
    kind: str,
    path: str,
    body: dict[str, Any],
    transfer_id: str,
    pending_id: str | None = None,
) -> Sent:
    started = time.monotonic()
    try:
        response = await client.post(path, json=body)
    except httpx.HTTPError as exc:
        return Sent(
            kind,
            transfer_id,
            pending_id,
            body,
            None,
            None,
            None,
            repr(exc),
            time.monotonic() - started,
        )
    elapsed = time.monotonic() - started
    try:
        answer = response.json()
    except ValueError:
        answer = {"unparsed": response.text[:500]}
    code = answer.get("code") if response.status_code >= 400 else None
    return Sent(
        kind, transfer_id, pending_id, body, response.status_code, code, answer, None, elapsed
    )


async def _create(
    client: httpx.AsyncClient, rng: random.Random, transfer_id: str, *, pending: bool
) -> Sent:
    debit, credit = rng.sample(ACCOUNTS, 2)
    body: dict[str, Any] = {
        "id": transfer_id,
        "debit_account_id": debit,
        "credit_account_id": credit,
        "amount": _amount(rng),
    }
    if pending:
        body["pending"] = True
        if rng.random() < 0.6:
            body["timeout_seconds"] = rng.randint(1, PENDING_TIMEOUT_SECONDS_MAX)
    return await _send(
        client, "pending" if pending else "single", "/v1/transfers", body, transfer_id
    )


async def _resolve(
    client: httpx.AsyncClient, rng: random.Random, load: Load, transfer_id: str
) -> Sent:
    index = rng.randrange(len(load.pendings))
    pending_id, pending_amount = load.pendings[index]
    # Usually a pending is resolved once; the ones left in the pool get raced on.
    if rng.random() < 0.8:
        load.pendings[index] = load.pendings[-1]
        load.pendings.pop()
    roll = rng.random()
    if roll < 0.35:
        kind, body = "post", {"id": transfer_id}
    elif roll < 0.7:
        kind, body = "post", {"id": transfer_id, "amount": rng.randint(1, pending_amount)}
    else:
        kind, body = "void", {"id": transfer_id}
    path = f"/v1/transfers/{pending_id}/{kind}"
    return await _send(client, kind, path, body, transfer_id, pending_id)


async def _client(index: int, client: httpx.AsyncClient, load: Load, deadline: float) -> None:
    rng = random.Random(SEED * 1_000 + index)
    n = 0
    while time.monotonic() < deadline:
        n += 1
        transfer_id = f"c{index:02d}-{n:06d}"
        roll = rng.random()
        if roll < 0.15 and load.pendings:
            sent = await _resolve(client, rng, load, transfer_id)
        elif roll < 0.40:
            sent = await _create(client, rng, transfer_id, pending=True)
            if sent.status == 201:
                load.pendings.append((transfer_id, sent.body["amount"]))
        else:
            sent = await _create(client, rng, transfer_id, pending=False)
        load.sent.append(sent)


def _balanced_problems(accounts: list[dict[str, Any]], where: str) -> list[str]:
    """The §1 invariants that one consistent view of all accounts must satisfy."""
    problems = []
    sums = {name: sum(a[name] for a in accounts) for name in TOTALS}
    if sums["debits_posted"] != sums["credits_posted"]:
        problems.append(f"{where}: Σ debits_posted != Σ credits_posted: {sums}")
    if sums["debits_pending"] != sums["credits_pending"]:
        problems.append(f"{where}: Σ debits_pending != Σ credits_pending: {sums}")
    for a in accounts:
        if a["flags"]["debits_must_not_exceed_credits"] and (
            a["debits_posted"] + a["debits_pending"] > a["credits_posted"]
        ):
            problems.append(f"{where}: {a['id']} is overdrawn: {[a[n] for n in TOTALS]}")
    return problems


async def _watch_accounts(client: httpx.AsyncClient, load: Load, deadline: float) -> None:
    """Every page of accounts is one snapshot, so it balances even mid-load."""
    while time.monotonic() < deadline:
        try:
            response = await client.get("/v1/accounts", params={"limit": 100})
        except httpx.HTTPError as exc:
            load.read_problems.append(f"GET /v1/accounts: no answer: {exc!r}")
            continue
        load.reads += 1
        if response.status_code != 200:
            load.read_problems.append(f"GET /v1/accounts: {response.status_code} {response.text}")
        else:
            load.read_problems += _balanced_problems(response.json()["data"], "mid-load page")
        await asyncio.sleep(READER_PAUSE_SECONDS)


async def _tail_events(client: httpx.AsyncClient, load: Load, deadline: float) -> None:
    """A reader tailing events never sees a gap (api.md §1: none visible to readers)."""
    last = 0
    while time.monotonic() < deadline:
        try:
            response = await client.get("/v1/events", params={"after": last, "limit": PAGE_LIMIT})
        except httpx.HTTPError as exc:
            load.read_problems.append(f"GET /v1/events: no answer: {exc!r}")
            continue
        load.reads += 1
        if response.status_code != 200:
            load.read_problems.append(f"GET /v1/events: {response.status_code} {response.text}")
            continue
        for event in response.json()["data"]:
            if event["sequence"] != last + 1:
                load.read_problems.append(
                    f"event tail after {last} saw sequence {event['sequence']} next"
                )
            last = event["sequence"]
        await asyncio.sleep(READER_PAUSE_SECONDS)


async def _setup(client: httpx.AsyncClient, rng: random.Random) -> dict[str, int]:
    """The bank (debit-normal, unlimited) and ten no-overdraft accounts it funds."""
    made = await client.post(
        "/v1/accounts", json={"id": BANK, "currency": "USD", "normal_balance": "debit"}
    )
    assert made.status_code == 201, made.text
    funding = {}
    for account_id in ACCOUNTS:
        made = await client.post(
            "/v1/accounts",
            json={
                "id": account_id,
                "currency": "USD",
                "flags": {"debits_must_not_exceed_credits": True},
            },
        )
        assert made.status_code == 201, made.text
        amount = rng.randint(FUNDING_AMOUNT_MIN, FUNDING_AMOUNT_MAX)
        funded = await client.post(
            "/v1/transfers",
            json={
                "id": f"fund-{account_id}",
                "debit_account_id": BANK,
                "credit_account_id": account_id,
                "amount": amount,
            },
        )
        assert funded.status_code == 201, funded.text
        funding[f"fund-{account_id}"] = amount
    return funding


def _report(load: Load, load_seconds: float) -> None:
    requests = len(load.sent)
    by_status = Counter((s.kind, s.status, s.code) for s in load.sent)
    latencies = sorted(s.elapsed_seconds for s in load.sent)
    print(f"\nseed {SEED}; {CLIENTS} clients for {load_seconds:.1f} s on {SERVER_WORKERS} workers")
    print(
        f"writes: {requests} requests, {requests / load_seconds:.0f}/s; "
        f"reads by watchers: {load.reads}"
    )
    if latencies:
        q = statistics.quantiles(latencies, n=100)
        print(
            f"latency ms: p50 {q[49] * 1e3:.1f}, p95 {q[94] * 1e3:.1f}, "
            f"p99 {q[98] * 1e3:.1f}, max {latencies[-1] * 1e3:.1f}"
        )
    for (kind, status, code), count in sorted(by_status.items(), key=str):
        print(f"  {kind:8} {status} {code or ''}: {count}")


def _response_problems(load: Load) -> list[str]:
    problems = []
    server_errors = [s for s in load.sent if s.status is not None and s.status >= 500]
    unavailable = [s for s in server_errors if s.status == 503]
    if unavailable:
        problems.append(f"{len(unavailable)} answers were 503, e.g. {unavailable[0]}")
    problems += [f"server error: {s}" for s in server_errors if s.status != 503][:20]
    problems += [f"no answer: {s}" for s in load.sent if s.status is None][:20]
    unexpected = [
        s
        for s in load.sent
        if s.status is not None
        and s.status < 500
        and s.status != 201
        and (s.status, s.code) not in ALLOWED_REFUSALS[s.kind]
    ]
    problems += [f"unexpected answer: {s}" for s in unexpected[:20]]
    for s in load.sent:
        if s.status == 201 and s.answer is not None and s.answer.get("id") != s.transfer_id:
            problems.append(f"201 for {s.transfer_id} returned another transfer: {s.answer}")
    return problems


def _expected_totals(transfers: Iterable[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Each account's four totals, replayed from its transfers (api.md §1).

    A single-phase transfer and a post record move their amount into the posted
    totals; a pending transfer holds its amount in the pending totals for as long as
    it is still pending; a posted, voided or expired pending holds nothing any more
    (its post record carries what moved); a void record moves nothing.
    """
    totals: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(TOTALS, 0))
    for t in transfers:
        debit, credit, amount = t["debit_account_id"], t["credit_account_id"], t["amount"]
        if t["pending"]:
            if t["status"] == "pending":
                totals[debit]["debits_pending"] += amount
                totals[credit]["credits_pending"] += amount
        elif t["status"] == "posted":  # single-phase, or the record of a post
            totals[debit]["debits_posted"] += amount
            totals[credit]["credits_posted"] += amount
    return totals


def _transfer_shape_problems(transfers: dict[str, dict[str, Any]], now: float) -> list[str]:
    """Each pending resolved at most once, by the record its status says."""
    problems = []
    records: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for t in transfers.values():
        if t["pending_id"] is not None:
            records[t["pending_id"]].append(t)
            if t["pending"]:
                problems.append(f"{t['id']}: a post/void record marked pending: {t}")
            if t["status"] not in ("posted", "voided"):
                problems.append(f"{t['id']}: a record with status {t['status']}")
        elif not t["pending"] and t["status"] != "posted":
            problems.append(f"{t['id']}: single-phase but {t['status']}")
    for t in transfers.values():
        if not t["pending"]:
            continue
        mine = records.pop(t["id"], [])
        expected_record = {"posted": "posted", "voided": "voided"}.get(t["status"])
        if [r["status"] for r in mine] != ([expected_record] if expected_record else []):
            problems.append(f"{t['id']} is {t['status']} with records {mine}")
        for r in mine:
            if r["amount"] > t["amount"] or (r["debit_account_id"], r["credit_account_id"]) != (
                t["debit_account_id"],
                t["credit_account_id"],
            ):
                problems.append(f"record {r} does not fit its pending {t}")
            if (
                r["status"] == "posted"
                and t["expires_at"] is not None
                and _parse_time(r["created_at"]) >= _parse_time(t["expires_at"])
            ):
                problems.append(f"{t['id']} was posted after its deadline by {r}")
        if t["status"] == "expired" and t["expires_at"] is None:
            problems.append(f"{t['id']} expired without a timeout")
        if (
            t["status"] == "pending"
            and t["expires_at"] is not None
            and _parse_time(t["expires_at"]) + EXPIRY_WITHIN_SECONDS < now
        ):
            problems.append(
                f"{t['id']} still pending {now - _parse_time(t['expires_at']):.1f} s "
                f"after its deadline: {t}"
            )
    problems += [f"records of unknown or non-pending {p}: {r}" for p, r in records.items()]
    return problems


def _listing_problems(
    load: Load, transfers: dict[str, dict[str, Any]], funding: dict[str, int]
) -> list[str]:
    """The list agrees with the answers: acknowledged ones exist, refused ones don't."""
    problems = []
    acknowledged = {s.transfer_id: s for s in load.sent if s.status == 201}
    unanswered = {s.transfer_id for s in load.sent if s.status is None}
    for transfer_id, s in acknowledged.items():
        listed = transfers.get(transfer_id)
        if listed is None:
            problems.append(f"acknowledged {transfer_id} missing from GET /v1/transfers: {s}")
            continue
        for name in ("debit_account_id", "credit_account_id", "amount", "pending", "pending_id"):
            if s.answer is not None and listed[name] != s.answer[name]:
                problems.append(f"{transfer_id}.{name}: answered {s.answer}, listed {listed}")
    for s in load.sent:
        if s.status is not None and s.status != 201 and s.transfer_id in transfers:
            problems.append(
                f"refused {s.transfer_id} exists anyway: {s}, {transfers[s.transfer_id]}"
            )
    extra = set(transfers) - set(acknowledged) - set(funding) - unanswered
    problems += [f"listed but never acknowledged: {transfers[i]}" for i in sorted(extra)[:20]]

    resolutions = Counter(s.pending_id for s in load.sent if s.pending_id and s.status == 201)
    problems += [f"{p} resolved {n} times with 201" for p, n in resolutions.items() if n > 1]
    for s in load.sent:
        if s.pending_id is None or s.pending_id not in transfers:
            continue
        final = transfers[s.pending_id]["status"]
        if s.status == 201 and final != {"post": "posted", "void": "voided"}[s.kind]:
            problems.append(f"{s.kind} of {s.pending_id} got 201 but it ended {final}")
        expected = FINAL_STATUS_OF_REFUSAL.get(s.code or "")
        if expected is not None and final != expected:
            problems.append(f"{s.kind} of {s.pending_id} got {s.code} but it ended {final}")
        if s.status == 201 and s.kind == "post":
            asked = s.body.get("amount", transfers[s.pending_id]["amount"])
            if transfers[s.transfer_id]["amount"] != asked:
                problems.append(f"post {s.transfer_id} asked {asked}: {transfers[s.transfer_id]}")
    return problems


def _account_problems(
    accounts: dict[str, dict[str, Any]], transfers: dict[str, dict[str, Any]]
) -> list[str]:
    problems = []
    expected = _expected_totals(transfers.values())
    for account_id, account in accounts.items():
        actual = {name: account[name] for name in TOTALS}
        if actual != expected[account_id]:
            problems.append(
                f"{account_id}: totals {actual}, but its transfers add up to {expected[account_id]}"
            )
    problems += _balanced_problems(list(accounts.values()), "after the load")
    return problems


def _event_problems(
    events: list[dict[str, Any]], transfers: dict[str, dict[str, Any]], accounts: Iterable[str]
) -> list[str]:
    problems = []
    sequences = [e["sequence"] for e in events]
    if sequences != list(range(1, len(events) + 1)):
        gaps = [(a, b) for a, b in zip([0, *sequences], sequences, strict=False) if b != a + 1]
        problems.append(f"event sequences are not 1..{len(events)}: breaks at {gaps[:20]}")
    by_type: dict[str, Counter[str]] = defaultdict(Counter)
    for e in events:
        by_type[e["type"]][e["data"]["id"]] += 1
    created = by_type.pop("transfer.created", Counter())
    if set(created) != set(transfers) or any(n != 1 for n in created.values()):
        missing = set(transfers) - set(created)
        twice = [i for i, n in created.items() if n > 1]
        problems.append(
            f"transfer.created events: {len(created)} ids for {len(transfers)} transfers; "
            f"missing {sorted(missing)[:10]}, repeated {twice[:10]}, "
            f"unknown {sorted(set(created) - set(transfers))[:10]}"
        )
    expired_events = by_type.pop("transfer.expired", Counter())
    expired = {i for i, t in transfers.items() if t["status"] == "expired"}
    if set(expired_events) != expired or any(n != 1 for n in expired_events.values()):
        problems.append(
            f"transfer.expired events {dict(expired_events)} != the expired transfers {expired}"
        )
    account_created = by_type.pop("account.created", Counter())
    if set(account_created) != set(accounts) or any(n != 1 for n in account_created.values()):
        problems.append(f"account.created events: {dict(account_created)}")
    if by_type:
        problems.append(f"unexpected events: { {k: dict(v) for k, v in by_type.items()} }")
    return problems


async def _get_each(client: httpx.AsyncClient, load: Load) -> list[str]:
    """GET /v1/transfers/{id} finds every acknowledged transfer."""
    semaphore = asyncio.Semaphore(VERIFY_CONCURRENCY)

    async def check(s: Sent) -> str | None:
        async with semaphore:
            response = await client.get(f"/v1/transfers/{s.transfer_id}")
        if response.status_code != 200:
            return f"GET {s.transfer_id}: {response.status_code} {response.text} after {s}"
        got = response.json()
        assert s.answer is not None
        if (got["amount"], got["debit_account_id"]) != (
            s.answer["amount"],
            s.answer["debit_account_id"],
        ):
            return f"GET {s.transfer_id}: {got} but created as {s.answer}"
        return None

    found = await asyncio.gather(*(check(s) for s in load.sent if s.status == 201))
    return [p for p in found if p is not None]


async def _wait_for_expiries(load: Load) -> None:
    deadlines = [
        _parse_time(s.answer["expires_at"])
        for s in load.sent
        if s.status == 201 and s.answer is not None and s.answer.get("expires_at")
    ]
    if not deadlines:
        return
    wait = max(deadlines) + EXPIRY_WITHIN_SECONDS + EXPIRY_WAIT_SLACK_SECONDS - time.time()
    await asyncio.sleep(min(max(wait, 0.0), EXPIRY_WAIT_SECONDS_MAX))


async def _scenario(base_url: str, api_key: str) -> list[str]:
    rng = random.Random(SEED)
    load = Load()
    async with httpx.AsyncClient(
        base_url=base_url,
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=HTTP_TIMEOUT_SECONDS,
        limits=pooled(CONNECTIONS_MAX),
    ) as client:
        funding = await _setup(client, rng)

        started = time.monotonic()
        deadline = started + LOAD_SECONDS
        await asyncio.gather(
            *(_client(i, client, load, deadline) for i in range(CLIENTS)),
            _watch_accounts(client, load, deadline),
            _tail_events(client, load, deadline),
        )
        _report(load, time.monotonic() - started)

        await _wait_for_expiries(load)
        now = time.time()
        transfer_list = await walk(client, "/v1/transfers")
        transfers = {t["id"]: t for t in transfer_list}
        events = await walk(client, "/v1/events")
        accounts = {}
        for account_id in (BANK, *ACCOUNTS):
            response = await client.get(f"/v1/accounts/{account_id}")
            assert response.status_code == 200, response.text
            accounts[account_id] = response.json()
        problems = list(load.read_problems[:20])
        problems += _response_problems(load)
        if len(transfers) != len(transfer_list):
            problems.append(
                f"the transfer page walk repeated {len(transfer_list) - len(transfers)}"
            )
        problems += await _get_each(client, load)
        problems += _listing_problems(load, transfers, funding)
        problems += _transfer_shape_problems(transfers, now)
        problems += _account_problems(accounts, transfers)
        problems += _event_problems(events, transfers, accounts)
        statuses = Counter(t["status"] for t in transfers.values() if t["pending"])
        print(
            f"listed {len(transfers)} transfers, {len(events)} events; "
            f"pendings by final status: {dict(statuses)}"
        )
    return problems


def test_books_balance_under_concurrent_load_on_two_server_processes(
    postgres_url: str, start_server: StartServer
) -> None:
    _, api_key = cli_create_tenant(postgres_url, "concurrency")
    server = start_server(postgres_url, workers=SERVER_WORKERS)

    problems = asyncio.run(
        asyncio.wait_for(_scenario(server.base_url, api_key), TEST_BUDGET_SECONDS)
    )

    assert not problems, f"{len(problems)} problems (seed {SEED}):\n" + "\n".join(problems[:60])

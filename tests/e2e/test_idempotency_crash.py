"""Keyed transfers while the server is killed with SIGKILL: every key has exactly one effect.

``tally serve --workers 2`` runs on the run's PostgreSQL database. ``CLIENTS`` async
clients send keyed transfers for ``TALLY_E2E_SECONDS`` (default 20): each logical
request has a fresh Idempotency-Key, a random pair of no-overdraft accounts, a
random amount and no client ``id``, so only the key can stop a retry from moving
the money twice. Meanwhile a chaos task kills the server's whole process group
with SIGKILL 3-4 times at random moments and starts it again on the same port.

Every client retries its request with the same key and the very same body bytes
(exponential backoff with full jitter, capped) on connection errors, timeouts,
409 and 5xx, until a final answer: a 201, a replay, or a business refusal (422
``exceeds_credits``). A request cut off by a kill may or may not have committed;
either is fine, as long as the retry then replays what committed or executes
once (api.md §3: the stored response commits in the same transaction as the
effect, so a dead server never leaves a key stuck or half-done).

Afterwards: every logical request got a final answer; the transfers (beyond the
funding ones) are exactly the ones answered with a success, one per key, with
the requested fields; debits equal credits; no limited account is overdrawn;
each account's totals equal a replay of its transfers; and a retry after a final
answer replays it byte for byte.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import secrets
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.chaos import ChaosServer
from tests.e2e.conftest import cli_create_tenant, pooled, walk

pytestmark = pytest.mark.slow

LOAD_SECONDS = float(os.environ.get("TALLY_E2E_SECONDS", "20"))
SEED = int(os.environ.get("TALLY_E2E_SEED", str(random.randrange(2**32))))
SERVER_WORKERS = 2
CLIENTS = 16
CONNECTIONS_MAX = 32
HTTP_TIMEOUT = httpx.Timeout(5.0, connect=2.0)
LIMITED_ACCOUNTS = 8
FUNDING_AMOUNT_MIN, FUNDING_AMOUNT_MAX = 2_000, 5_000
AMOUNT_MIN, AMOUNT_MAX = 1, 800

# Chaos: how many kills, and the least time the server is up before the next one.
KILLS_MIN, KILLS_MAX = 3, 4
UP_SECONDS_MIN = 1.0
# After the last restart the load goes on at least this long, to see it recover.
SETTLE_SECONDS = 2.0

# Client retries: full jitter over an exponential backoff, capped; a logical
# request that has no final answer after REQUEST_BUDGET_SECONDS is a finding.
BACKOFF_BASE_SECONDS = 0.05
BACKOFF_CAP_SECONDS = 1.0
REQUEST_BUDGET_SECONDS = 40.0

REPLAY_CHECKS_MAX = 600
VERIFY_CONCURRENCY = 16
TEST_BUDGET_SECONDS = LOAD_SECONDS + 60.0

BANK = "bank"
ACCOUNTS = tuple(f"acc-{i:02d}" for i in range(LIMITED_ACCOUNTS))
TOTALS = ("debits_pending", "debits_posted", "credits_pending", "credits_posted")
REPLAYED = "idempotent-replayed"
# Business refusals that are a final answer in this scenario.
FINAL_REFUSALS = {(422, "exceeds_credits")}


# -- the load ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes
    replayed: bool
    code: str | None
    transfer_id: str | None

    def __str__(self) -> str:
        replay = " (replayed)" if self.replayed else ""
        return f"{self.status}{replay} {self.body[:300]!r}"


@dataclass
class Logical:
    """One logical request: a key, a body, every attempt, and the final answer."""

    key: str
    body: dict[str, Any]
    raw: bytes
    attempts: list[str] = field(default_factory=list)  # "201", "409 …", "ReadError", …
    final: Answer | None = None
    # An attempt cut off after it was sent (reset, timed out): it may have committed.
    ambiguous: bool = False
    seconds: float = 0.0

    @property
    def succeeded(self) -> bool:
        return self.final is not None and self.final.status in (200, 201)


@dataclass
class Load:
    requests: list[Logical] = field(default_factory=list)
    server_errors: list[tuple[str, Answer]] = field(default_factory=list)
    kills: list[float] = field(default_factory=list)  # seconds into the load
    chaos_done: bool = False


def _answer(response: httpx.Response) -> Answer:
    code = transfer_id = None
    try:
        parsed: Any = response.json()
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        if response.status_code >= 400:
            code = parsed.get("code")
        else:
            transfer_id = parsed.get("id")
    return Answer(
        response.status_code,
        response.content,
        response.headers.get(REPLAYED) == "true",
        code,
        transfer_id,
    )


def _is_final(answer: Answer) -> bool:
    """Retry on 409 (in use), 429 and 5xx; anything else is the request's answer."""
    return answer.status < 500 and answer.status not in (409, 429)


async def _send(client: httpx.AsyncClient, request: Logical) -> httpx.Response:
    return await client.post(
        "/v1/transfers",
        content=request.raw,
        headers={"Idempotency-Key": request.key, "Content-Type": "application/json"},
    )


async def _until_final(
    client: httpx.AsyncClient, request: Logical, rng: random.Random, load: Load
) -> None:
    started = time.monotonic()
    deadline = started + REQUEST_BUDGET_SECONDS
    backoff = BACKOFF_BASE_SECONDS
    while True:
        try:
            response = await _send(client, request)
        except httpx.TransportError as exc:  # refused, reset, cut off, timed out
            request.attempts.append(type(exc).__name__)
            # Refused or never connected: the request did not reach a server.
            if not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
                request.ambiguous = True
        else:
            answer = _answer(response)
            request.attempts.append(f"{answer.status} {answer.code or ''}".strip())
            if answer.status >= 500:
                load.server_errors.append((request.key, answer))
            if _is_final(answer):
                request.final = answer
                break
        if time.monotonic() >= deadline:
            break
        await asyncio.sleep(rng.uniform(0, backoff))
        backoff = min(backoff * 2, BACKOFF_CAP_SECONDS)
    request.seconds = time.monotonic() - started


async def _client(
    index: int, client: httpx.AsyncClient, load: Load, run: str, stop_at: list[float]
) -> None:
    rng = random.Random(SEED * 1_000 + index)
    n = 0
    while time.monotonic() < stop_at[0] or not load.chaos_done:
        n += 1
        debit, credit = rng.sample(ACCOUNTS, 2)
        body = {
            "debit_account_id": debit,
            "credit_account_id": credit,
            "amount": rng.randint(AMOUNT_MIN, AMOUNT_MAX),
        }
        request = Logical(f"crash-{run}-{index:02d}-{n:06d}", body, json.dumps(body).encode())
        load.requests.append(request)
        await _until_final(client, request, rng, load)


async def _chaos(server: ChaosServer, load: Load, started: float, stop_at: list[float]) -> None:
    """Kill the server 3-4 times at random moments of the load, restarting it each time."""
    rng = random.Random(SEED)
    kills = rng.randint(KILLS_MIN, KILLS_MAX)
    slot = LOAD_SECONDS / kills
    try:
        for i in range(kills):
            at = started + slot * i + rng.uniform(0.15, 0.85) * slot
            # The server has just come up (or the load just began): let it work a little.
            await asyncio.sleep(max(at - time.monotonic(), UP_SECONDS_MIN if load.kills else 0))
            load.kills.append(time.monotonic() - started)
            await asyncio.to_thread(server.kill)
            await asyncio.to_thread(server.start)
    finally:
        stop_at[0] = max(stop_at[0], time.monotonic() + SETTLE_SECONDS)
        load.chaos_done = True


# -- the checks -------------------------------------------------------------------------


def _answer_problems(load: Load) -> list[str]:
    problems = []
    unanswered = [r for r in load.requests if r.final is None]
    problems += [
        f"{r.key}: no final answer after {r.seconds:.1f} s; attempts {r.attempts[-12:]}"
        for r in unanswered[:20]
    ]
    if len(unanswered) > 20:
        problems.append(f"... {len(unanswered)} requests without a final answer in all")
    for r in load.requests:
        final = r.final
        if final is None or final.status in (200, 201):
            if final is not None and (final.status == 200 and not final.replayed):
                problems.append(f"{r.key}: 200 without Idempotent-Replayed: {final}")
            if final is not None and not final.transfer_id:
                problems.append(f"{r.key}: a success without a transfer id: {final}")
            continue
        if (final.status, final.code) not in FINAL_REFUSALS:
            problems.append(f"{r.key}: unexpected final answer {final}; attempts {r.attempts}")
    bugs = [(k, a) for k, a in load.server_errors if a.status != 503]
    problems += [f"{k}: server error {a}" for k, a in bugs[:20]]
    return problems


def _ledger_problems(
    load: Load,
    transfers: list[dict[str, Any]],
    accounts: dict[str, dict[str, Any]],
    funding: set[str],
) -> list[str]:
    problems = []
    listed = Counter(t["id"] for t in transfers)
    problems += [f"transfer {i} listed {n} times" for i, n in listed.items() if n > 1]
    by_id = {t["id"]: t for t in transfers}
    succeeded = [r for r in load.requests if r.succeeded]
    keys_of: dict[str, list[str]] = defaultdict(list)
    for r in succeeded:
        assert r.final is not None
        keys_of[r.final.transfer_id or ""].append(r.key)
    problems += [
        f"keys {keys} all answered transfer {i}" for i, keys in keys_of.items() if len(keys) > 1
    ]
    for r in succeeded:
        assert r.final is not None
        t = by_id.get(r.final.transfer_id or "")
        if t is None:
            problems.append(f"{r.key}: answered {r.final} but the transfer is not listed")
            continue
        asked = (r.body["debit_account_id"], r.body["credit_account_id"], r.body["amount"])
        got = (t["debit_account_id"], t["credit_account_id"], t["amount"])
        if asked != got or t["status"] != "posted" or t["pending"]:
            problems.append(f"{r.key}: asked {asked}, the transfer is {t}")
    effects = [t for t in transfers if t["id"] not in funding]
    if len(effects) != len(succeeded):
        problems.append(
            f"{len(effects)} transfers beyond the funding ones, but {len(succeeded)} logical "
            "requests succeeded"
        )
    extra = sorted(set(by_id) - funding - set(keys_of))
    problems += [f"a transfer no answer named (a second effect?): {by_id[i]}" for i in extra[:20]]

    sums = {name: sum(a[name] for a in accounts.values()) for name in TOTALS}
    if sums["debits_posted"] != sums["credits_posted"] or sums["debits_pending"] != 0:
        problems.append(f"the books do not balance: {sums}")
    expected: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(TOTALS, 0))
    for t in transfers:
        if t["status"] == "posted" and not t["pending"]:
            expected[t["debit_account_id"]]["debits_posted"] += t["amount"]
            expected[t["credit_account_id"]]["credits_posted"] += t["amount"]
    for account_id, a in accounts.items():
        actual = {name: a[name] for name in TOTALS}
        if actual != expected[account_id]:
            problems.append(
                f"{account_id}: totals {actual}, its transfers add up to {expected[account_id]}"
            )
        if a["flags"]["debits_must_not_exceed_credits"] and (
            a["debits_posted"] + a["debits_pending"] > a["credits_posted"]
        ):
            problems.append(f"{account_id} is overdrawn: {actual}")
    return problems


async def _replay_problems(
    client: httpx.AsyncClient, load: Load, rng: random.Random
) -> tuple[int, list[str]]:
    """A retry after the final answer replays it byte for byte (a sample, bounded)."""
    answered = [r for r in load.requests if r.final is not None]
    sample = rng.sample(answered, min(len(answered), REPLAY_CHECKS_MAX))
    semaphore = asyncio.Semaphore(VERIFY_CONCURRENCY)

    async def check(r: Logical) -> str | None:
        assert r.final is not None
        async with semaphore:
            answer = _answer(await _send(client, r))
        if (answer.status, answer.body, answer.replayed) != (r.final.status, r.final.body, True):
            return f"{r.key}: final answer {r.final}, a later retry {answer}"
        return None

    found = await asyncio.gather(*(check(r) for r in sample))
    return len(sample), [p for p in found if p is not None]


def _label(answer: Answer | None) -> str:
    if answer is None:
        return "none"
    replayed = " replayed" if answer.replayed else ""
    return f"{answer.status}{replayed} {answer.code or ''}".strip()


def _report(load: Load, server: ChaosServer, seconds: float) -> None:
    finals = Counter(_label(r.final) for r in load.requests)
    attempts = Counter(a for r in load.requests for a in r.attempts)
    ambiguous = [r for r in load.requests if r.ambiguous and r.final is not None]
    committed = sum(1 for r in ambiguous if r.final is not None and r.final.replayed)
    slowest = max((r.seconds for r in load.requests), default=0.0)
    print(
        f"\nseed {SEED}; {CLIENTS} clients for {seconds:.1f} s on {SERVER_WORKERS} workers; "
        f"SIGKILL at {[round(k, 1) for k in load.kills]} s, restarts took "
        f"{[round(s, 1) for s in server.restart_seconds[1:]]} s"
    )
    print(f"logical requests: {len(load.requests)}; final answers: {dict(finals)}")
    print(f"attempts: {sum(attempts.values())}: {dict(attempts.most_common())}")
    print(
        f"requests with an attempt cut off after it was sent: {len(ambiguous)}; of those, "
        f"final answer a replay (an earlier attempt had committed): {committed}, "
        f"executed by a retry: {len(ambiguous) - committed}; "
        f"slowest logical request {slowest:.1f} s"
    )


async def _setup(client: httpx.AsyncClient, rng: random.Random) -> set[str]:
    made = await client.post(
        "/v1/accounts", json={"id": BANK, "currency": "USD", "normal_balance": "debit"}
    )
    assert made.status_code == 201, made.text
    funding = set()
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
        funded = await client.post(
            "/v1/transfers",
            json={
                "id": f"fund-{account_id}",
                "debit_account_id": BANK,
                "credit_account_id": account_id,
                "amount": rng.randint(FUNDING_AMOUNT_MIN, FUNDING_AMOUNT_MAX),
            },
        )
        assert funded.status_code == 201, funded.text
        funding.add(f"fund-{account_id}")
    return funding


async def _scenario(server: ChaosServer, api_key: str) -> list[str]:
    rng = random.Random(SEED)
    run = secrets.token_hex(4)
    load = Load()
    async with httpx.AsyncClient(
        base_url=server.base_url,
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=HTTP_TIMEOUT,
        limits=pooled(CONNECTIONS_MAX),
    ) as client:
        funding = await _setup(client, rng)
        started = time.monotonic()
        stop_at = [started + LOAD_SECONDS]
        await asyncio.gather(
            _chaos(server, load, started, stop_at),
            *(_client(i, client, load, run, stop_at) for i in range(CLIENTS)),
        )
        _report(load, server, time.monotonic() - started)

    # A fresh client: no connection from before the last restart.
    async with httpx.AsyncClient(
        base_url=server.base_url,
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=HTTP_TIMEOUT,
        limits=pooled(VERIFY_CONCURRENCY),
    ) as client:
        transfers = await walk(client, "/v1/transfers")
        accounts = {}
        for account_id in (BANK, *ACCOUNTS):
            response = await client.get(f"/v1/accounts/{account_id}")
            assert response.status_code == 200, response.text
            accounts[account_id] = response.json()
        replays, replay_problems = await _replay_problems(client, load, rng)

    unavailable = sum(1 for _, a in load.server_errors if a.status == 503)
    print(
        f"listed {len(transfers)} transfers ({len(funding)} funding); 503 answers retried: "
        f"{unavailable}; retries after a final answer checked: {replays}"
    )
    problems = _answer_problems(load)
    if len(load.kills) < KILLS_MIN:
        problems.append(f"only {len(load.kills)} kills happened: {load.kills}")
    problems += _ledger_problems(load, transfers, accounts, funding)
    problems += replay_problems
    return problems


def test_every_key_has_exactly_one_effect_across_sigkills(
    postgres_url: str, tmp_path: Path
) -> None:
    _, api_key = cli_create_tenant(postgres_url, "idempotency-crash")
    server = ChaosServer(postgres_url, tmp_path / "tally-serve.log", workers=SERVER_WORKERS)
    passed = False
    try:
        server.start()
        problems = asyncio.run(asyncio.wait_for(_scenario(server, api_key), TEST_BUDGET_SECONDS))
        if "Traceback" in server.log_text():
            problems.append("the server logged a traceback (see its log below)")
        assert not problems, f"{len(problems)} problems (seed {SEED}):\n" + "\n".join(problems[:60])
        passed = True
    finally:
        server.stop()
        if not passed:
            print(f"\n--- log of tally serve at {server.base_url} ---\n{server.log_text()[-8000:]}")

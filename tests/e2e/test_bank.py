"""The bank test, in the manner of Jepsen's: money moves, the total never changes.

A fixed total (``FUNDING_AMOUNT`` in each of ``ACCOUNTS``) is spread over no-overdraft
accounts, funded once from a debit-normal ``bank`` account. Then, for a bounded
time, ``WRITERS`` clients move random amounts between random accounts while
``READERS`` clients read every balance in one request (``GET /v1/accounts``, one
page, so one consistent snapshot). Every read must see the same total and no
limited account below zero: a read that caught half of a transfer, or a batch,
would show a different total.

Each write is a logical operation of one of three kinds, so that "acknowledged"
and "at most once" can be checked after the fact:

- ``id``: one transfer with an ``id`` chosen by the client;
- ``key``: one transfer with no ``id``, only an ``Idempotency-Key`` (the server
  names the transfer; only the key stops a retry from moving the money twice);
- ``batch``: an atomic batch of two transfers with client ids, and a key.

Every transfer carries ``metadata`` naming its operation and leg, which is how
the verification finds a ``key`` operation's transfer. A client retries with the
same body (and key) on connection errors, 409 ``idempotency_key_in_use``, 429 and
503, until a final answer: success (acknowledged), or a refusal the scenario
allows (422 ``exceeds_credits``, or ``batch_failed`` because of it). After an
attempt that may have committed (cut off, or a 503) a client sometimes gives up:
that operation stays unacknowledged, and may have happened, once at most.

Three phases, each its own test:

a. no faults, on SQLite (one process) and PostgreSQL (``--workers 2``);
b. ``tally serve --workers 2`` on PostgreSQL, killed with SIGKILL at random
   moments, either the whole process group (then started again on the same port)
   or one worker (uvicorn's supervisor replaces it);
c. the same server on a private PostgreSQL cluster that the test crashes with
   ``pg_ctl -m immediate`` (restart, or stop, stay down a moment, start).

Afterwards, on the server as it then is: every acknowledged operation is present
with the fields asked for, every refused one absent, every unacknowledged one
present at most once (a batch: both legs or none) and absent if every answer
it got was a 503 saying nothing was changed, no transfer that no operation asked
for; each account's totals equal a replay of its transfers; debits equal
credits; the total is unchanged and no limited account is below zero. No answer
was a 5xx other than 503, every 503 carried ``Retry-After``, and no request went
unanswered past the client's timeout (a connection refused while a server is down
is expected, and counted apart). Phase (c) must have seen the outage: at least
one 503.

The CI version runs about a minute and a half in all; ``TALLY_SOAK=1`` (``make
soak``) runs the long version. ``TALLY_E2E_SEED`` replays a seed.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import secrets
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.chaos import ChaosServer, PrivatePostgres, private_postgres_unavailable
from tests.e2e.conftest import PAGE_LIMIT, StartServer, cli_create_tenant, pooled, walk

pytestmark = pytest.mark.slow

SOAK = os.environ.get("TALLY_SOAK") == "1"
SEED = int(os.environ.get("TALLY_E2E_SEED", str(random.randrange(2**32))))

# How long each phase puts load on the server, and how many faults it injects.
NO_FAULT_SECONDS = 300.0 if SOAK else 10.0
SIGKILL_SECONDS = 600.0 if SOAK else 20.0
SIGKILLS = (60, 75) if SOAK else (4, 5)
PG_CRASH_SECONDS = 600.0 if SOAK else 20.0
PG_CRASHES = (50, 60) if SOAK else (3, 4)
# A stopped PostgreSQL stays down this long before it is started again.
PG_DOWN_SECONDS = (0.2, 3.0)
# Of the faults in phase (b), this share kills one worker instead of the group.
WORKER_KILL_SHARE = 0.4
# A server (or a database) just back gets at least this long before the next fault.
UP_SECONDS_MIN = 1.0
# After the last fault the load goes on at least this long, to see it recover.
SETTLE_SECONDS = 3.0

SERVER_WORKERS = 2
WRITERS = 12
READERS = 3
CONNECTIONS_MAX = 32
# A request unanswered this long is a hang, and a finding. The server's own bounds
# are shorter: a database connect times out after 5 s and a statement after 5 s.
REQUEST_TIMEOUT_SECONDS = 10.0
HTTP_TIMEOUT = httpx.Timeout(REQUEST_TIMEOUT_SECONDS)
# A logical operation with no final answer after this long is given up (and is a
# finding unless the client chose to give up on it).
OPERATION_BUDGET_SECONDS = 45.0
BACKOFF_BASE_SECONDS = 0.05
BACKOFF_CAP_SECONDS = 1.0
# After an attempt that may have committed, a client gives up this often: the
# operation stays unacknowledged (Jepsen's "info"), and may be present at most once.
GIVE_UP_SHARE = 0.2
READER_PAUSE_SECONDS = 0.02
SHARES = {"id": 0.45, "key": 0.35, "batch": 0.2}

BANK = "bank"
ACCOUNTS = tuple(f"acct-{i:02d}" for i in range(8))
FUNDING_AMOUNT = 10_000
TOTAL = FUNDING_AMOUNT * len(ACCOUNTS)
AMOUNT_MIN, AMOUNT_MAX = 1, 3_000
TOTALS = ("debits_pending", "debits_posted", "credits_pending", "credits_posted")
# Business refusals that are a final answer in this scenario.
FINAL_REFUSALS = {"exceeds_credits", "batch_failed"}
PROBLEMS_SHOWN_MAX = 60
# What a 503 says when the connection broke while committing (errors.md); any
# other 503 promises that nothing was changed, and the checks hold it to that.
COMMIT_LOST = "lost while committing"


# -- operations and what the clients saw ------------------------------------------------


@dataclass
class Operation:
    """One logical write, every attempt at it, and how it ended."""

    op_id: str
    kind: str  # "id", "key" or "batch"
    path: str
    raw: bytes
    legs: list[dict[str, Any]]  # the transfers asked for, in order
    key: str | None
    attempts: list[str] = field(default_factory=list)
    # "acknowledged", "refused", "unacknowledged" (gave up), or "unexpected".
    outcome: str = "pending"
    answered_ids: list[str] = field(default_factory=list)
    gave_up: bool = False
    last_503: bool = False
    # Some attempt may have committed: cut off after it was sent, timed out, or a
    # 503 saying the connection broke during COMMIT. A later 503 saying "nothing
    # was changed" speaks for its own attempt only.
    in_doubt: bool = False


@dataclass
class Tally:
    """Everything the clients counted, for the checks and the report."""

    operations: list[Operation] = field(default_factory=list)
    reads: int = 0
    read_problems: list[str] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    transport: Counter[str] = field(default_factory=Counter)
    hangs: list[str] = field(default_factory=list)
    server_errors: list[str] = field(default_factory=list)
    unavailable: int = 0
    unavailable_without_retry_after: list[str] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)
    stop_at: float = 0.0
    faults_done: bool = False

    def attempt(self, what: str, response: httpx.Response) -> None:
        """Count one answer; a 5xx other than 503, or a 503 without Retry-After,
        is a finding."""
        status = response.status_code
        self.statuses[str(status)] += 1
        if status == 503:
            self.unavailable += 1
            retry_after = response.headers.get("retry-after", "")
            if not (retry_after.isdigit() and int(retry_after) >= 1):
                self.unavailable_without_retry_after.append(f"{what}: {response.text[:200]}")
        elif status >= 500:
            self.server_errors.append(f"{what}: {status} {response.text[:300]}")

    def failed(self, what: str, exc: httpx.TransportError) -> bool:
        """Count a request that got no answer. True when it may have reached the
        server (and so may have committed)."""
        name = type(exc).__name__
        self.transport[name] += 1
        if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
            self.hangs.append(f"{what}: no answer in {REQUEST_TIMEOUT_SECONDS} s ({name})")
        return not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)


def _problem_code(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("code") if isinstance(body, dict) else None


def _new_operation(rng: random.Random, run: str, n: int) -> Operation:
    op_id = f"{run}-{n:06d}"
    kind = rng.choices(list(SHARES), weights=list(SHARES.values()))[0]
    if kind == "batch":
        first, second, third = rng.sample(ACCOUNTS, 3)
        pairs = [(first, second), (second, third)]
    else:
        debit, credit = rng.sample(ACCOUNTS, 2)
        pairs = [(debit, credit)]
    legs = []
    for i, (debit, credit) in enumerate(pairs):
        leg: dict[str, Any] = {
            "debit_account_id": debit,
            "credit_account_id": credit,
            "amount": rng.randint(AMOUNT_MIN, AMOUNT_MAX),
            "metadata": {"op": op_id, "leg": str(i)},
        }
        if kind != "key":
            leg["id"] = f"t-{op_id}-{i}"
        legs.append(leg)
    if kind == "batch":
        path, body = "/v1/transfers/batch", {"transfers": legs, "atomic": True}
    else:
        path, body = "/v1/transfers", legs[0]
    key = None if kind == "id" else f"k-{op_id}"
    return Operation(op_id, kind, path, json.dumps(body).encode(), legs, key)


def _settle_answer(op: Operation, response: httpx.Response) -> bool:
    """Record a final answer; False if the client should try again."""
    status = response.status_code
    code = _problem_code(response)
    op.attempts.append(f"{status} {code or ''}".strip())
    op.last_503 = status == 503
    op.in_doubt = op.in_doubt or (op.last_503 and COMMIT_LOST in response.text)
    if status >= 500 or status == 429 or (status == 409 and code == "idempotency_key_in_use"):
        return False
    if status in (200, 201):
        body = response.json()
        op.outcome = "acknowledged"
        if op.kind == "batch":
            op.answered_ids = [r["transfer"]["id"] for r in body["results"]]
        else:
            op.answered_ids = [body["id"]]
    elif status == 422 and code in FINAL_REFUSALS:
        op.outcome = "refused"
        if code == "batch_failed":
            codes = {r["error"]["code"] for r in response.json()["results"] if r["error"]}
            if codes - {"exceeds_credits", "linked_event_failed"}:
                op.outcome = "unexpected"
    else:
        op.outcome = "unexpected"
    return True


async def _perform(
    client: httpx.AsyncClient, op: Operation, rng: random.Random, tally: Tally
) -> None:
    headers = {"Content-Type": "application/json"}
    if op.key is not None:
        headers["Idempotency-Key"] = op.key
    deadline = time.monotonic() + OPERATION_BUDGET_SECONDS
    backoff = BACKOFF_BASE_SECONDS
    while True:
        maybe_sent = True
        try:
            response = await client.post(op.path, content=op.raw, headers=headers)
        except httpx.TransportError as exc:
            op.attempts.append(type(exc).__name__)
            maybe_sent = tally.failed(f"POST {op.path} ({op.op_id})", exc)
            op.in_doubt = op.in_doubt or maybe_sent
        else:
            tally.attempt(f"POST {op.path} ({op.op_id})", response)
            if _settle_answer(op, response):
                return
            maybe_sent = response.status_code == 503
        if maybe_sent and rng.random() < GIVE_UP_SHARE:
            op.outcome, op.gave_up = "unacknowledged", True
            return
        if time.monotonic() >= deadline:
            op.outcome = "unacknowledged"
            return
        await asyncio.sleep(rng.uniform(0, backoff))
        backoff = min(backoff * 2, BACKOFF_CAP_SECONDS)


async def _writer(index: int, client: httpx.AsyncClient, tally: Tally, run: str, seed: int) -> None:
    rng = random.Random(seed * 1_000 + index)
    n = 0
    while time.monotonic() < tally.stop_at or not tally.faults_done:
        n += 1
        op = _new_operation(rng, f"{run}-w{index:02d}", n)
        tally.operations.append(op)
        await _perform(client, op, rng, tally)


def snapshot_problems(accounts: list[dict[str, Any]], where: str) -> list[str]:
    """What one consistent view of every account must satisfy."""
    problems = []
    by_id = {a["id"]: a for a in accounts}
    if set(by_id) != {BANK, *ACCOUNTS}:
        problems.append(f"{where}: the accounts are {sorted(by_id)}")
        return problems
    total = sum(by_id[i]["balance"]["posted"] for i in ACCOUNTS)
    if total != TOTAL:
        problems.append(f"{where}: the total is {total}, not {TOTAL}")
    sums = {name: sum(a[name] for a in accounts) for name in TOTALS}
    if sums["debits_posted"] != sums["credits_posted"] or sums["debits_pending"] != 0:
        problems.append(f"{where}: the books do not balance: {sums}")
    for account_id in ACCOUNTS:
        balance = by_id[account_id]["balance"]
        if balance["posted"] < 0 or balance["available"] < 0:
            problems.append(f"{where}: {account_id} is below zero: {balance}")
    return problems


async def _reader(client: httpx.AsyncClient, tally: Tally) -> None:
    while time.monotonic() < tally.stop_at or not tally.faults_done:
        try:
            response = await client.get("/v1/accounts", params={"limit": PAGE_LIMIT})
        except httpx.TransportError as exc:
            tally.failed("GET /v1/accounts", exc)
            await asyncio.sleep(READER_PAUSE_SECONDS)
            continue
        tally.attempt("GET /v1/accounts", response)
        if response.status_code == 200:
            page = response.json()
            tally.reads += 1
            if page["has_more"]:
                tally.read_problems.append("GET /v1/accounts: more than one page")
            tally.read_problems += snapshot_problems(page["data"], f"read {tally.reads}")
        elif response.status_code != 503:
            tally.read_problems.append(f"GET /v1/accounts: {response.status_code} {response.text}")
        await asyncio.sleep(READER_PAUSE_SECONDS)


# -- the scenario ---------------------------------------------------------------------

Faults = Callable[[Tally, random.Random, float], Awaitable[None]]


def _client(base_url: str, api_key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base_url,
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=HTTP_TIMEOUT,
        limits=pooled(CONNECTIONS_MAX),
    )


async def _fund(client: httpx.AsyncClient) -> None:
    made = await client.post(
        "/v1/accounts", json={"id": BANK, "currency": "USD", "normal_balance": "debit"}
    )
    assert made.status_code == 201, made.text
    for account_id in ACCOUNTS:
        flags = {"debits_must_not_exceed_credits": True}
        made = await client.post(
            "/v1/accounts", json={"id": account_id, "currency": "USD", "flags": flags}
        )
        assert made.status_code == 201, made.text
        funded = await client.post(
            "/v1/transfers",
            json={
                "id": f"fund-{account_id}",
                "debit_account_id": BANK,
                "credit_account_id": account_id,
                "amount": FUNDING_AMOUNT,
            },
        )
        assert funded.status_code == 201, funded.text


@dataclass
class Result:
    tally: Tally
    seconds: float
    transfers: list[dict[str, Any]]
    accounts: list[dict[str, Any]]


async def _bank(base_url: str, api_key: str, seconds: float, faults: Faults | None) -> Result:
    seed_rng = random.Random(SEED)
    run = secrets.token_hex(3)
    tally = Tally()
    async with _client(base_url, api_key) as client:
        await _fund(client)
        started = time.monotonic()
        tally.stop_at = started + seconds
        tally.faults_done = faults is None

        async def inject() -> None:
            assert faults is not None
            try:
                await faults(tally, random.Random(seed_rng.random()), started)
            finally:
                tally.stop_at = max(tally.stop_at, time.monotonic() + SETTLE_SECONDS)
                tally.faults_done = True

        await asyncio.gather(
            *([inject()] if faults is not None else []),
            *(_writer(i, client, tally, run, SEED) for i in range(WRITERS)),
            *(_reader(client, tally) for _ in range(READERS)),
        )
        elapsed = time.monotonic() - started

    # A fresh client: no connection from before the last fault.
    async with _client(base_url, api_key) as client:
        transfers = await walk(client, "/v1/transfers")
        accounts = await walk(client, "/v1/accounts")
    return Result(tally, elapsed, transfers, accounts)


def fault_moments(rng: random.Random, count: int, seconds: float) -> Iterator[float]:
    """``count`` moments (seconds from the start), one at random in each equal slot."""
    slot = seconds / count
    for i in range(count):
        yield slot * i + rng.uniform(0.15, 0.85) * slot


async def _sleep_until(started: float, at: float, tally: Tally) -> None:
    # Whatever the schedule says, what just came back gets a moment to work.
    await asyncio.sleep(max(started + at - time.monotonic(), UP_SECONDS_MIN if tally.faults else 0))


# -- the checks -----------------------------------------------------------------------


def _leg_problems(op: Operation, found: list[dict[str, Any] | None]) -> list[str]:
    present = [t for t in found if t is not None]
    if op.outcome == "acknowledged":
        problems = []
        for leg, transfer, answered in zip(op.legs, found, op.answered_ids, strict=True):
            if transfer is None:
                problems.append(f"{op.op_id}: acknowledged ({answered}), but not present")
                continue
            asked = (leg["debit_account_id"], leg["credit_account_id"], leg["amount"])
            got = (transfer["debit_account_id"], transfer["credit_account_id"], transfer["amount"])
            if asked != got or transfer["id"] != answered or transfer["status"] != "posted":
                problems.append(f"{op.op_id}: asked {asked} (answered {answered}), got {transfer}")
        return problems
    if op.outcome == "refused" and present:
        return [f"{op.op_id}: refused ({op.attempts[-1]}), but present: {present}"]
    if op.gave_up and op.last_503 and not op.in_doubt and present:
        return [
            f"{op.op_id}: every 503 said nothing was changed, but present: {present}; "
            f"attempts {op.attempts}"
        ]
    if op.outcome == "unacknowledged" and 0 < len(present) < len(op.legs):
        return [f"{op.op_id}: half of an atomic batch is present: {present}"]
    if op.outcome in ("unexpected", "pending"):
        return [f"{op.op_id}: {op.outcome} answer; attempts {op.attempts}"]
    return []


def ledger_problems(result: Result) -> list[str]:
    """Acknowledged present, refused absent, unacknowledged at most once, nothing
    else; the totals equal a replay of the transfers."""
    problems = []
    legs: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    strangers = []
    for t in result.transfers:
        meta = t.get("metadata") or {}
        if "op" in meta:
            legs[(meta["op"], meta.get("leg", ""))].append(t)
        elif not t["id"].startswith("fund-"):
            strangers.append(t)
    problems += [f"a transfer no operation asked for: {t}" for t in strangers[:10]]
    problems += [
        f"operation {op} leg {leg} is present {len(ts)} times: {[t['id'] for t in ts]}"
        for (op, leg), ts in legs.items()
        if len(ts) > 1
    ]
    known = set()
    for op in result.tally.operations:
        found = []
        for i in range(len(op.legs)):
            known.add((op.op_id, str(i)))
            copies = legs.get((op.op_id, str(i)), [])
            found.append(copies[0] if copies else None)
        problems += _leg_problems(op, found)
    problems += [f"{key}: present, but no client asked for it" for key in set(legs) - known][:10]
    problems += snapshot_problems(result.accounts, "after the run")

    expected: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(TOTALS, 0))
    for t in result.transfers:
        if t["status"] != "posted" or t["pending"]:
            problems.append(f"a transfer that is not a posted single-phase one: {t}")
        expected[t["debit_account_id"]]["debits_posted"] += t["amount"]
        expected[t["credit_account_id"]]["credits_posted"] += t["amount"]
    for a in result.accounts:
        actual = {name: a[name] for name in TOTALS}
        replayed = expected[a["id"]]
        if actual != replayed:
            problems.append(f"{a['id']}: totals {actual}, its transfers add up to {replayed}")
    return problems


def answer_problems(tally: Tally, *, connection_errors_allowed: bool) -> list[str]:
    problems = list(tally.read_problems[:20])
    problems += tally.server_errors[:20]
    problems += [f"503 without Retry-After: {p}" for p in tally.unavailable_without_retry_after]
    problems += tally.hangs[:20]
    if not connection_errors_allowed and tally.transport:
        problems.append(f"requests without an answer, and no server was killed: {tally.transport}")
    stuck = [op for op in tally.operations if op.outcome == "unacknowledged" and not op.gave_up]
    problems += [
        f"{op.op_id}: no final answer in {OPERATION_BUDGET_SECONDS} s: {op.attempts[-10:]}"
        for op in stuck[:10]
    ]
    return problems


def report(phase: str, result: Result, *, extra: str = "") -> str:
    """One paragraph of figures, printed (``pytest -s``) for docs/reliability.md."""
    tally = result.tally
    outcomes = Counter(op.outcome for op in tally.operations)
    kinds = Counter(op.kind for op in tally.operations)
    attempts = sum(len(op.attempts) for op in tally.operations)
    unacknowledged = [op for op in tally.operations if op.outcome == "unacknowledged"]
    present = {(t.get("metadata") or {}).get("op") for t in result.transfers}
    committed = sum(1 for op in unacknowledged if op.op_id in present)
    after_503 = [op for op in unacknowledged if op.last_503 and not op.in_doubt]
    after_503_committed = sum(1 for op in after_503 if op.op_id in present)
    in_doubt = [op for op in unacknowledged if op.in_doubt]
    in_doubt_committed = sum(1 for op in in_doubt if op.op_id in present)
    text = (
        f"bank {phase}: seed {SEED}; {WRITERS} writers and {READERS} readers for "
        f"{result.seconds:.1f} s{extra}\n"
        f"  operations {len(tally.operations)} ({dict(kinds)}), attempts {attempts}; "
        f"outcomes {dict(outcomes)}\n"
        f"  unacknowledged {len(unacknowledged)}: present once {committed}, absent "
        f"{len(unacknowledged) - committed}; given up after 503s that all said 'nothing was "
        f"changed': {len(after_503)} (present {after_503_committed}); with an attempt in "
        f"doubt (cut off, or a 503 'lost while committing'): {len(in_doubt)} (present "
        f"{in_doubt_committed})\n"
        f"  balance reads {tally.reads}, all totalling {TOTAL}; transfers listed "
        f"{len(result.transfers)}\n"
        f"  answers {dict(sorted(tally.statuses.items()))}; no answer "
        f"{dict(tally.transport)}; faults {len(tally.faults)}"
    )
    print("\n" + text)
    return text


def _assert_no_problems(problems: list[str], logs: str) -> None:
    if "Traceback" in logs:
        problems.append("a server logged a traceback (see its log below)")
    assert not problems, (
        f"{len(problems)} problems (seed {SEED}):\n"
        + "\n".join(problems[:PROBLEMS_SHOWN_MAX])
        + f"\n--- server log ---\n{logs[-8000:]}"
    )


# -- phase (a): no faults ---------------------------------------------------------------


def test_bank_total_holds_without_faults(
    database_url: str, start_server: StartServer, tmp_path: Path
) -> None:
    _, api_key = cli_create_tenant(database_url, "bank-no-faults")
    # SQLite is the one-process embedded shape; PostgreSQL the multi-process one.
    workers = 1 if database_url.startswith("sqlite") else SERVER_WORKERS
    server = start_server(database_url, workers=workers)
    result = asyncio.run(_bank(server.base_url, api_key, NO_FAULT_SECONDS, None))
    report(f"(a) no faults, {database_url.partition(':')[0]}", result)
    problems = answer_problems(result.tally, connection_errors_allowed=False)
    if result.tally.unavailable:
        problems.append(f"{result.tally.unavailable} answers were 503 with nothing down")
    problems += ledger_problems(result)
    _assert_no_problems(problems, server.log_text())


# -- phase (b): servers killed with SIGKILL ---------------------------------------------


def _sigkills(server: ChaosServer) -> Faults:
    async def inject(tally: Tally, rng: random.Random, started: float) -> None:
        count = rng.randint(*SIGKILLS)
        for at in fault_moments(rng, count, SIGKILL_SECONDS):
            await _sleep_until(started, at, tally)
            moment = time.monotonic() - started
            if rng.random() < WORKER_KILL_SHARE:
                pid = await asyncio.to_thread(server.kill_worker, rng)
                tally.faults.append(f"{moment:.1f} s: SIGKILL worker {pid}")
                await asyncio.to_thread(server.wait_workers)
            else:
                await asyncio.to_thread(server.kill)
                tally.faults.append(f"{moment:.1f} s: SIGKILL the process group")
                await asyncio.to_thread(server.start)

    return inject


def test_bank_total_holds_across_server_sigkills(postgres_url: str, tmp_path: Path) -> None:
    _, api_key = cli_create_tenant(postgres_url, "bank-sigkill")
    server = ChaosServer(postgres_url, tmp_path / "tally-serve.log", workers=SERVER_WORKERS)
    try:
        server.start()
        result = asyncio.run(_bank(server.base_url, api_key, SIGKILL_SECONDS, _sigkills(server)))
        groups = sum("group" in f for f in result.tally.faults)
        report(
            "(b) SIGKILL",
            result,
            extra=f"; {len(result.tally.faults)} SIGKILLs ({groups} of the whole group, "
            f"{len(result.tally.faults) - groups} of one worker) at "
            f"{[f.split(':')[0] for f in result.tally.faults]}",
        )
        problems = answer_problems(result.tally, connection_errors_allowed=True)
        if len(result.tally.faults) < SIGKILLS[0]:
            problems.append(f"only {len(result.tally.faults)} faults: {result.tally.faults}")
        problems += ledger_problems(result)
        _assert_no_problems(problems, server.log_text())
    finally:
        server.stop()


# -- phase (c): PostgreSQL crashed (immediate mode) and restarted --------------------


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    reason = private_postgres_unavailable()
    if reason is not None:
        if os.environ.get("TALLY_TEST_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"a private PostgreSQL cluster is required: {reason}")
        pytest.skip(reason)
    cluster = PrivatePostgres()
    try:
        cluster.create()
        yield cluster
    finally:
        cluster.destroy()


def _postgres_crashes(cluster: PrivatePostgres) -> Faults:
    async def inject(tally: Tally, rng: random.Random, started: float) -> None:
        count = rng.randint(*PG_CRASHES)
        for at in fault_moments(rng, count, PG_CRASH_SECONDS):
            await _sleep_until(started, at, tally)
            moment = time.monotonic() - started
            if rng.random() < 0.5:
                await asyncio.to_thread(cluster.restart_immediately)
                tally.faults.append(f"{moment:.1f} s: pg_ctl -m immediate restart")
            else:
                await asyncio.to_thread(cluster.stop_immediately)
                down = rng.uniform(*PG_DOWN_SECONDS)
                await asyncio.sleep(down)
                await asyncio.to_thread(cluster.start)
                tally.faults.append(f"{moment:.1f} s: -m immediate stop, {down:.1f} s down, start")

    return inject


def test_bank_total_holds_across_postgres_crashes(
    private_postgres: PrivatePostgres, start_server: StartServer
) -> None:
    url = private_postgres.url
    _, api_key = cli_create_tenant(url, "bank-postgres-crash")
    server = start_server(url, workers=SERVER_WORKERS)
    result = asyncio.run(
        _bank(server.base_url, api_key, PG_CRASH_SECONDS, _postgres_crashes(private_postgres))
    )
    report(
        "(c) PostgreSQL immediate restarts",
        result,
        extra=f"; {len(result.tally.faults)} crashes: {result.tally.faults}",
    )
    problems = answer_problems(result.tally, connection_errors_allowed=False)
    if len(result.tally.faults) < PG_CRASHES[0]:
        problems.append(f"only {len(result.tally.faults)} faults: {result.tally.faults}")
    if result.tally.unavailable == 0:
        problems.append("no 503 at all: the clients never saw the database down")
    problems += ledger_problems(result)
    _assert_no_problems(problems, server.log_text())

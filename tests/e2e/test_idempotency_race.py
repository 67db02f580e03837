"""Twenty copies of one keyed request at once, on two server processes: one effect.

Two ``tally serve --workers 2`` servers run on the run's PostgreSQL database. Each of
``ROUNDS`` rounds sends ``COPIES`` identical ``POST /v1/transfers`` (amount 1, no
client ``id``, so only the Idempotency-Key can tell them apart from new requests)
with one fresh key, all at once over separate connections, half of them to each
server: every round races the key across processes by construction, and within
and across each server's two workers as the kernel spreads connections. (An
earlier version used one server and relied on the kernel alone; on a fast, quiet
machine one worker sometimes accepted every connection of every round.)
api.md §3 allows each copy exactly three answers:

- the one ``201`` that executed (without ``Idempotent-Replayed``);
- a replay: the stored status and body byte for byte, with ``Idempotent-Replayed: true``
  (a copy that arrived after the first had finished, or one in the other process
  whose transaction lost the race on the key and was retried);
- ``409 idempotency_key_in_use`` with ``Retry-After`` (a copy that arrived in the same
  process while the first was executing), which replays once retried.

Afterwards the destination has exactly one transfer per round, every replay named
the same transfer as its round's 201, and no answer was ever a 5xx.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import StartServer, cli_create_tenant, pooled, walk

pytestmark = pytest.mark.slow

SERVERS = 2
WORKERS_PER_SERVER = 2
ROUNDS = 50
COPIES = 20
HTTP_TIMEOUT_SECONDS = 10.0
FUNDING = 10_000
# Retrying a 409 until it replays: bounded in attempts and in time.
IN_USE_RETRIES_MAX = 40
IN_USE_RETRY_SECONDS_MAX = 15.0
IN_USE_BACKOFF_SECONDS = (0.02, 0.5)
TEST_BUDGET_SECONDS = 80.0

BANK, SOURCE, DESTINATION = "bank", "source", "destination"
REPLAYED = "idempotent-replayed"


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes
    replayed: bool
    retry_after: str | None
    code: str | None
    transfer_id: str | None
    server: int  # which of the servers answered

    def __str__(self) -> str:
        replay = " (replayed)" if self.replayed else ""
        return f"{self.status}{replay} {self.body[:300]!r}"


@dataclass
class Tally:
    """What the whole run saw."""

    answers: Counter[str] = field(default_factory=Counter)
    in_use_retries: int = 0
    problems: list[str] = field(default_factory=list)
    originals: dict[str, Answer] = field(default_factory=dict)  # key -> its 201
    # Replays served by the server that did not execute the round's 201.
    other_server_replays: int = 0


def _answer(response: httpx.Response, server: int) -> Answer:
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
        status=response.status_code,
        body=response.content,
        replayed=response.headers.get(REPLAYED) == "true",
        retry_after=response.headers.get("retry-after"),
        code=code,
        transfer_id=transfer_id,
        server=server,
    )


def _kind(answer: Answer) -> str:
    """The class of an answer: original, replay, in_use, or unexpected."""
    if answer.status == 201 and not answer.replayed:
        return "original"
    if answer.status in (200, 201) and answer.replayed:
        return "replay"
    if answer.status == 409 and answer.code == "idempotency_key_in_use" and not answer.replayed:
        return "in_use"
    return "unexpected"


def _body() -> dict[str, Any]:
    return {"debit_account_id": SOURCE, "credit_account_id": DESTINATION, "amount": 1}


async def _post(client: httpx.AsyncClient, key: str, server: int) -> Answer:
    response = await client.post("/v1/transfers", json=_body(), headers={"Idempotency-Key": key})
    return _answer(response, server)


async def _retry_in_use(
    client: httpx.AsyncClient, key: str, server: int, tally: Tally
) -> Answer | None:
    """Retry a 409'd copy with the same key until it replays (bounded)."""
    deadline = time.monotonic() + IN_USE_RETRY_SECONDS_MAX
    pause, pause_max = IN_USE_BACKOFF_SECONDS
    for _ in range(IN_USE_RETRIES_MAX):
        tally.in_use_retries += 1
        answer = await _post(client, key, server)
        if answer.status >= 500:
            tally.problems.append(f"{key}: a retry of a 409 got a server error: {answer}")
        if _kind(answer) != "in_use":
            return answer
        if time.monotonic() + pause > deadline:
            break
        await asyncio.sleep(pause)
        pause = min(pause * 2, pause_max)
    tally.problems.append(
        f"{key}: still 409 idempotency_key_in_use after {IN_USE_RETRY_SECONDS_MAX} s of retries "
        "(a stuck key)"
    )
    return None


def _check_round(key: str, answers: list[Answer], tally: Tally) -> Answer | None:
    """The rules of one round's first answers; returns the round's 201."""
    kinds = [_kind(a) for a in answers]
    tally.answers.update(kinds)
    for answer, kind in zip(answers, kinds, strict=True):
        if answer.status >= 500:
            tally.problems.append(f"{key}: server error {answer}")
        elif kind == "unexpected":
            tally.problems.append(f"{key}: unexpected answer {answer}")
        elif kind == "in_use" and not answer.retry_after:
            tally.problems.append(f"{key}: 409 idempotency_key_in_use without Retry-After")
    originals = [a for a, k in zip(answers, kinds, strict=True) if k == "original"]
    if len(originals) != 1:
        tally.problems.append(
            f"{key}: {len(originals)} answers were an unreplayed 201 (expected exactly one): "
            + "; ".join(str(a) for a in originals[:5])
        )
    return originals[0] if originals else None


def _check_replay(key: str, original: Answer | None, replay: Answer, tally: Tally) -> None:
    if original is None:
        return
    if replay.body != original.body:
        tally.problems.append(
            f"{key}: a replay differs from the original 201:\n  original {original}\n"
            f"  replay   {replay}"
        )
    if replay.transfer_id != original.transfer_id:
        tally.problems.append(
            f"{key}: the replay names {replay.transfer_id}, the 201 {original.transfer_id}"
        )


@dataclass(frozen=True, slots=True)
class Target:
    base_urls: tuple[str, ...]
    api_key: str


def _client(base_url: str, api_key: str, connections: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base_url,
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=HTTP_TIMEOUT_SECONDS,
        limits=pooled(connections),
    )


async def _round(index: int, target: Target, run: str, tally: Tally) -> None:
    key = f"race-{run}-{index:03d}"
    per_server = COPIES // len(target.base_urls)
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(_client(url, target.api_key, per_server + 2))
            for url in target.base_urls
        ]
        # Open the connections first, so the copies then leave together.
        await asyncio.gather(*(c.get("/healthz") for c in clients for _ in range(per_server)))
        answers = await asyncio.gather(
            *(_post(c, key, server) for server, c in enumerate(clients) for _ in range(per_server))
        )
        original = _check_round(key, answers, tally)
        if original is not None:
            tally.originals[key] = original
        for answer in answers:
            if _kind(answer) == "replay":
                _check_replay(key, original, answer, tally)
                if original is not None and answer.server != original.server:
                    tally.other_server_replays += 1
        in_use = [a for a in answers if _kind(a) == "in_use"]
        retried = await asyncio.gather(
            *(_retry_in_use(clients[a.server], key, a.server, tally) for a in in_use)
        )
        for answer in retried:
            if answer is None:
                continue
            if _kind(answer) != "replay":
                tally.problems.append(f"{key}: a retried 409 answered {answer}, not a replay")
            else:
                _check_replay(key, original, answer, tally)


async def _setup(client: httpx.AsyncClient) -> None:
    for body in (
        {"id": BANK, "currency": "USD", "normal_balance": "debit"},
        {"id": SOURCE, "currency": "USD", "flags": {"debits_must_not_exceed_credits": True}},
        {"id": DESTINATION, "currency": "USD"},
    ):
        made = await client.post("/v1/accounts", json=body)
        assert made.status_code == 201, made.text
    funded = await client.post(
        "/v1/transfers",
        json={
            "id": "fund-source",
            "debit_account_id": BANK,
            "credit_account_id": SOURCE,
            "amount": FUNDING,
        },
    )
    assert funded.status_code == 201, funded.text


async def _scenario(target: Target) -> list[str]:
    tally = Tally()
    run = secrets.token_hex(4)
    async with _client(target.base_urls[0], target.api_key, 4) as client:
        await _setup(client)
        started = time.monotonic()
        for index in range(ROUNDS):
            await _round(index, target, run, tally)
        elapsed = time.monotonic() - started

        transfers = await walk(client, "/v1/transfers", account_id=DESTINATION)
        accounts = {}
        for account_id in (SOURCE, DESTINATION):
            response = await client.get(f"/v1/accounts/{account_id}")
            assert response.status_code == 200, response.text
            accounts[account_id] = response.json()

    print(
        f"\n{ROUNDS} rounds x {COPIES} copies in {elapsed:.1f} s on {SERVERS} servers "
        f"x {WORKERS_PER_SERVER} workers: "
        f"first answers {dict(tally.answers)}; 409s retried {tally.in_use_retries} times; "
        f"replays served by the server that did not execute the 201: "
        f"{tally.other_server_replays}; {len(transfers)} transfers to {DESTINATION}"
    )
    problems = list(tally.problems)
    ids = Counter(t["id"] for t in transfers)
    if len(transfers) != ROUNDS:
        problems.append(f"{len(transfers)} transfers to {DESTINATION}, expected {ROUNDS}")
    problems += [f"transfer {i} listed {n} times" for i, n in ids.items() if n > 1]
    originals = {a.transfer_id for a in tally.originals.values()}
    if set(ids) != originals:
        problems.append(
            f"listed transfers {sorted(set(ids) - originals)[:10]} were never answered 201; "
            f"answered {sorted(originals - set(ids))[:10]} are not listed"
        )
    for t in transfers:
        if (t["debit_account_id"], t["credit_account_id"], t["amount"]) != (
            SOURCE,
            DESTINATION,
            1,
        ):
            problems.append(f"an unexpected transfer: {t}")
    if accounts[DESTINATION]["credits_posted"] != ROUNDS:
        problems.append(f"{DESTINATION} credits_posted: {accounts[DESTINATION]}")
    if accounts[SOURCE]["debits_posted"] != ROUNDS:
        problems.append(f"{SOURCE} debits_posted: {accounts[SOURCE]}")
    return problems


def test_twenty_copies_of_a_keyed_request_on_two_processes_have_one_effect(
    postgres_url: str, start_server: StartServer
) -> None:
    _, api_key = cli_create_tenant(postgres_url, "idempotency-race")
    servers = [start_server(postgres_url, workers=WORKERS_PER_SERVER) for _ in range(SERVERS)]
    target = Target(tuple(server.base_url for server in servers), api_key)

    problems = asyncio.run(asyncio.wait_for(_scenario(target), TEST_BUDGET_SECONDS))

    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:60])

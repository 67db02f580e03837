"""The races other ledgers got wrong, on real ``tally serve --workers 2`` processes.

Each test fires many requests at once at one server (two worker processes, so
two batching writers racing in the database) on PostgreSQL, and again on SQLite
(two processes sharing one file), over 127.0.0.1 only:

- holds count in the limit: many holds and spends at once against a wallet that
  may not overdraw; exactly ``funding // amount`` are accepted, then releasing
  holds while new spends race for the money they free never overspends;
- the credit side is locked too: many debits from different accounts into one
  account lose no update; many repayments into a loan that may not be credited
  past its debits accept exactly what fits;
- post and void of one hold at once: exactly one wins, the other gets the 409
  that names the winner;
- several posts of one hold at once: exactly one wins;
- A→B and B→A (and rings in atomic batches) at once: no deadlock, no 5xx;
- one hot account under 256 concurrent clients: no error but business ones.

No answer may be a 5xx (a 503 included) or missing. Afterwards each test checks
the books three ways: every account's totals equal what the acknowledged answers
add up to, and what a replay of ``GET /v1/transfers`` adds up to; each account's
version counts exactly the transfers acknowledged on it (a lost update would
show there first); debits equal credits; and no account with a limit was ever
past it, at any version of its balance history.

Counts and time are bounded; ``TALLY_SOAK=1`` multiplies the counts (tests/soak.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Server, cli_create_tenant, pooled, tally_server, walk
from tests.soak import scaled

pytestmark = pytest.mark.slow

WORKERS = 2
HTTP_TIMEOUT_SECONDS = 30.0
TEST_BUDGET_SECONDS = float(scaled(120, 1_800))
# Printed with every result; TALLY_E2E_SEED replays a run's choices (as in
# test_concurrency_postgres.py), though not the interleaving the server chose.
SEED = int(os.environ.get("TALLY_E2E_SEED", str(random.randrange(2**32))))
TOTALS = ("debits_pending", "debits_posted", "credits_pending", "credits_posted")
DNEC = {"debits_must_not_exceed_credits": True}
CNED = {"credits_must_not_exceed_debits": True}
Refusals = frozenset[tuple[int, str]]
NONE: Refusals = frozenset()
EXCEEDS_CREDITS: Refusals = frozenset({(422, "exceeds_credits")})


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Server]]:
    """``tally serve --workers 2`` on a database, started once per module and database
    (each test has a tenant of its own); all stopped when the module ends."""
    with contextlib.ExitStack() as stack:
        servers: dict[str, Server] = {}

        def get(url: str) -> Server:
            if url not in servers:
                log_path: Path = tmp_path_factory.mktemp("races") / "tally-serve.log"
                servers[url] = stack.enter_context(tally_server(url, log_path, workers=WORKERS))
            return servers[url]

        yield get


@pytest.fixture(params=["postgresql", "sqlite"])
def server(request: pytest.FixtureRequest, serve: Callable[[str], Server]) -> tuple[str, Server]:
    """A server on each backend: for the races that two processes sharing one SQLite
    file could lose as well (SQLite takes one write lock, so no lock-order deadlock
    and no row contention to speak of: those races run on PostgreSQL only)."""
    url = str(
        request.getfixturevalue("postgres_url" if request.param == "postgresql" else "sqlite_url")
    )
    return url, serve(url)


@pytest.fixture
def postgres_server(postgres_url: str, serve: Callable[[str], Server]) -> tuple[str, Server]:
    return postgres_url, serve(postgres_url)


# -- what the answers say the books must be ---------------------------------------------


@dataclass
class Books:
    """Each account's totals and change count as the acknowledged answers add up."""

    totals: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    changes: Counter[str] = field(default_factory=Counter)
    holds: dict[str, int] = field(default_factory=dict)
    transfers: dict[str, dict[str, Any]] = field(default_factory=dict)

    def acknowledge(self, t: dict[str, Any]) -> None:
        assert t["id"] not in self.transfers, f"{t['id']} acknowledged twice"
        self.transfers[t["id"]] = t
        debit, credit, amount = t["debit_account_id"], t["credit_account_id"], t["amount"]
        self.changes.update((debit, credit))
        if t["pending_id"] is not None:  # a post or void: the whole hold is released
            held = self.holds.pop(t["pending_id"])
            self.totals[debit]["debits_pending"] -= held
            self.totals[credit]["credits_pending"] -= held
            if t["status"] == "posted":
                self.totals[debit]["debits_posted"] += amount
                self.totals[credit]["credits_posted"] += amount
        elif t["pending"]:
            self.holds[t["id"]] = amount
            self.totals[debit]["debits_pending"] += amount
            self.totals[credit]["credits_pending"] += amount
        else:
            self.totals[debit]["debits_posted"] += amount
            self.totals[credit]["credits_posted"] += amount


def replayed_totals(transfers: Iterable[dict[str, Any]]) -> dict[str, Counter[str]]:
    """Each account's totals from the list of transfers (api.md §1): a hold still
    pending holds its amount; a single-phase transfer and a post record move theirs;
    a resolved hold and a void record hold nothing."""
    totals: dict[str, Counter[str]] = defaultdict(Counter)
    for t in transfers:
        debit, credit, amount = t["debit_account_id"], t["credit_account_id"], t["amount"]
        if t["pending"] and t["status"] == "pending":
            totals[debit]["debits_pending"] += amount
            totals[credit]["credits_pending"] += amount
        elif not t["pending"] and t["status"] == "posted":
            totals[debit]["debits_posted"] += amount
            totals[credit]["credits_posted"] += amount
    return totals


def as_totals(counter: Counter[str]) -> dict[str, int]:
    return {name: counter[name] for name in TOTALS}


# -- a race ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    what: str
    status: int  # 0: no answer at all
    code: str | None
    body: dict[str, Any]

    @property
    def won(self) -> bool:
        return self.status in (200, 201)


@dataclass
class Race:
    client: httpx.AsyncClient
    books: Books = field(default_factory=Books)
    accounts: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)

    async def send(self, what: str, path: str, body: dict[str, Any], refusals: Refusals) -> Answer:
        """POST and record; any answer but a success or one of ``refusals`` is a problem."""
        try:
            response = await self.client.post(path, json=body)
        except httpx.HTTPError as exc:
            self.problems.append(f"{what}: no answer: {exc!r}")
            return Answer(what, 0, None, {})
        try:
            parsed: dict[str, Any] = response.json()
        except ValueError:
            parsed = {"unparsed": response.text[:300]}
        code = parsed.get("code") if response.status_code >= 400 else None
        answer = Answer(what, response.status_code, code, parsed)
        self.statuses[f"{response.status_code} {code or ''}".strip()] += 1
        if answer.won and path.startswith("/v1/transfers"):
            results = parsed.get("results")
            if results is None:
                self.books.acknowledge(parsed)
            for result in results or []:
                if result["status"] == "created":
                    self.books.acknowledge(result["transfer"])
        elif not answer.won and (answer.status, code) not in refusals:
            self.problems.append(f"{what}: {response.status_code} {response.text[:300]}")
        return answer

    async def open(self, account_id: str, **fields: Any) -> None:
        body = {"id": account_id, "currency": "USD", **fields}
        answer = await self.send(f"open {account_id}", "/v1/accounts", body, NONE)
        assert answer.status == 201, answer
        self.accounts.append(account_id)

    async def transfer(
        self,
        transfer_id: str,
        debit: str,
        credit: str,
        amount: int,
        refusals: Refusals = NONE,
        **fields: Any,
    ) -> Answer:
        body = {
            "id": transfer_id,
            "debit_account_id": debit,
            "credit_account_id": credit,
            "amount": amount,
            **fields,
        }
        return await self.send(transfer_id, "/v1/transfers", body, refusals)

    async def resolve(
        self, record_id: str, hold_id: str, action: str, refusals: Refusals = NONE, **fields: Any
    ) -> Answer:
        path = f"/v1/transfers/{hold_id}/{action}"
        return await self.send(record_id, path, {"id": record_id, **fields}, refusals)

    async def verify(self) -> list[str]:
        """The books three ways (see the module docstring), and the race's problems."""
        problems = list(self.problems[:40])
        transfers = await walk(self.client, "/v1/transfers")
        listed = {t["id"]: t for t in transfers}
        if len(listed) != len(transfers):
            problems.append(f"the transfer list repeats {len(transfers) - len(listed)} items")
        acked = self.books.transfers
        missing, extra = set(acked) - set(listed), set(listed) - set(acked)
        problems += [f"acknowledged but not listed: {acked[i]}" for i in sorted(missing)[:10]]
        problems += [f"listed but never acknowledged: {listed[i]}" for i in sorted(extra)[:10]]
        replay = replayed_totals(transfers)
        sums: Counter[str] = Counter()
        for account_id in self.accounts:
            problems += await self._verify_account(account_id, replay[account_id], sums)
        if sums["debits_posted"] != sums["credits_posted"]:
            problems.append(f"Σ debits_posted != Σ credits_posted: {sums}")
        if sums["debits_pending"] != sums["credits_pending"]:
            problems.append(f"Σ debits_pending != Σ credits_pending: {sums}")
        return problems

    async def _verify_account(
        self, account_id: str, replay: Counter[str], sums: Counter[str]
    ) -> list[str]:
        response = await self.client.get(f"/v1/accounts/{account_id}")
        assert response.status_code == 200, response.text
        account = response.json()
        actual = {name: account[name] for name in TOTALS}
        sums.update(actual)
        problems = []
        if actual != as_totals(self.books.totals[account_id]):
            problems.append(
                f"{account_id}: totals {actual}, but the acknowledged answers add up to "
                f"{as_totals(self.books.totals[account_id])}"
            )
        if actual != as_totals(replay):
            problems.append(f"{account_id}: totals {actual}, the transfer list {as_totals(replay)}")
        if account["version"] != 1 + self.books.changes[account_id]:
            problems.append(
                f"{account_id}: version {account['version']} after "
                f"{self.books.changes[account_id]} acknowledged changes (a lost update?)"
            )
        flags = account["flags"]
        if flags["debits_must_not_exceed_credits"] or flags["credits_must_not_exceed_debits"]:
            history = await walk(self.client, f"/v1/accounts/{account_id}/balances")
            problems += [p for row in history if (p := _past_limit(account_id, flags, row))][:10]
        return problems


def _past_limit(account_id: str, flags: dict[str, bool], row: dict[str, Any]) -> str | None:
    dp, dpo, cp, cpo = (row[name] for name in TOTALS)
    if flags["debits_must_not_exceed_credits"] and dp + dpo > cpo:
        return f"{account_id} overdrawn at version {row['version']}: {row}"
    if flags["credits_must_not_exceed_debits"] and cp + cpo > dpo:
        return f"{account_id} over-credited at version {row['version']}: {row}"
    return None


@contextlib.asynccontextmanager
async def racing(base_url: str, api_key: str, connections: int) -> AsyncIterator[Race]:
    async with httpx.AsyncClient(
        base_url=base_url,
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=HTTP_TIMEOUT_SECONDS,
        limits=pooled(connections),
    ) as client:
        yield Race(client)


def run_race(
    server: tuple[str, Server], name: str, scenario: Callable[[Race], Awaitable[None]], clients: int
) -> None:
    """A tenant of its own, the scenario within the budget, then the books checked."""
    url, s = server
    _, api_key = cli_create_tenant(url, name)

    async def main() -> tuple[list[str], Counter[str], float]:
        async with racing(s.base_url, api_key, clients) as race:
            started = time.monotonic()
            await scenario(race)
            elapsed = time.monotonic() - started
            return await race.verify(), race.statuses, elapsed

    problems, statuses, elapsed = asyncio.run(asyncio.wait_for(main(), TEST_BUDGET_SECONDS))
    print(
        f"\n{name} on {url.partition(':')[0]}: {sum(statuses.values())} requests in "
        f"{elapsed:.1f} s (seed {SEED}): {dict(statuses)}"
    )
    assert not problems, (
        f"{len(problems)} problems (seed {SEED}):\n"
        + "\n".join(problems[:60])
        + f"\n--- end of the server's log ---\n{s.log_tail()}"
    )
    assert "Traceback" not in s.log_text(), s.log_tail()


async def fund(race: Race, account_id: str, amount: int, **fields: Any) -> None:
    """Open ``account_id`` and move ``amount`` into it from the (unlimited) bank."""
    await race.open(account_id, **fields)
    answer = await race.transfer(f"fund-{account_id}", "bank", account_id, amount)
    assert answer.status == 201, answer


# -- holds count in the limit -----------------------------------------------------------

HOLD_ROUNDS = scaled(1, 30)
SPENDS_AT_ONCE = scaled(150, 400)
SPEND = 7
WALLET_FUNDING = 1_000


async def _holds_and_spends(race: Race) -> None:
    rng = random.Random(SEED)
    await race.open("bank", normal_balance="debit")
    await race.open("shop")
    for r in range(HOLD_ROUNDS):
        wallet = f"wallet-{r}"
        await fund(race, wallet, WALLET_FUNDING, flags=DNEC)
        # Holds and spends at once, all the same amount: exactly what fits is accepted,
        # whatever the order, because a hold counts as spent.
        first = await asyncio.gather(
            *(
                race.transfer(
                    f"{wallet}-a{i}", wallet, "shop", SPEND, EXCEEDS_CREDITS, pending=i % 2 == 0
                )
                for i in range(SPENDS_AT_ONCE)
            )
        )
        accepted = [a for a in first if a.won]
        if len(accepted) != WALLET_FUNDING // SPEND:
            race.problems.append(
                f"{wallet}: {len(accepted)} of {SPENDS_AT_ONCE} holds and spends of {SPEND} "
                f"accepted against {WALLET_FUNDING}; exactly {WALLET_FUNDING // SPEND} fit"
            )
        # Then release every hold (void, or post part of it) while as many new spends
        # race for the money each release frees.
        holds = [a.body["id"] for a in accepted if a.body["pending"]]
        releases = [
            race.resolve(f"{h}-void", h, "void")
            if rng.random() < 0.5
            else race.resolve(f"{h}-post", h, "post", amount=rng.randint(1, SPEND))
            for h in holds
        ]
        spends = [
            race.transfer(
                f"{wallet}-b{i}", wallet, "shop", SPEND, EXCEEDS_CREDITS, pending=i % 3 == 0
            )
            for i in range(SPENDS_AT_ONCE)
        ]
        order = [*releases, *spends]
        rng.shuffle(order)
        await asyncio.gather(*order)


def test_holds_count_against_the_limit_so_no_race_can_overspend(
    server: tuple[str, Server],
) -> None:
    run_race(server, "holds-and-spends", _holds_and_spends, SPENDS_AT_ONCE * 2)


# -- the credit side is locked too ------------------------------------------------------

SOURCES = 32
CREDIT_CLIENTS = 64
CREDITS_PER_CLIENT = scaled(6, 200)
REPAYMENTS_AT_ONCE = scaled(200, 400)
LOAN = 1_000


async def _many_into_one(race: Race) -> None:
    await race.open("bank", normal_balance="debit")
    await race.open("pot")
    sources = [f"source-{i:02d}" for i in range(SOURCES)]
    for source in sources:
        await fund(race, source, 1_000_000, flags=DNEC)

    async def client(index: int) -> None:
        rng = random.Random(SEED * 1_000 + index)
        for j in range(CREDITS_PER_CLIENT):
            source, amount = sources[(index + j) % SOURCES], rng.randint(1, 50)
            transfer_id = f"c{index:02d}-{j:04d}"
            if j % 4:
                await race.transfer(transfer_id, source, "pot", amount)
                continue
            hold = await race.transfer(transfer_id, source, "pot", amount, pending=True)
            if hold.won and rng.random() < 0.5:
                await race.resolve(f"{transfer_id}-post", transfer_id, "post")
            elif hold.won:
                await race.resolve(f"{transfer_id}-void", transfer_id, "void")

    await asyncio.gather(*(client(i) for i in range(CREDIT_CLIENTS)))


def test_many_debits_into_one_credit_account_lose_no_update(server: tuple[str, Server]) -> None:
    run_race(server, "many-into-one", _many_into_one, CREDIT_CLIENTS)


async def _repayments(race: Race) -> None:
    await race.open("bank", normal_balance="debit")
    # A loan the bank lent LOAN from: it may be repaid (credited) up to what it lent.
    await race.open("loan", normal_balance="debit", flags=CNED)
    lent = await race.transfer("lend", "loan", "bank", LOAN)
    assert lent.status == 201, lent
    payers = [f"payer-{i:02d}" for i in range(SOURCES)]
    for payer in payers:
        await fund(race, payer, 10_000, flags=DNEC)
    exceeds = frozenset({(422, "exceeds_debits")})
    answers = await asyncio.gather(
        *(
            race.transfer(
                f"repay-{i:04d}", payers[i % SOURCES], "loan", SPEND, exceeds, pending=i % 2 == 1
            )
            for i in range(REPAYMENTS_AT_ONCE)
        )
    )
    accepted = sum(a.won for a in answers)
    if accepted != LOAN // SPEND:
        race.problems.append(
            f"{accepted} repayments of {SPEND} accepted on a loan of {LOAN}: "
            f"exactly {LOAN // SPEND} fit"
        )


def test_credits_limited_by_debits_accept_exactly_what_fits_under_a_race(
    server: tuple[str, Server],
) -> None:
    run_race(server, "repayments", _repayments, REPAYMENTS_AT_ONCE)


# -- one hold, resolved from several sides at once -----------------------------------------

RESOLVE_ROUNDS = scaled(40, 600)
ROUNDS_AT_ONCE = 20
POSTS_AT_ONCE = 8
ALREADY = frozenset(
    {(409, "pending_transfer_already_posted"), (409, "pending_transfer_already_voided")}
)
LOSING_CODE = {
    "post": "pending_transfer_already_posted",
    "void": "pending_transfer_already_voided",
}
STATUS_AFTER = {"post": "posted", "void": "voided"}


def in_groups(items: range, size: int) -> Iterator[range]:
    for start in range(items.start, items.stop, size):
        yield range(start, min(start + size, items.stop))


async def _check_one_winner(race: Race, hold: str, contenders: list[tuple[str, Answer]]) -> None:
    """Exactly one contender won; every other got the 409 naming what the winner did;
    the hold ended as the winner left it."""
    winners = [action for action, answer in contenders if answer.won]
    if len(winners) != 1:
        race.problems.append(f"{hold}: {len(winners)} winners: {contenders}")
        return
    (winner,) = winners
    for action, answer in contenders:
        if not answer.won and (answer.status, answer.code) != (409, LOSING_CODE[winner]):
            race.problems.append(f"{hold}: {action} lost to a {winner} with {answer}")
    response = await race.client.get(f"/v1/transfers/{hold}")
    if response.json()["status"] != STATUS_AFTER[winner]:
        race.problems.append(f"{hold}: the {winner} won but it is {response.json()}")


async def _post_against_void(race: Race) -> None:
    await race.open("bank", normal_balance="debit")
    await race.open("shop")
    await fund(race, "wallet", 1_000_000, flags=DNEC)

    async def round_(r: int) -> None:
        hold = f"hold-{r:04d}"
        made = await race.transfer(hold, "wallet", "shop", 10, pending=True)
        assert made.status == 201, made
        post, void = await asyncio.gather(
            race.resolve(f"{hold}-post", hold, "post", ALREADY, amount=r % 10 + 1),
            race.resolve(f"{hold}-void", hold, "void", ALREADY),
        )
        await _check_one_winner(race, hold, [("post", post), ("void", void)])

    for group in in_groups(range(RESOLVE_ROUNDS), ROUNDS_AT_ONCE):
        await asyncio.gather(*(round_(r) for r in group))


def test_a_post_and_a_void_of_one_hold_at_once_exactly_one_wins(
    server: tuple[str, Server],
) -> None:
    run_race(server, "post-against-void", _post_against_void, ROUNDS_AT_ONCE * 2)


async def _posts_against_posts(race: Race) -> None:
    await race.open("bank", normal_balance="debit")
    await race.open("shop")
    await fund(race, "wallet", 1_000_000, flags=DNEC)

    async def round_(r: int) -> None:
        hold = f"hold-{r:04d}"
        made = await race.transfer(hold, "wallet", "shop", 100, pending=True)
        assert made.status == 201, made
        posts = await asyncio.gather(
            *(
                race.resolve(f"{hold}-post-{k}", hold, "post", ALREADY, amount=100 - k)
                for k in range(POSTS_AT_ONCE)
            )
        )
        await _check_one_winner(race, hold, [("post", a) for a in posts])

    for group in in_groups(range(RESOLVE_ROUNDS // 2), ROUNDS_AT_ONCE // 2):
        await asyncio.gather(*(round_(r) for r in group))


def test_several_posts_of_one_hold_at_once_exactly_one_wins(server: tuple[str, Server]) -> None:
    run_race(server, "posts-against-posts", _posts_against_posts, ROUNDS_AT_ONCE * POSTS_AT_ONCE)


# -- opposite directions at once ----------------------------------------------------------

CROSS_CLIENTS = 64
CROSS_PER_CLIENT = scaled(10, 250)
BATCH_FAILED = frozenset({(422, "batch_failed")})


async def _both_ways(race: Race) -> None:
    await race.open("bank", normal_balance="debit")
    for name in ("a", "b", "c"):
        await fund(race, name, 100_000, flags=DNEC)

    async def client(index: int) -> None:
        rng = random.Random(SEED * 1_000 + index)
        for j in range(CROSS_PER_CLIENT):
            prefix, roll = f"x{index:02d}-{j:04d}", rng.random()
            if roll < 0.6:  # single transfers, half of them each way
                debit, credit = ("a", "b") if rng.random() < 0.5 else ("b", "a")
                await race.transfer(prefix, debit, credit, rng.randint(1, 100))
                continue
            # A batch that locks several accounts, listed in either order.
            legs = [("a", "b"), ("b", "a")] if roll < 0.8 else [("c", "b"), ("b", "a"), ("a", "c")]
            if rng.random() < 0.5:
                legs.reverse()
            items = [
                {
                    "id": f"{prefix}-{k}",
                    "debit_account_id": d,
                    "credit_account_id": c,
                    "amount": rng.randint(1, 100),
                }
                for k, (d, c) in enumerate(legs)
            ]
            atomic = rng.random() < 0.5
            body = {"transfers": items, "atomic": atomic}
            await race.send(prefix, "/v1/transfers/batch", body, BATCH_FAILED)

    await asyncio.gather(*(client(i) for i in range(CROSS_CLIENTS)))


def test_transfers_both_ways_at_once_never_deadlock_and_add_up(
    postgres_server: tuple[str, Server],
) -> None:
    run_race(postgres_server, "both-ways", _both_ways, CROSS_CLIENTS)


# -- one hot account ----------------------------------------------------------------------

HOT_CLIENTS = 256
HOT_PER_CLIENT = scaled(3, 80)
SHOPS = 16


async def _hot_account(race: Race) -> None:
    await race.open("bank", normal_balance="debit")
    # Enough for most spends, not for all: the limit is decided under the race too.
    await fund(race, "hot", 100 * HOT_CLIENTS * HOT_PER_CLIENT // 8, flags=DNEC)
    shops = [f"shop-{i:02d}" for i in range(SHOPS)]
    for shop in shops:
        await fund(race, shop, 1_000, flags=DNEC)

    async def client(index: int) -> None:
        rng = random.Random(SEED * 1_000 + index)
        for j in range(HOT_PER_CLIENT):
            transfer_id, shop, roll = f"h{index:03d}-{j:03d}", rng.choice(shops), rng.random()
            if roll < 0.4:
                await race.transfer(transfer_id, "hot", shop, rng.randint(1, 100), EXCEEDS_CREDITS)
            elif roll < 0.7:
                await race.transfer(transfer_id, shop, "hot", rng.randint(1, 50), EXCEEDS_CREDITS)
            else:
                hold = await race.transfer(
                    transfer_id, "hot", shop, rng.randint(1, 100), EXCEEDS_CREDITS, pending=True
                )
                if hold.won and rng.random() < 0.5:
                    amount = rng.randint(1, hold.body["amount"])
                    await race.resolve(f"{transfer_id}-post", transfer_id, "post", amount=amount)
                elif hold.won:
                    await race.resolve(f"{transfer_id}-void", transfer_id, "void")

    await asyncio.gather(*(client(i) for i in range(HOT_CLIENTS)))


def test_one_hot_account_under_256_concurrent_clients(postgres_server: tuple[str, Server]) -> None:
    run_race(postgres_server, "hot-account", _hot_account, HOT_CLIENTS)

"""The ledger side of a benchmark point, over Tally's HTTP API: make the accounts
before the load, and check the invariants after it.

A fast wrong answer is a failure, so every point ends with ``verify``, on a
snapshot taken once the server has finished what was in flight: double entry
(Σ debits = Σ credits, posted and pending), every no-overdraft limit honoured,
every account's totals equal to the sum of its transfers (``GET /v1/transfers``,
every page), and what the server committed matching what the load generator
counted: the number of transfers and the amounts posted and pending must fall
between what wrk saw answered and that plus what was still in flight when wrk
stopped (wrk does not drain; an unanswered request may or may not have
committed).
"""

from __future__ import annotations

import itertools
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

BANK_ID = "bank"
# Generous: a user account would need ~100,000 net debits of the largest amount
# (BENCH_AMOUNT_MAX, 10,000) to run dry, so a refusal is possible but rare.
FUNDING_AMOUNT = 1_000_000_000
CURRENCY = "USD"
HTTP_TIMEOUT_SECONDS = 60.0
SETUP_CONCURRENCY = 16
PAGE_LIMIT = 1000
SETTLE_PAUSE_SECONDS = 0.3
SETTLE_TIMEOUT_SECONDS = 60.0


def account_id(n: int) -> str:
    """Must match the Lua script's ``a%04d``."""
    return f"a{n:04d}"


@dataclass(frozen=True, slots=True)
class Ledger:
    """One tenant's book, as set up for one benchmark point."""

    base_url: str
    api_key: str
    accounts_n: int

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {self.api_key}"},
            timeout=HTTP_TIMEOUT_SECONDS,
            limits=httpx.Limits(max_connections=SETUP_CONCURRENCY),
        )

    @property
    def funding_total(self) -> int:
        return FUNDING_AMOUNT * self.accounts_n


def _check(response: httpx.Response, *statuses: int) -> Any:
    if response.status_code not in statuses:
        raise RuntimeError(
            f"{response.request.method} {response.request.url.path} answered "
            f"{response.status_code}: {response.text[:500]}"
        )
    return response.json()


def set_up(ledger: Ledger) -> None:
    """A debit-normal bank account without limits, ``accounts_n`` credit-normal
    accounts that may not be overdrawn, and one batch funding each of them."""
    with ledger.client() as client:
        _check(
            client.post(
                "/v1/accounts",
                json={"id": BANK_ID, "currency": CURRENCY, "normal_balance": "debit"},
            ),
            201,
        )

        def create(n: int) -> None:
            body = {
                "id": account_id(n),
                "currency": CURRENCY,
                "flags": {"debits_must_not_exceed_credits": True},
            }
            _check(client.post("/v1/accounts", json=body), 201)

        with ThreadPoolExecutor(SETUP_CONCURRENCY) as pool:
            list(pool.map(create, range(ledger.accounts_n)))
        for start in range(0, ledger.accounts_n, 1000):
            items = [
                {
                    "id": f"fund-{n}",
                    "debit_account_id": BANK_ID,
                    "credit_account_id": account_id(n),
                    "amount": FUNDING_AMOUNT,
                }
                for n in range(start, min(start + 1000, ledger.accounts_n))
            ]
            body = _check(
                client.post("/v1/transfers/batch", json={"transfers": items, "atomic": True}),
                201,
            )
            assert all(r["status"] == "created" for r in body["results"])


def _walk(client: httpx.Client, path: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    params: dict[str, str | int] = {"limit": PAGE_LIMIT}
    while True:
        page = _check(client.get(path, params=params), 200)
        items.extend(page["data"])
        if not page["has_more"]:
            return items
        params["cursor"] = page["next_cursor"]


@dataclass(slots=True)
class Verdict:
    ok: bool = True
    violations: list[str] = field(default_factory=list)
    figures: dict[str, int | float] = field(default_factory=dict)

    def fail(self, message: str) -> None:
        self.ok = False
        self.violations.append(message)


_TOTALS = ("debits_posted", "credits_posted", "debits_pending", "credits_pending")


def _recomputed(transfers: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Each account's four totals, as its transfers say they should be.

    A single-phase transfer and a post record move posted money; a pending
    transfer still pending holds pending money; once resolved, it holds nothing
    (its post record carries the movement; a void record moves nothing)."""
    totals: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(_TOTALS, 0))
    for t in transfers:
        if t["pending_id"] is None and t["pending"]:
            if t["status"] != "pending":
                continue
            kind = "pending"
        elif t["status"] == "posted":
            kind = "posted"
        else:
            continue
        totals[t["debit_account_id"]][f"debits_{kind}"] += t["amount"]
        totals[t["credit_account_id"]][f"credits_{kind}"] += t["amount"]
    return totals


def _settled_snapshot(client: httpx.Client) -> tuple[list[Any], list[Any], int]:
    """Accounts and transfers from one quiet moment.

    wrk stops without draining, so the server may still be committing what was in
    flight. Every change bumps the versions of the accounts it touches, so if the
    accounts read before and after the transfer walk are identical, no transfer
    committed in between and the two lists agree."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_SECONDS
    before = _walk(client, "/v1/accounts")
    for attempt in itertools.count(1):
        time.sleep(SETTLE_PAUSE_SECONDS)
        transfers = _walk(client, "/v1/transfers")
        after = _walk(client, "/v1/accounts")
        if after == before:
            return after, transfers, attempt
        if time.monotonic() > deadline:
            raise RuntimeError(f"the ledger was still changing {SETTLE_TIMEOUT_SECONDS} s later")
        before = after
    raise AssertionError("unreachable")


def verify(ledger: Ledger, load: dict[str, Any]) -> Verdict:
    """Check the invariants after a point; ``load`` is the Lua script's summary."""
    verdict = Verdict()
    started = time.monotonic()
    with ledger.client() as client:
        accounts, transfers, attempts = _settled_snapshot(client)
    verdict.figures["verify_seconds"] = round(time.monotonic() - started, 2)
    verdict.figures["settle_attempts"] = attempts
    verdict.figures["transfers_listed"] = len(transfers)
    _check_double_entry(verdict, accounts, ledger)
    _check_against_transfers(verdict, accounts, transfers)
    _check_against_load(verdict, accounts, transfers, ledger, load)
    return verdict


def _check_double_entry(verdict: Verdict, accounts: list[dict[str, Any]], ledger: Ledger) -> None:
    if len(accounts) != ledger.accounts_n + 1:
        verdict.fail(f"{len(accounts)} accounts listed, expected {ledger.accounts_n + 1}")
    sums = {name: sum(a[name] for a in accounts) for name in _TOTALS}
    verdict.figures.update({f"sum_{name}": value for name, value in sums.items()})
    if sums["debits_posted"] != sums["credits_posted"]:
        verdict.fail(f"Σ debits_posted {sums['debits_posted']} ≠ Σ credits_posted")
    if sums["debits_pending"] != sums["credits_pending"]:
        verdict.fail(f"Σ debits_pending {sums['debits_pending']} ≠ Σ credits_pending")
    for a in accounts:
        if any(a[name] < 0 for name in _TOTALS):
            verdict.fail(f"account {a['id']} has a negative total: {a}")
        limited = a["flags"]["debits_must_not_exceed_credits"]
        if limited and a["debits_posted"] + a["debits_pending"] > a["credits_posted"]:
            verdict.fail(
                f"account {a['id']} overdrawn: debits_posted {a['debits_posted']} + "
                f"debits_pending {a['debits_pending']} > credits_posted {a['credits_posted']}"
            )


def _check_against_transfers(
    verdict: Verdict, accounts: list[dict[str, Any]], transfers: list[dict[str, Any]]
) -> None:
    expected = _recomputed(transfers)
    wrong = [
        a["id"] for a in accounts if any(a[name] != expected[a["id"]][name] for name in _TOTALS)
    ]
    if wrong:
        verdict.fail(
            f"{len(wrong)} accounts' totals differ from the sum of their transfers "
            f"(e.g. {wrong[:5]})"
        )
    ids = [t["id"] for t in transfers]
    if len(set(ids)) != len(ids):
        verdict.fail(f"the transfer list repeats {len(ids) - len(set(ids))} ids")


def _within(verdict: Verdict, name: str, actual: int, low: int, high: int) -> None:
    verdict.figures[name] = actual
    if not low <= actual <= high:
        verdict.fail(f"{name} = {actual}, but the load generator's counts allow {low}…{high}")


def _check_against_load(
    verdict: Verdict,
    accounts: list[dict[str, Any]],
    transfers: list[dict[str, Any]],
    ledger: Ledger,
    load: dict[str, Any],
) -> None:
    """What wrk counted as created, plus at most what was unanswered at its end."""
    unanswered = {
        name: load[f"unanswered_{name}"]
        for name in ("items", "posted_amount_max", "pending_amount_max", "pending_release_max")
    }
    _within(
        verdict,
        "transfers_created",
        len(transfers) - ledger.accounts_n,  # less the funding transfers
        load["created"],
        load["created"] + unanswered["items"],
    )
    posted = sum(a["debits_posted"] for a in accounts) - ledger.funding_total
    _within(
        verdict,
        "amount_posted",
        posted,
        load["posted_amount"],
        load["posted_amount"] + unanswered["posted_amount_max"],
    )
    _within(
        verdict,
        "amount_pending",
        sum(a["debits_pending"] for a in accounts),
        load["pending_open_amount"] - unanswered["pending_release_max"],
        load["pending_open_amount"] + unanswered["pending_amount_max"],
    )
    if load["unmatched"]:
        verdict.fail(f"{load['unmatched']} responses did not match a request the script sent")

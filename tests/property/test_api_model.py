"""The HTTP API against its model: the pure ledger core, run in memory.

A hypothesis state machine sends random sequences of requests to the real app
(``create_app`` over Starlette's TestClient: real request parsing, the batching
writer, real storage) on SQLite and on PostgreSQL: accounts in three currencies
with either limit flag, both or none; single-phase and two-phase transfers; full
and partial posts, voids; time passing and expiry rounds; batches, atomic or not;
metadata changes and closing, with and without ``If-Match``; repeated creates of
an id; and keyed requests retried with the same body (a byte-for-byte replay) and
with another one (422 ``idempotency_key_reused``).

The model is ``tally.core.Book`` holding the tenant's whole ledger in memory, fed
the same commands with the same ids at the same instant. Every answer is checked
against what the model decided: the status, the ``code``, the core's ``detail``
and ``fields``, and every field of every object, rendered here from the model
independently of the app's own renderers (api.md §1 for the balances, §5 for the
statuses). After every step the server's accounts, transfers, new events and new
balance-history rows must equal the model's, debits must equal credits per
currency, and no limited account may be over its limit.

Time is a ``FakeClock`` that stands still until the test moves it, so every
``created_at`` and ``expires_at`` is known exactly. The app's expiry loop is a
timer around ``tally.expiry.expire_due``; the test stops the timer and runs the
rounds itself, at the instants it chooses, so a hold past its deadline stays
pending (and unpostable) until the test lets a round run.

``TALLY_SOAK=1`` runs many more and longer sequences (see tests/soak.py).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from starlette.testclient import TestClient

from tally.api import create_app
from tally.config import Settings
from tally.core import (
    AMOUNT_MAX,
    Account,
    BalanceChange,
    Book,
    Command,
    CreateAccount,
    CreateTransfer,
    Event,
    ExpirePending,
    NormalBalance,
    Outcome,
    PostPending,
    Status,
    Transfer,
    TransferStatus,
    UpdateAccount,
    VoidPending,
)
from tally.identity.tenants import create_tenant
from tally.ledger.expiry import expire_due
from tests.conftest import FakeClock
from tests.soak import scaled

pytestmark = pytest.mark.slow

PROBLEM = "application/problem+json"
JSON = "application/json"
MICROSECONDS_PER_SECOND = 1_000_000
EXPIRY_BATCH_MAX = 1_000
PAGE_MAX = 1_000

# api.md §5: the status of every code the ledger core decides (the rest are 422).
STATUS_OF_CODE = {
    "not_found": 404,
    "pending_transfer_not_found": 404,
    "exists_with_different_fields": 409,
    "pending_transfer_not_pending": 409,
    "pending_transfer_already_posted": 409,
    "pending_transfer_already_voided": 409,
    "pending_transfer_expired": 409,
    "precondition_failed": 412,
}

CURRENCIES = ("USD", "EUR", "PTS")
# Small pools of client ids, so that repeats (identical or conflicting) are common.
ACCOUNT_IDS = tuple(f"a{i}" for i in range(6))
TRANSFER_IDS = tuple(f"t{i}" for i in range(12))
# Post and void records take their own ids, and now and then a transfer's.
RECORD_IDS = (*(f"r{i}" for i in range(6)), "t0", "t1")
NOBODY = "nobody"  # an account id that is never created
METADATA = ({}, {"k": "v"}, {"k": "w", "n": "1"})
STARTING_ACCOUNTS = (
    {"id": "bank", "currency": "USD", "normal_balance": "debit"},
    {"id": "eur-bank", "currency": "EUR", "normal_balance": "debit"},
    {"id": "alice", "currency": "USD", "flags": {"debits_must_not_exceed_credits": True}},
    {"id": "bob", "currency": "USD", "flags": {"debits_must_not_exceed_credits": True}},
    {
        "id": "loan",
        "currency": "USD",
        "normal_balance": "debit",
        "flags": {"credits_must_not_exceed_debits": True},
    },
    {"id": "eur-wallet", "currency": "EUR", "flags": {"debits_must_not_exceed_credits": True}},
)
BANK_HOLDS = (("bank", "alice"), ("bank", "bob"), ("bank", "loan"), ("eur-bank", "eur-wallet"))
NEVER_MADE = {"debit_account_id": "bank", "credit_account_id": NOBODY, "amount": 1}

# Mostly small; one in twenty near 2^63-1, for the overflow checks (more would
# soon leave every account too full to move anything).
amounts = st.integers(0, 19).flatmap(
    lambda n: st.integers(AMOUNT_MAX - 1_000, AMOUNT_MAX) if n == 0 else st.integers(1, 500)
)
timeouts = st.one_of(st.none(), st.integers(1, 10), st.integers(1, 10))
# Whole seconds land exactly on deadlines, one microsecond either side of them
# just before or after; the rest anywhere.
advances_us = st.one_of(
    st.sampled_from([0, 1, MICROSECONDS_PER_SECOND - 1, MICROSECONDS_PER_SECOND]),
    st.integers(1, 12).map(lambda s: s * MICROSECONDS_PER_SECOND),
    st.integers(0, 12 * MICROSECONDS_PER_SECOND),
)
keyed = st.sampled_from([False, False, True])


# -- the app, on a clock that stands still --------------------------------------------


class FrozenClock(FakeClock):
    """A FakeClock that does not follow real time: it moves only when told to,
    so the instant of every write (and so every deadline) is known to the test."""

    def __init__(self) -> None:
        super().__init__()
        self.start_us = time.time_ns() // 1000

    def __call__(self) -> int:
        return self.start_us + self.offset_us

    def advance_us(self, microseconds: int) -> None:
        assert microseconds >= 0
        self.offset_us += microseconds


async def _stop_expiry_timer() -> int:
    """Cancel the app's expiry loop (only its timer: its round, ``expire_due``, is
    what the test runs); returns how many loops it found."""
    loops = [t for t in asyncio.all_tasks() if t.get_name() == "tally-expiry"]
    for task in loops:
        task.cancel()
    return len(loops)


@dataclass
class Harness:
    client: TestClient
    clock: FrozenClock
    backend: str
    counts: Counter[str] = field(default_factory=Counter)
    decided: Counter[str] = field(default_factory=Counter)

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        portal = self.client.portal
        assert portal is not None, "the TestClient is not running"
        return portal.call(fn, *args)

    def new_tenant(self) -> str:
        """A fresh tenant and its API key, made the way ``tally tenants create`` does,
        through the app's own store (one example, one tenant)."""
        store = self.client.app.state.services.store
        _, api_key = self._call(create_tenant, store, "model", self.clock())
        return api_key

    def expiry_round(self) -> None:
        services = self.client.app.state.services
        self._call(expire_due, services.store, services.writer, self.clock(), EXPIRY_BATCH_MAX)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self.client.request(method, path, **kwargs)
        self.counts["requests"] += 1
        self.counts[f"{method} {response.status_code}"] += 1
        assert response.status_code < 500, f"{method} {path} -> {response.text}"
        assert response.headers.get("request-id"), response.headers
        return response


@pytest.fixture
def harness(own_database_url: str) -> Iterator[Harness]:
    clock = FrozenClock()
    app = create_app(Settings(database_url=own_database_url), clock=clock)
    with TestClient(app, raise_server_exceptions=False) as client:
        h = Harness(client, clock, own_database_url.partition(":")[0])
        assert h._call(_stop_expiry_timer) == 1
        yield h


# -- what the server must answer, rendered from the model -------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def iso(us: int | None) -> str | None:
    if us is None:
        return None
    return (_EPOCH + timedelta(microseconds=us)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def balance_json(normal: NormalBalance, dp: int, dpo: int, cp: int, cpo: int) -> dict[str, int]:
    """api.md §1: credit-normal reads credits minus debits, debit-normal the mirror."""
    if normal is NormalBalance.CREDIT:
        return {"posted": cpo - dpo, "pending": cp - dp, "available": cpo - dpo - dp}
    return {"posted": dpo - cpo, "pending": dp - cp, "available": dpo - cpo - cp}


def totals_of(a: Account) -> tuple[int, int, int, int]:
    return (a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted)


def account_json(a: Account) -> dict[str, Any]:
    return {
        "id": a.id,
        "object": "account",
        "currency": a.currency,
        "normal_balance": a.normal_balance.value,
        "flags": {
            "debits_must_not_exceed_credits": a.debits_must_not_exceed_credits,
            "credits_must_not_exceed_debits": a.credits_must_not_exceed_debits,
        },
        "status": a.status.value,
        "debits_pending": a.debits_pending,
        "debits_posted": a.debits_posted,
        "credits_pending": a.credits_pending,
        "credits_posted": a.credits_posted,
        "balance": balance_json(a.normal_balance, *totals_of(a)),
        "metadata": a.metadata,
        "version": a.version,
        "created_at": iso(a.created_at_us),
        "updated_at": iso(a.updated_at_us),
    }


def transfer_json(t: Transfer) -> dict[str, Any]:
    return {
        "id": t.id,
        "object": "transfer",
        "debit_account_id": t.debit_account_id,
        "credit_account_id": t.credit_account_id,
        "amount": t.amount,
        "currency": t.currency,
        "pending": t.pending,
        "status": t.status.value,
        "timeout_seconds": t.timeout_seconds,
        "expires_at": iso(t.expires_at_us),
        "pending_id": t.pending_id,
        "resolved_at": iso(t.resolved_at_us),
        "metadata": t.metadata,
        "created_at": iso(t.created_at_us),
    }


def object_json(o: Account | Transfer) -> dict[str, Any]:
    return account_json(o) if isinstance(o, Account) else transfer_json(o)


def event_json(e: Event) -> dict[str, Any]:
    return {
        "sequence": e.sequence,
        "type": e.type,
        "created_at": iso(e.created_at_us),
        "data": object_json(e.data),
    }


def history_json(change: BalanceChange) -> dict[str, Any]:
    a = change.account
    return {
        "account_id": a.id,
        "object": "balance",
        "version": a.version,
        "transfer_id": change.transfer_id,
        "debits_pending": a.debits_pending,
        "debits_posted": a.debits_posted,
        "credits_pending": a.credits_pending,
        "credits_posted": a.credits_posted,
        "balance": balance_json(a.normal_balance, *totals_of(a)),
        "created_at": iso(a.updated_at_us),
    }


def assert_problem(r: httpx.Response, code: str, status: int | None = None) -> dict[str, Any]:
    expected_status = status or STATUS_OF_CODE.get(code, 422)
    assert (r.status_code, r.headers["content-type"]) == (expected_status, PROBLEM), r.text
    problem: dict[str, Any] = r.json()
    assert problem["code"] == code, problem
    assert problem["status"] == expected_status
    assert problem["type"] == f"urn:tally:problem:{code}"
    assert problem["title"] and problem["detail"]
    assert problem["request_id"] == r.headers["request-id"] or r.headers.get("idempotent-replayed")
    return problem


def assert_refused(r: httpx.Response, outcome: Outcome) -> None:
    assert outcome.code is not None
    problem = assert_problem(r, outcome.code.value)
    assert problem["detail"] == outcome.detail, (problem, outcome)
    assert problem.get("fields") == (list(outcome.fields) if outcome.fields else None)


def assert_object_answer(r: httpx.Response, outcome: Outcome, location: str | None) -> None:
    """A create, post, void or update: the object the model holds, or its refusal."""
    if not outcome.ok:
        assert_refused(r, outcome)
        return
    assert outcome.object is not None
    expected_status = 201 if outcome.status is Status.CREATED else 200
    assert (r.status_code, r.headers["content-type"]) == (expected_status, JSON), r.text
    assert r.json() == object_json(outcome.object)
    if location is not None:
        assert r.headers["location"] == f"{location}/{outcome.object.id}"
    if isinstance(outcome.object, Account):
        assert r.headers["etag"] == f'"{outcome.object.version}"'


def batch_result_json(index: int, outcome: Outcome) -> dict[str, Any]:
    if outcome.ok:
        assert isinstance(outcome.object, Transfer)
        status = "created" if outcome.status is Status.CREATED else "exists"
        return {
            "index": index,
            "status": status,
            "transfer": transfer_json(outcome.object),
            "error": None,
        }
    assert outcome.code is not None
    return {
        "index": index,
        "status": "failed",
        "transfer": None,
        "error": {"code": outcome.code.value, "detail": outcome.detail},
    }


# -- the model --------------------------------------------------------------------------


@dataclass
class Model:
    """One tenant's ledger, decided by the pure core alone."""

    accounts: dict[str, Account] = field(default_factory=dict)
    transfers: dict[str, Transfer] = field(default_factory=dict)
    sequence: int = 0
    events: list[Event] = field(default_factory=list)
    history: dict[str, list[BalanceChange]] = field(default_factory=lambda: defaultdict(list))
    # What the core decided, by status or code: how much of the ground a run covered.
    decided: Counter[str] = field(default_factory=Counter)

    def run(self, commands: list[Command], now_us: int, *, atomic: bool = False) -> list[Outcome]:
        book = Book(
            self.accounts.values(),
            self.transfers.values(),
            now_us=now_us,
            last_sequence=self.sequence,
        )
        outcomes = book.execute(commands, atomic=atomic)
        self.decided.update(o.code.value if o.code else o.status.value for o in outcomes)
        changes = book.changes()
        self.accounts, self.transfers = book.accounts, book.transfers
        self.sequence = book.last_sequence
        self.events += changes.events
        for change in changes.balance_changes:
            self.history[change.account.id].append(change)
        return outcomes

    def holds(self, *, open_only: bool) -> list[str]:
        return [
            t.id
            for t in self.in_order(self.transfers)
            if t.pending and (t.status is TransferStatus.PENDING or not open_only)
        ]

    @staticmethod
    def in_order(objects: dict[str, Any]) -> list[Any]:
        """In creation order: the test draws from these lists, and must draw the same
        objects when hypothesis replays the same choices. (Sorting by id would not:
        the ids the server makes differ from run to run.)"""
        return sorted(objects.values(), key=lambda o: o.sequence)

    def ids(self, objects: dict[str, Any]) -> list[str]:
        return [o.id for o in self.in_order(objects)]


@dataclass(frozen=True)
class Keyed:
    """A request sent with an Idempotency-Key, and what it answered."""

    key: str
    method: str
    path: str
    content: bytes
    status: int
    body: bytes
    headers: dict[str, str | None]


# Items of a transfer request or a batch: the body, and the model's command once
# the id is known (the client's, or the one the server chose).
Item = tuple[dict[str, Any], Callable[[str], Command]]


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self, harness: Harness) -> None:
        super().__init__()
        self.h = harness
        self.model = Model(decided=harness.decided)
        self.auth = {"Authorization": f"Bearer {harness.new_tenant()}"}
        self.keys = itertools.count()
        self.keyed: list[Keyed] = []
        self.creates: list[tuple[str, dict[str, Any]]] = []
        self.unused_ids = itertools.count()
        self.events_checked = 0
        self.history_checked: Counter[str] = Counter()
        harness.counts["examples"] += 1

    # -- sending --------------------------------------------------------------------

    def send(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        *,
        key: bool = False,
        extra_headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        content = b"" if body is None else json.dumps(body).encode()
        headers = {**self.auth, **(extra_headers or {})}
        if body is not None:
            headers["Content-Type"] = JSON
        if key:
            headers["Idempotency-Key"] = f"key-{next(self.keys)}"
        r = self.h.request(method, path, content=content, headers=headers)
        if key:
            self.keyed.append(
                Keyed(
                    headers["Idempotency-Key"],
                    method,
                    path,
                    content,
                    r.status_code,
                    r.content,
                    {n: r.headers.get(n) for n in ("content-type", "location", "etag")},
                )
            )
            assert "idempotent-replayed" not in r.headers
        self.h.counts["steps"] += 1
        return r

    def id_of(self, r: httpx.Response, body: dict[str, Any]) -> str:
        """The id the server used: the client's, else the one it made (a refused
        request made none that matters, so any fresh id stands in for it)."""
        if "id" in body:
            return str(body["id"])
        if r.status_code in (200, 201):
            return str(r.json()["id"])
        return f"unused-{next(self.unused_ids)}"

    # -- drawing requests -----------------------------------------------------------

    def draw_account_body(self, data: st.DataObject) -> dict[str, Any]:
        body: dict[str, Any] = {"currency": data.draw(st.sampled_from(CURRENCIES))}
        account_id = data.draw(st.one_of(st.none(), st.sampled_from(ACCOUNT_IDS)))
        if account_id is not None:
            body["id"] = account_id
        normal = data.draw(st.sampled_from([None, "credit", "debit"]))
        if normal is not None:
            body["normal_balance"] = normal
        flags = data.draw(
            st.sampled_from(
                [
                    None,
                    {},
                    {"debits_must_not_exceed_credits": True},
                    {"credits_must_not_exceed_debits": True},
                    {
                        "debits_must_not_exceed_credits": False,
                        "credits_must_not_exceed_debits": True,
                    },
                    # Both at once: refused by the core.
                    {
                        "debits_must_not_exceed_credits": True,
                        "credits_must_not_exceed_debits": True,
                    },
                ]
            )
        )
        if flags is not None:
            body["flags"] = flags
        metadata = data.draw(st.sampled_from(METADATA))
        if metadata:
            body["metadata"] = metadata
        return body

    def draw_accounts(self, data: st.DataObject) -> tuple[str, str]:
        known = self.model.ids(self.model.accounts)
        debit = data.draw(st.sampled_from([*known, NOBODY]), label="debit")
        currency = self.model.accounts[debit].currency if debit in self.model.accounts else None
        partners = [a for a in known if a != debit and self.model.accounts[a].currency == currency]
        if partners and data.draw(st.integers(0, 9), label="partner") > 0:
            return debit, data.draw(st.sampled_from(partners), label="credit")
        return debit, data.draw(st.sampled_from([*known, NOBODY]), label="credit")

    def draw_create_item(self, data: st.DataObject, *, hold: bool = False) -> Item:
        debit, credit = self.draw_accounts(data)
        if hold and data.draw(st.integers(0, 2), label="from a bank?") > 0:
            # Mostly from a bank, which has no limit: a hold that is accepted, so that
            # it can be posted, voided and expired later in the sequence.
            debit, credit = data.draw(st.sampled_from(BANK_HOLDS), label="bank hold")
        body: dict[str, Any] = {
            "debit_account_id": debit,
            "credit_account_id": credit,
            "amount": data.draw(amounts, label="amount"),
        }
        transfer_id = data.draw(st.one_of(st.none(), st.sampled_from(TRANSFER_IDS)), label="id")
        if transfer_id is not None:
            body["id"] = transfer_id
        pending = hold or data.draw(st.booleans(), label="pending")
        if pending:
            body["pending"] = True
        timeout = data.draw(timeouts, label="timeout") if pending else None
        if hold and timeout is None:
            timeout = data.draw(st.integers(1, 10), label="hold timeout")
        if not pending and data.draw(st.integers(0, 19), label="mistake") == 0:
            timeout = 5  # a timeout without pending: refused by the core
        if timeout is not None:
            body["timeout_seconds"] = timeout
        if data.draw(st.integers(0, 4), label="currency?") == 0:
            body["currency"] = data.draw(st.sampled_from(CURRENCIES))
        metadata = data.draw(st.sampled_from(METADATA), label="metadata")
        if metadata:
            body["metadata"] = metadata
        return body, lambda id: transfer_command(id, body)

    def draw_hold(self, data: st.DataObject) -> str:
        """Mostly a hold still open; sometimes a resolved one, a transfer that was
        never pending, or one that does not exist."""
        choices = [
            st.sampled_from(ids)
            for ids in (
                self.model.holds(open_only=True),
                self.model.holds(open_only=True),
                self.model.holds(open_only=False),
                self.model.ids(self.model.transfers),
            )
            if ids
        ]
        return data.draw(st.one_of(*choices, st.just("ghost")), label="pending_id")

    def draw_resolution(self, data: st.DataObject, pending_id: str, action: str) -> dict[str, Any]:
        body: dict[str, Any] = {}
        # Now and then the id of an earlier post or void: a retry of it, or a mistake.
        records = [t.id for t in self.model.in_order(self.model.transfers) if t.pending_id]
        choices = [st.none(), st.sampled_from(RECORD_IDS)]
        if records:
            choices.append(st.sampled_from(records))
        record_id = data.draw(st.one_of(*choices), label="record")
        if record_id is not None:
            body["id"] = record_id
        if action == "post" and data.draw(st.booleans(), label="partial?"):
            hold = self.model.transfers.get(pending_id)
            full = hold.amount if hold is not None else 100
            # Mostly at most the hold, sometimes one more than it.
            body["amount"] = data.draw(st.integers(1, min(full, AMOUNT_MAX - 1) + 1))
        metadata = data.draw(st.sampled_from(METADATA), label="metadata")
        if metadata:
            body["metadata"] = metadata
        return body

    # -- rules ------------------------------------------------------------------------

    @initialize()
    def open_the_books(self) -> None:
        """Banks to fund from (debit-normal, unlimited), wallets that may not overdraw,
        a loan that may not be over-repaid, and money in the wallets."""
        for body in STARTING_ACCOUNTS:
            self.create_account_with(body, False)
        for wallet, bank in (("alice", "bank"), ("bob", "bank"), ("eur-wallet", "eur-bank")):
            item = {"debit_account_id": bank, "credit_account_id": wallet, "amount": 1_000}
            self.create_transfer_with((item, lambda id, b=item: transfer_command(id, b)), False)

    @rule(data=st.data(), key=keyed)
    def create_account(self, data: st.DataObject, key: bool) -> None:
        self.create_account_with(self.draw_account_body(data), key)

    def create_account_with(self, body: dict[str, Any], key: bool) -> None:
        r = self.send("POST", "/v1/accounts", body, key=key)
        flags = body.get("flags", {})
        command = CreateAccount(
            id=self.id_of(r, body),
            currency=body["currency"],
            normal_balance=NormalBalance(body.get("normal_balance", "credit")),
            debits_must_not_exceed_credits=flags.get("debits_must_not_exceed_credits", False),
            credits_must_not_exceed_debits=flags.get("credits_must_not_exceed_debits", False),
            metadata=body.get("metadata", {}),
        )
        (outcome,) = self.model.run([command], self.h.clock())
        assert_object_answer(r, outcome, "/v1/accounts")
        self.creates.append(("/v1/accounts", body))

    @rule(data=st.data(), key=keyed)
    def create_transfer(self, data: st.DataObject, key: bool) -> None:
        self.create_transfer_with(self.draw_create_item(data), key)

    def create_transfer_with(self, item: Item, key: bool) -> None:
        body, command_for = item
        r = self.send("POST", "/v1/transfers", body, key=key)
        (outcome,) = self.model.run([command_for(self.id_of(r, body))], self.h.clock())
        assert_object_answer(r, outcome, "/v1/transfers")
        self.creates.append(("/v1/transfers", body))

    @rule(data=st.data(), key=keyed)
    def hold_money(self, data: st.DataObject, key: bool) -> None:
        """A two-phase transfer with a deadline: a rule of its own, so that holds
        are common enough to be posted, voided and expired in most sequences."""
        self.create_transfer_with(self.draw_create_item(data, hold=True), key)

    @precondition(lambda self: self.creates)
    @rule(data=st.data())
    def repeat_a_create(self, data: st.DataObject) -> None:
        """The same body again, without a key: an id makes it idempotent (200 with
        the object as it is now, or 409 if it changed); without one it is new."""
        path, body = data.draw(st.sampled_from(self.creates))
        if path == "/v1/accounts":
            self.create_account_with(body, False)
        else:
            self.create_transfer_with((body, lambda id: transfer_command(id, body)), False)

    @rule(data=st.data(), action=st.sampled_from(["post", "void"]), key=keyed)
    def resolve_a_hold(self, data: st.DataObject, action: str, key: bool) -> None:
        pending_id = self.draw_hold(data)
        body = self.draw_resolution(data, pending_id, action)
        # An empty body, no body at all and {} all mean the same (docs/api.md).
        sent = None if not body and data.draw(st.booleans(), label="no body") else body
        r = self.send("POST", f"/v1/transfers/{pending_id}/{action}", sent, key=key)
        command = resolution_command(self.id_of(r, body), pending_id, action, body)
        (outcome,) = self.model.run([command], self.h.clock())
        assert_object_answer(r, outcome, "/v1/transfers")

    @rule(data=st.data(), atomic=st.booleans(), key=keyed)
    def send_a_batch(self, data: st.DataObject, atomic: bool, key: bool) -> None:
        items: list[Item] = []
        for _ in range(data.draw(st.integers(1, 5), label="items")):
            if self.model.holds(open_only=False) and data.draw(st.booleans(), label="action?"):
                action = data.draw(st.sampled_from(["post", "void"]))
                pending_id = self.draw_hold(data)
                fields = self.draw_resolution(data, pending_id, action)
                item_body = {"pending_id": pending_id, "action": action, **fields}
                items.append(
                    (
                        item_body,
                        lambda id, p=pending_id, a=action, f=fields: resolution_command(
                            id, p, a, f
                        ),
                    )
                )
            else:
                items.append(self.draw_create_item(data))
        body: dict[str, Any] = {"transfers": [b for b, _ in items]}
        if atomic or data.draw(st.booleans(), label="say atomic: false"):
            body["atomic"] = atomic
        r = self.send("POST", "/v1/transfers/batch", body, key=key)
        answered = r.json().get("results") or []
        commands = []
        for index, (item_body, command_for) in enumerate(items):
            result = answered[index] if index < len(answered) else {}
            if "id" in item_body:
                item_id = str(item_body["id"])
            elif result.get("transfer"):
                item_id = result["transfer"]["id"]
            else:
                item_id = f"unused-{next(self.unused_ids)}"
            commands.append(command_for(item_id))
        outcomes = self.model.run(commands, self.h.clock(), atomic=atomic)
        expected = [batch_result_json(i, o) for i, o in enumerate(outcomes)]
        if atomic and not all(o.ok for o in outcomes):
            problem = assert_problem(r, "batch_failed")
            failed = next(o for o in outcomes if o.code and o.code.value != "linked_event_failed")
            assert failed.detail in problem["detail"]
            assert problem["results"] == expected
            return
        assert (r.status_code, r.headers["content-type"]) == (201 if atomic else 200, JSON), r.text
        assert r.json() == {"results": expected}

    @rule(
        data=st.data(),
        close=st.sampled_from([False, False, False, True]),
        patch=st.sampled_from([None, {"k": "x"}, {"k": None}, {"n": "2", "k": None}]),
        precondition_=st.sampled_from([None, "current", "stale", "*"]),
        key=keyed,
    )
    def update_an_account(
        self,
        data: st.DataObject,
        close: bool,
        patch: dict[str, str | None] | None,
        precondition_: str | None,
        key: bool,
    ) -> None:
        account_id = data.draw(st.sampled_from([*self.model.ids(self.model.accounts), NOBODY]))
        body: dict[str, Any] = {}
        if close:
            body["status"] = "closed"
        if patch is not None:
            body["metadata"] = patch
        headers: dict[str, str] = {}
        expected_version = None
        account = self.model.accounts.get(account_id)
        if precondition_ == "*":
            headers["If-Match"] = "*"
        elif precondition_ is not None:
            version = account.version if account is not None else 1
            expected_version = version if precondition_ == "current" else version - 1
            headers["If-Match"] = f'"{expected_version}"'
        r = self.send("PATCH", f"/v1/accounts/{account_id}", body, key=key, extra_headers=headers)
        command = UpdateAccount(
            id=account_id, metadata=patch, close=close, expected_version=expected_version
        )
        (outcome,) = self.model.run([command], self.h.clock())
        assert_object_answer(r, outcome, None)

    @rule(advance_us=advances_us, run_expiry=st.sampled_from([True, True, False]))
    def time_passes(self, advance_us: int, run_expiry: bool) -> None:
        """Time moves; then an expiry round runs, or (to catch a hold that is past its
        deadline but not yet expired) does not, until a later step."""
        self.h.clock.advance_us(advance_us)
        self.h.counts["clock moves"] += 1
        if run_expiry:
            self.expiry_round()

    @precondition(lambda self: self.deadlines())
    @rule(
        data=st.data(),
        off_by_us=st.sampled_from([-1, 0, 0, 1]),
        run_expiry=st.sampled_from([True, True, False]),
    )
    def time_reaches_a_deadline(
        self, data: st.DataObject, off_by_us: int, run_expiry: bool
    ) -> None:
        """Time moves to an open hold's deadline, or a microsecond either side of it."""
        deadline = data.draw(st.sampled_from(self.deadlines()), label="deadline")
        self.h.clock.advance_us(max(deadline + off_by_us - self.h.clock(), 0))
        self.h.counts["clock moves"] += 1
        if run_expiry:
            self.expiry_round()

    def deadlines(self) -> list[int]:
        """The deadlines of open holds that are still ahead."""
        now = self.h.clock()
        return sorted(
            t.expires_at_us
            for t in self.model.transfers.values()
            if t.status is TransferStatus.PENDING
            and t.expires_at_us is not None
            and t.expires_at_us > now
        )

    def expiry_round(self) -> None:
        now = self.h.clock()
        self.h.expiry_round()
        self.h.counts["expiry rounds"] += 1
        # The round is the only writer, so the tenant's new events are its expiries,
        # in the order the server took the due holds (by deadline; ties in any order).
        new = self.get_page(f"/v1/events?after={self.model.sequence}")
        assert {e["type"] for e in new} <= {"transfer.expired"}, new
        order = [e["data"]["id"] for e in new]
        due = [
            t
            for t in self.model.transfers.values()
            if t.status is TransferStatus.PENDING
            and t.expires_at_us is not None
            and t.expires_at_us <= now
        ]
        assert sorted(order) == sorted(t.id for t in due), (order, due)
        deadlines = [self.model.transfers[i].expires_at_us or 0 for i in order]
        assert deadlines == sorted(deadlines), "due holds are expired by deadline"
        outcomes = self.model.run([ExpirePending(i) for i in order], now)
        assert all(o.status is Status.UPDATED for o in outcomes), outcomes
        self.h.counts["expired"] += len(order)

    @precondition(lambda self: self.keyed)
    @rule(data=st.data())
    def retry_with_the_same_key_and_body(self, data: st.DataObject) -> None:
        """Byte for byte what the first answer was, however the body is laid out,
        whatever happened since; nothing runs again (the invariants check that)."""
        first = data.draw(st.sampled_from(self.keyed))
        content = first.content
        if content and data.draw(st.booleans(), label="relayout"):
            content = json.dumps(json.loads(content), sort_keys=True, indent=1).encode()
        headers = {**self.auth, "Idempotency-Key": first.key}
        if first.content:
            headers["Content-Type"] = JSON
        r = self.h.request(first.method, first.path, content=content, headers=headers)
        assert (r.status_code, r.content) == (first.status, first.body)
        assert r.headers["idempotent-replayed"] == "true"
        assert {n: r.headers.get(n) for n in first.headers} == first.headers
        self.h.counts["replays"] += 1

    @precondition(lambda self: self.keyed)
    @rule(data=st.data(), elsewhere=st.booleans())
    def reuse_a_key_for_another_request(self, data: st.DataObject, elsewhere: bool) -> None:
        first = data.draw(st.sampled_from(self.keyed))
        if elsewhere:  # another path altogether
            method, path, body = "POST", "/v1/accounts", {"currency": "USD", "id": "never-made"}
            if first.path == path:
                path, body = "/v1/transfers", {**NEVER_MADE, "id": "never-made"}
        else:  # the same request but for one field
            method, path = first.method, first.path
            body = json.loads(first.content) if first.content else {}
            if path == "/v1/transfers/batch":
                body["atomic"] = not body.get("atomic", False)
            else:
                body["metadata"] = {**body.get("metadata", {}), "reused": "yes"}
        headers = {**self.auth, "Idempotency-Key": first.key, "Content-Type": JSON}
        r = self.h.request(method, path, content=json.dumps(body).encode(), headers=headers)
        assert_problem(r, "idempotency_key_reused")
        self.h.counts["reused keys refused"] += 1

    @rule(data=st.data())
    def read_one(self, data: st.DataObject) -> None:
        """GET of one object: the model's, with its ETag; or 404 not_found."""
        kind = data.draw(st.sampled_from(["accounts", "transfers"]))
        known = self.model.ids(self.model.accounts if kind == "accounts" else self.model.transfers)
        object_id = data.draw(st.sampled_from([*known, "ghost"]))
        r = self.h.request("GET", f"/v1/{kind}/{object_id}", headers=self.auth)
        held = (self.model.accounts if kind == "accounts" else self.model.transfers).get(object_id)
        if held is None:
            assert_problem(r, "not_found")
            return
        assert r.status_code == 200, r.text
        assert r.json() == object_json(held)
        if isinstance(held, Account):
            assert r.headers["etag"] == f'"{held.version}"'

    # -- after every step -------------------------------------------------------------

    def get_page(self, path: str) -> list[dict[str, Any]]:
        sep = "&" if "?" in path else "?"
        r = self.h.request("GET", f"{path}{sep}limit={PAGE_MAX}", headers=self.auth)
        assert r.status_code == 200, r.text
        page = r.json()
        assert not page["has_more"], "the test keeps every list within one page"
        return page["data"]  # type: ignore[no-any-return]

    @invariant()
    def the_server_holds_what_the_model_holds(self) -> None:
        accounts = self.get_page("/v1/accounts")
        assert_balanced(accounts)
        assert accounts == [account_json(a) for a in self.model.in_order(self.model.accounts)]

        transfers = self.get_page("/v1/transfers")
        assert transfers == [transfer_json(t) for t in self.model.in_order(self.model.transfers)]

        events = self.get_page(f"/v1/events?after={self.events_checked}")
        assert events == [event_json(e) for e in self.model.events[self.events_checked :]]
        self.events_checked = len(self.model.events)

        for account_id, changes in self.model.history.items():
            new = len(changes) - self.history_checked[account_id]
            if new:
                r = self.h.request(
                    "GET", f"/v1/accounts/{account_id}/balances?limit={new}", headers=self.auth
                )
                assert r.status_code == 200, r.text
                assert r.json()["data"] == [history_json(c) for c in reversed(changes[-new:])]
                self.history_checked[account_id] = len(changes)


def assert_balanced(accounts: list[dict[str, Any]]) -> None:
    """api.md §1 on what the server lists: debits equal credits per currency, pending
    and posted alike, and no account with a limit flag is past its limit."""
    sums: dict[str, Counter[str]] = defaultdict(Counter)
    for a in accounts:
        dp, dpo = a["debits_pending"], a["debits_posted"]
        cp, cpo = a["credits_pending"], a["credits_posted"]
        sums[a["currency"]].update(dp=dp, dpo=dpo, cp=cp, cpo=cpo)
        assert all(0 <= x <= AMOUNT_MAX for x in (dp, dpo, cp, cpo)), a
        if a["flags"]["debits_must_not_exceed_credits"]:
            assert dp + dpo <= cpo, a
        if a["flags"]["credits_must_not_exceed_debits"]:
            assert cp + cpo <= dpo, a
    for currency, s in sums.items():
        assert s["dpo"] == s["cpo"] and s["dp"] == s["cp"], (currency, s)


def transfer_command(transfer_id: str, body: dict[str, Any]) -> CreateTransfer:
    return CreateTransfer(
        id=transfer_id,
        debit_account_id=body["debit_account_id"],
        credit_account_id=body["credit_account_id"],
        amount=body["amount"],
        currency=body.get("currency"),
        pending=body.get("pending", False),
        timeout_seconds=body.get("timeout_seconds"),
        metadata=body.get("metadata", {}),
    )


def resolution_command(
    record_id: str, pending_id: str, action: str, body: dict[str, Any]
) -> PostPending | VoidPending:
    if action == "post":
        return PostPending(record_id, pending_id, body.get("amount"), body.get("metadata", {}))
    return VoidPending(record_id, pending_id, body.get("metadata", {}))


MODEL_SETTINGS = settings(
    max_examples=scaled(20, 500),
    stateful_step_count=scaled(30, 100),
    deadline=None,
    database=None,
    # A failure prints a blob that @reproduce_failure replays exactly.
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def test_the_api_answers_and_stores_what_the_core_decides(harness: Harness) -> None:
    started = time.monotonic()
    run_state_machine_as_test(lambda: LedgerMachine(harness), settings=MODEL_SETTINGS)
    c = harness.counts
    print(
        f"\n{harness.backend}: {c['examples']} sequences, {c['steps']} writes, "
        f"{c['requests']} requests in {time.monotonic() - started:.1f} s; "
        f"{c['expiry rounds']} expiry rounds expired {c['expired']} holds; "
        f"{c['replays']} replays, {c['reused keys refused']} reused keys refused"
    )
    print("decided:", ", ".join(f"{k} {n}" for k, n in harness.decided.most_common()))

"""The console as a person uses it, in headless Chromium against ``tally serve``:
log in, create two accounts, double-click a transfer's submit button (exactly
one transfer is made: checked through the REST API), see the balance change,
post one pending transfer and void another. Screenshots of each step are kept
(see ``screenshots`` in conftest.py)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from tests.browser.conftest import PASSWORD, TIMEOUT_MS, sign_up
from tests.conftest import fresh_postgres_database
from tests.e2e.conftest import Server, tally_server

# One story, in file order, on one pytest worker: the first test logs the person
# in and the others go on from there (make pytest runs --dist loadfile; with
# plain "load", xdist could hand a later test to the other worker, not logged in).
pytestmark = pytest.mark.slow
# The emulated network's latency: long enough that the second click of a double
# click lands on the form page still shown, however busy the machine.
LATENCY_MS = 1500


class Person:
    """One person's tab, and their REST credentials to check what it did."""

    def __init__(self, page: Any, server: Server, email: str, headers: dict[str, str]) -> None:
        self.page = page
        self.server = server
        self.email = email
        self.api = httpx.Client(base_url=server.base_url, headers=headers, timeout=10)

    def go(self, path: str) -> None:
        self.page.goto(self.server.base_url + path)

    def shot(self, directory: Path, name: str) -> None:
        self.page.screenshot(path=str(directory / f"{name}.png"), full_page=True)

    def log_in(self) -> None:
        self.go("/console")
        assert "/console/login" in self.page.url
        self.page.get_by_label("Email").fill(self.email)
        self.page.get_by_label("Password").fill(PASSWORD)
        self.page.get_by_role("button", name="Log in").click()
        self.page.wait_for_url("**/console/accounts")

    def create_account(self, account_id: str, currency: str = "USD") -> None:
        self.page.get_by_role("link", name="New account").click()
        self.page.get_by_label("Currency").fill(currency)
        self.page.get_by_label("Id (optional)").fill(account_id)
        self.page.get_by_role("button", name="Create account").click()
        self.page.wait_for_url(f"**/console/accounts/{account_id}")

    def fill_transfer(self, debit: str, credit: str, amount: int, *, pending: bool) -> None:
        self.go("/console/new-transfer")
        self.page.get_by_label("From (debit account id)").fill(debit)
        self.page.get_by_label("To (credit account id)").fill(credit)
        self.page.get_by_label("Amount").fill(str(amount))
        if pending:
            self.page.get_by_label("Pending (a hold: post or void it later)").check()

    def transfers_of(self, account_id: str) -> list[dict[str, Any]]:
        r = self.api.get("/v1/transfers", params={"account_id": account_id})
        assert r.status_code == 200, r.text
        data: list[dict[str, Any]] = r.json()["data"]
        return data

    def balance(self, account_id: str) -> dict[str, int]:
        r = self.api.get(f"/v1/accounts/{account_id}")
        assert r.status_code == 200, r.text
        balance: dict[str, int] = r.json()["balance"]
        return balance


def submissions(person: Person, action: str) -> list[tuple[int, str | None]]:
    """(status, code) of each request of ``action`` in the audit log. A replay is
    appended within the appender's flush (50 ms): wait for it, boundedly."""
    deadline = time.monotonic() + 5
    while True:
        r = person.api.get("/v1/audit-events", params={"limit": "1000"})
        assert r.status_code == 200, r.text
        found = [(e["status"], e["code"]) for e in r.json()["data"] if e["action"] == action]
        if len(found) >= 2 or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


@pytest.fixture(scope="module")
def person(browser: Any, sqlite_server: Server) -> Iterator[Person]:
    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    email, headers = sign_up(sqlite_server.base_url)
    yield Person(context.new_page(), sqlite_server, email, headers)
    context.close()


def test_log_in_and_create_two_accounts(person: Person, screenshots: Path) -> None:
    person.log_in()
    person.shot(screenshots, "01-accounts-empty")
    person.create_account("alice")
    person.create_account("bob")
    person.go("/console/accounts")
    rows = person.page.locator("tbody tr")
    assert rows.count() == 2
    person.shot(screenshots, "02-two-accounts")


def test_a_double_click_on_submit_makes_exactly_one_transfer(
    person: Person, screenshots: Path
) -> None:
    """On a slow network (LATENCY_MS of latency, emulated by Chromium itself), the
    person clicks again while the first answer is on its way: the browser sends
    the form twice (the audit log shows both requests), and one transfer exists.
    (Without latency, Chromium folds a fast double click into one submission.)"""
    person.fill_transfer("alice", "bob", 500, pending=False)
    cdp = person.page.context.new_cdp_session(person.page)
    cdp.send("Network.enable")
    cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": LATENCY_MS, "downloadThroughput": -1, "uploadThroughput": -1},
    )
    button = person.page.get_by_role("button", name="Make transfer")
    button.scroll_into_view_if_needed()
    box = button.bounding_box()
    assert box is not None
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    person.page.mouse.click(x, y)
    person.page.wait_for_timeout(150)  # a person's double click, the page still shown
    person.page.mouse.click(x, y)
    # The second submission cancels the first one's navigation (ERR_ABORTED), which
    # wait_for_url can catch on a busy machine (found in CI): poll the address instead.
    expect(person.page).to_have_url(re.compile(r"/console/transfers/[^/?]+$"), timeout=30_000)
    cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
    )
    assert person.page.locator("#transfer-status").inner_text() == "posted"
    person.shot(screenshots, "03-transfer")
    # The REST API, not the page, is the judge: one transfer, one movement of 500.
    assert len(person.transfers_of("bob")) == 1
    assert person.balance("bob")["posted"] == 500
    # Both clicks reached the server: the first made it, the second was replayed.
    assert sorted(submissions(person, "createTransfer")) == [
        (201, None),
        (303, "idempotent_replayed"),
    ]
    person.page.get_by_role("link", name="bob").click()
    assert person.page.locator("#balance-posted").inner_text() == "500"
    assert person.page.locator("svg.chart polyline").count() == 1
    person.shot(screenshots, "04-balance-changed")


def test_post_one_pending_transfer_and_void_another(person: Person, screenshots: Path) -> None:
    person.fill_transfer("alice", "bob", 300, pending=True)
    person.page.get_by_role("button", name="Make transfer").click()
    person.page.wait_for_url("**/console/transfers/*")
    assert person.page.locator("#transfer-status").inner_text() == "pending"
    assert person.balance("bob") == {"posted": 500, "pending": 300, "available": 500}
    person.shot(screenshots, "05-pending")
    person.page.get_by_label("Amount to post (optional; the whole hold if empty)").fill("200")
    hold_url = person.page.url
    person.page.get_by_role("button", name="Post").click()
    person.page.wait_for_url(lambda url: url != hold_url)
    assert person.page.locator("#transfer-status").inner_text() == "posted"
    assert person.balance("bob") == {"posted": 700, "pending": 0, "available": 700}
    person.shot(screenshots, "06-posted")

    person.fill_transfer("alice", "bob", 50, pending=True)
    person.page.get_by_role("button", name="Make transfer").click()
    person.page.wait_for_url("**/console/transfers/*")
    hold_url = person.page.url
    person.page.get_by_role("button", name="Void").click()
    person.page.wait_for_url(lambda url: url != hold_url)
    assert person.page.locator("#transfer-status").inner_text() == "voided"
    assert person.balance("bob") == {"posted": 700, "pending": 0, "available": 700}
    person.shot(screenshots, "07-voided")
    # Two holds, a post and a void, and the first transfer: five transfers.
    assert len(person.transfers_of("bob")) == 5


def test_the_events_page_adds_an_event_live_as_it_commits(
    person: Person, screenshots: Path
) -> None:
    """The page's live feed (console/static/live.js over the session's event
    stream): an account created through the API appears without a reload."""
    person.go("/console/events")
    shown = person.page.locator("#events-body tr").count()
    expect(person.page.locator("#live-status")).to_have_text(re.compile(r"^Live: "))
    r = person.api.post("/v1/accounts", json={"id": "carol", "currency": "USD"})
    assert r.status_code == 201, r.text
    expect(person.page.locator("#events-body tr.live", has_text='"carol"')).to_have_count(1)
    assert person.page.locator("#events-body tr").count() == shown + 1
    person.shot(screenshots, "08-live-event")


def test_log_out_ends_the_session(person: Person, screenshots: Path) -> None:
    person.go("/console/accounts")
    person.page.get_by_role("button", name="Log out").click()
    person.page.wait_for_url("**/console/login")
    person.go("/console/accounts")
    assert "/console/login" in person.page.url
    person.shot(screenshots, "09-logged-out")


def test_on_postgresql_a_double_click_makes_one_transfer(
    browser: Any, tmp_path_factory: pytest.TempPathFactory, screenshots: Path
) -> None:
    """The same exactly-once on PostgreSQL, where the writer and the idempotency
    keys take the other adapter's SQL."""
    database = fresh_postgres_database()
    url = next(database)
    directory = tmp_path_factory.mktemp("console-postgres")
    try:
        with tally_server(url, directory / "serve.log") as server:
            context = browser.new_context()
            context.set_default_timeout(TIMEOUT_MS)
            email, headers = sign_up(server.base_url)
            person = Person(context.new_page(), server, email, headers)
            person.log_in()
            person.create_account("pg-a")
            person.create_account("pg-b")
            person.fill_transfer("pg-a", "pg-b", 75, pending=False)
            person.page.get_by_role("button", name="Make transfer").dblclick()
            person.page.wait_for_url("**/console/transfers/*")
            person.shot(screenshots, "09-postgresql-transfer")
            assert len(person.transfers_of("pg-b")) == 1
            assert person.balance("pg-b")["posted"] == 75
            context.close()
    finally:
        next(database, None)

"""Pending transfers: reserve, then post (fully or partly), void, or expire."""

from __future__ import annotations

import time

import pytest

from tests.api.conftest import Api
from tests.conftest import FakeClock


@pytest.fixture
def funded(api: Api) -> Api:
    api.account("bank", normal_balance="debit")
    api.account("alice", flags={"debits_must_not_exceed_credits": True})
    api.account("shop")
    api.transfer("bank", "alice", 1000)
    return api


def hold(api: Api, amount: int, id: str = "hold", **fields: object) -> dict[str, object]:
    return api.transfer("alice", "shop", amount, id=id, pending=True, **fields)


def test_a_pending_transfer_reserves_without_posting(funded: Api) -> None:
    t = hold(funded, 300)
    assert t["status"] == "pending" and t["pending"] is True
    alice = funded.balance("alice")
    assert (alice["debits_pending"], alice["debits_posted"]) == (300, 0)
    assert alice["balance"] == {"posted": 1000, "pending": -300, "available": 700}
    assert funded.balance("shop")["credits_pending"] == 300


def test_reservations_count_against_the_limit(funded: Api) -> None:
    hold(funded, 800)
    r = funded.post(
        "/v1/transfers", {"debit_account_id": "alice", "credit_account_id": "shop", "amount": 201}
    )
    assert r.json()["code"] == "exceeds_credits"
    funded.transfer("alice", "shop", 200)


def test_posting_the_full_amount_moves_it_and_releases_the_hold(funded: Api) -> None:
    hold(funded, 300)
    r = funded.post("/v1/transfers/hold/post", {"id": "hold-post"})
    assert r.status_code == 201
    post = r.json()
    assert post["pending_id"] == "hold" and post["amount"] == 300 and post["status"] == "posted"
    alice = funded.balance("alice")
    assert (alice["debits_pending"], alice["debits_posted"]) == (0, 300)
    assert funded.get("/v1/transfers/hold").json()["status"] == "posted"


def test_posting_part_releases_the_whole_reservation(funded: Api) -> None:
    hold(funded, 300)
    r = funded.post("/v1/transfers/hold/post", {"amount": 120})
    assert r.status_code == 201 and r.json()["amount"] == 120
    alice, shop = funded.balance("alice"), funded.balance("shop")
    assert (alice["debits_pending"], alice["debits_posted"]) == (0, 120)
    assert (shop["credits_pending"], shop["credits_posted"]) == (0, 120)


def test_post_without_a_body_posts_the_full_amount(funded: Api) -> None:
    hold(funded, 50)
    r = funded.client.post("/v1/transfers/hold/post", headers=funded.headers)
    assert r.status_code == 201 and r.json()["amount"] == 50


def test_posting_more_than_was_reserved_is_refused(funded: Api) -> None:
    hold(funded, 300)
    r = funded.post("/v1/transfers/hold/post", {"amount": 301})
    assert r.status_code == 422
    assert r.json()["code"] == "exceeds_pending_transfer_amount"
    assert funded.get("/v1/transfers/hold").json()["status"] == "pending"


def test_voiding_releases_the_reservation(funded: Api) -> None:
    hold(funded, 300)
    r = funded.post("/v1/transfers/hold/void", {})
    assert r.status_code == 201
    assert r.json()["status"] == "voided" and r.json()["amount"] == 300
    alice = funded.balance("alice")
    assert (alice["debits_pending"], alice["debits_posted"]) == (0, 0)
    assert funded.get("/v1/transfers/hold").json()["status"] == "voided"


@pytest.mark.parametrize(
    ("first", "second", "code"),
    [
        ("post", "post", "pending_transfer_already_posted"),
        ("post", "void", "pending_transfer_already_posted"),
        ("void", "post", "pending_transfer_already_voided"),
        ("void", "void", "pending_transfer_already_voided"),
    ],
)
def test_a_pending_transfer_resolves_only_once(
    funded: Api, first: str, second: str, code: str
) -> None:
    hold(funded, 100)
    assert funded.post(f"/v1/transfers/hold/{first}", {}).status_code == 201
    before = funded.balance("alice")
    r = funded.post(f"/v1/transfers/hold/{second}", {})
    assert r.status_code == 409
    assert r.json()["code"] == code
    assert funded.balance("alice") == before


def test_resolving_an_unknown_transfer_is_404(funded: Api) -> None:
    for action in ("post", "void"):
        r = funded.post(f"/v1/transfers/nothing/{action}", {})
        assert r.status_code == 404
        assert r.json()["code"] == "pending_transfer_not_found"


def test_resolving_a_single_phase_transfer_is_409(funded: Api) -> None:
    t = funded.transfer("alice", "shop", 1)
    r = funded.post(f"/v1/transfers/{t['id']}/post", {})
    assert r.status_code == 409
    assert r.json()["code"] == "pending_transfer_not_pending"


def test_repeating_a_post_with_its_id_returns_the_same_record(funded: Api) -> None:
    hold(funded, 100)
    first = funded.post("/v1/transfers/hold/post", {"id": "p1", "amount": 40})
    again = funded.post("/v1/transfers/hold/post", {"id": "p1", "amount": 40})
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    other = funded.post("/v1/transfers/hold/post", {"id": "p1", "amount": 41})
    assert other.status_code == 409
    assert other.json()["fields"] == ["amount"]


def test_void_is_allowed_on_a_closed_account_but_post_is_not(funded: Api) -> None:
    hold(funded, 100, id="h1")
    hold(funded, 100, id="h2")
    funded.patch("/v1/accounts/shop", {"status": "closed"})
    post = funded.post("/v1/transfers/h1/post", {})
    assert post.status_code == 422 and post.json()["code"] == "credit_account_closed"
    assert funded.post("/v1/transfers/h2/void", {}).status_code == 201
    assert funded.balance("alice")["debits_pending"] == 100


def wait_for_status(api: Api, transfer_id: str, status: str, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if api.get(f"/v1/transfers/{transfer_id}").json()["status"] == status:
            return
        time.sleep(0.05)
    raise AssertionError(f"{transfer_id} did not become {status} within {seconds} s")


def test_a_pending_transfer_expires_after_its_timeout(funded: Api, clock: FakeClock) -> None:
    hold(funded, 300, id="short", timeout_seconds=60)
    clock.advance(61)
    wait_for_status(funded, "short", "expired")
    alice = funded.balance("alice")
    assert (alice["debits_pending"], alice["debits_posted"]) == (0, 0)
    events = [e["type"] for e in funded.get("/v1/events").json()["data"]]
    assert events.count("transfer.expired") == 1


def test_a_pending_transfer_before_its_deadline_does_not_expire(
    funded: Api, clock: FakeClock
) -> None:
    t = hold(funded, 10, id="long", timeout_seconds=3600)
    clock.advance(1)
    time.sleep(0.5)  # several expiry rounds (every 0.2 s in tests) find nothing due
    assert funded.get("/v1/transfers/long").json()["status"] == "pending"
    assert t["expires_at"] > t["created_at"]


def test_a_transfer_past_its_deadline_cannot_be_posted_even_before_expiry_runs(
    funded: Api, clock: FakeClock
) -> None:
    hold(funded, 10, id="late", timeout_seconds=30)
    clock.advance(31)
    r = funded.post("/v1/transfers/late/post", {})
    assert r.status_code == 409
    assert r.json()["code"] == "pending_transfer_expired"
    wait_for_status(funded, "late", "expired")
    again = funded.post("/v1/transfers/late/void", {})
    assert again.json()["code"] == "pending_transfer_expired"


def test_an_accounts_history_pages_the_same_however_it_is_cut(
    funded: Api, clock: FakeClock
) -> None:
    """Balance history merges three sources (migration 0007): the transfers that
    debit the account, those that credit it (the totals on the transfer's row), and
    expiries (rows of their own). Records share a time here (the clock stands
    still between requests), so the order between them is the account's version.
    Walked one record a page, the history is the one-page answer, and ``at`` each
    record's time answers the newest record of that instant."""
    hold(funded, 300, id="h1", timeout_seconds=60)
    hold(funded, 100, id="h2")
    void = funded.post("/v1/transfers/h2/void").json()["id"]
    batch = funded.post(
        "/v1/transfers/batch",
        {
            "transfers": [
                {"id": "b1", "debit_account_id": "alice", "credit_account_id": "shop", "amount": 1},
                {"id": "b2", "debit_account_id": "shop", "credit_account_id": "alice", "amount": 2},
            ]
        },
    )
    assert batch.status_code == 200, batch.text
    clock.advance(61)
    wait_for_status(funded, "h1", "expired")
    funded.transfer("shop", "alice", 5, id="after")

    whole = funded.get("/v1/accounts/alice/balances").json()["data"]
    funding = whole[-1]["transfer_id"]
    assert funded.get(f"/v1/transfers/{funding}").json()["debit_account_id"] == "bank"
    # h1 twice: its hold, and its expiry, which has no transfer row of its own.
    assert [r["transfer_id"] for r in whole] == [
        "after",
        "h1",
        "b2",
        "b1",
        void,
        "h2",
        "h1",
        funding,
    ]
    assert [r["version"] for r in whole] == sorted((r["version"] for r in whole), reverse=True)
    expiry = whole[1]
    assert (expiry["debits_pending"], expiry["debits_posted"]) == (0, 1)
    walked, cursor = [], None
    while True:
        params = {"limit": 1} | ({"cursor": cursor} if cursor else {})
        page = funded.get("/v1/accounts/alice/balances", params=params).json()
        walked += page["data"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert walked == whole
    for record in whole:
        at = funded.get("/v1/accounts/alice/balances", params={"at": record["created_at"]})
        newest = max(
            (r for r in whole if r["created_at"] == record["created_at"]),
            key=lambda r: r["version"],
        )
        assert at.json() == newest

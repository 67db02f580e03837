"""Single-phase transfers, their limits and their repeats, over HTTP."""

from __future__ import annotations

import pytest

from tests.api.conftest import Api

MAX = 2**63 - 1


@pytest.fixture
def funded(api: Api) -> Api:
    """bank (debit-normal, unlimited) has given alice 1000; bob has nothing."""
    api.account("bank", normal_balance="debit")
    api.account("alice", flags={"debits_must_not_exceed_credits": True})
    api.account("bob", flags={"debits_must_not_exceed_credits": True})
    api.transfer("bank", "alice", 1000)
    return api


def test_a_transfer_moves_posted_totals_on_both_sides(funded: Api) -> None:
    t = funded.transfer("alice", "bob", 250, metadata={"order": "42"})
    assert t["status"] == "posted" and t["pending"] is False and t["currency"] == "USD"
    alice, bob = funded.balance("alice"), funded.balance("bob")
    assert (alice["debits_posted"], alice["credits_posted"]) == (250, 1000)
    assert alice["balance"] == {"posted": 750, "pending": 0, "available": 750}
    assert bob["credits_posted"] == 250 and bob["balance"]["available"] == 250


def test_debit_normal_balance_is_mirrored(funded: Api) -> None:
    bank = funded.balance("bank")
    assert bank["debits_posted"] == 1000
    assert bank["balance"] == {"posted": 1000, "pending": 0, "available": 1000}


def test_spending_exactly_the_available_credits_is_allowed(funded: Api) -> None:
    funded.transfer("alice", "bob", 1000)
    assert funded.balance("alice")["balance"]["available"] == 0


def test_rejects_transfer_that_exceeds_credits_and_changes_nothing(funded: Api) -> None:
    r = funded.post(
        "/v1/transfers", {"debit_account_id": "alice", "credit_account_id": "bob", "amount": 1001}
    )
    assert r.status_code == 422
    assert r.json()["code"] == "exceeds_credits"
    assert funded.balance("alice")["debits_posted"] == 0
    assert funded.balance("bob")["credits_posted"] == 0


def test_rejects_transfer_that_exceeds_debits_on_a_credit_limited_account(api: Api) -> None:
    api.account("src")
    api.account("capped", normal_balance="debit", flags={"credits_must_not_exceed_debits": True})
    api.transfer("capped", "src", 5)
    ok = api.post(
        "/v1/transfers", {"debit_account_id": "src", "credit_account_id": "capped", "amount": 5}
    )
    assert ok.status_code == 201
    r = api.post(
        "/v1/transfers", {"debit_account_id": "src", "credit_account_id": "capped", "amount": 1}
    )
    assert r.status_code == 422
    assert r.json()["code"] == "exceeds_debits"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"debit_account_id": "alice", "credit_account_id": "alice"}, "accounts_must_be_different"),
        ({"debit_account_id": "nobody", "credit_account_id": "bob"}, "debit_account_not_found"),
        ({"debit_account_id": "alice", "credit_account_id": "nobody"}, "credit_account_not_found"),
        (
            {"debit_account_id": "alice", "credit_account_id": "euro"},
            "accounts_must_have_the_same_currency",
        ),
        (
            {"debit_account_id": "alice", "credit_account_id": "bob", "currency": "EUR"},
            "currency_mismatch",
        ),
        (
            {"debit_account_id": "alice", "credit_account_id": "bob", "timeout_seconds": 5},
            "timeout_requires_pending",
        ),
    ],
)
def test_refuses_transfers_that_break_a_rule(
    funded: Api, body: dict[str, object], code: str
) -> None:
    funded.account("euro", "EUR")
    before = funded.get("/v1/events").json()["data"]
    r = funded.post("/v1/transfers", {"amount": 1, **body})
    assert r.status_code == 422, r.text
    assert r.json()["code"] == code
    assert funded.get("/v1/events").json()["data"] == before


def test_an_explicit_matching_currency_is_accepted(funded: Api) -> None:
    t = funded.transfer("alice", "bob", 1, currency="USD")
    assert t["currency"] == "USD"


def test_refuses_a_transfer_that_would_overflow_the_totals(api: Api) -> None:
    api.account("big", normal_balance="debit")
    api.account("sink")
    api.transfer("big", "sink", MAX)
    r = api.post(
        "/v1/transfers", {"debit_account_id": "big", "credit_account_id": "sink", "amount": 1}
    )
    assert r.status_code == 422
    assert r.json()["code"] == "overflows_debits"
    api.account("other", normal_balance="debit")
    r = api.post(
        "/v1/transfers", {"debit_account_id": "other", "credit_account_id": "sink", "amount": 1}
    )
    assert r.json()["code"] == "overflows_credits"
    assert api.balance("sink")["credits_posted"] == MAX


def test_repeating_a_transfer_id_with_the_same_fields_returns_it_once(funded: Api) -> None:
    body = {"id": "pay-1", "debit_account_id": "alice", "credit_account_id": "bob", "amount": 10}
    first = funded.post("/v1/transfers", body)
    again = funded.post("/v1/transfers", body)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    assert funded.balance("bob")["credits_posted"] == 10


def test_repeating_a_transfer_id_with_other_fields_is_409_naming_them(funded: Api) -> None:
    funded.transfer("alice", "bob", 10, id="pay-2")
    r = funded.post(
        "/v1/transfers",
        {
            "id": "pay-2",
            "debit_account_id": "alice",
            "credit_account_id": "bob",
            "amount": 11,
            "metadata": {"x": "y"},
        },
    )
    assert r.status_code == 409
    assert r.json()["code"] == "exists_with_different_fields"
    assert r.json()["fields"] == ["amount", "metadata"]
    assert funded.balance("bob")["credits_posted"] == 10


def test_get_transfer_returns_it_and_unknown_is_404(funded: Api) -> None:
    t = funded.transfer("alice", "bob", 3)
    r = funded.get(f"/v1/transfers/{t['id']}")
    assert r.status_code == 200 and r.json() == t and r.headers["etag"]
    assert funded.get("/v1/transfers/missing").status_code == 404


def test_list_transfers_filters_and_pages_in_both_orders(funded: Api) -> None:
    ids = [funded.transfer("alice", "bob", 1, id=f"t{i}")["id"] for i in range(5)]
    pending = funded.transfer("alice", "bob", 1, id="held", pending=True)["id"]

    def walk(**params: str) -> list[str]:
        seen, cursor = [], None
        while True:
            q = {"limit": "2", **params, **({"cursor": cursor} if cursor else {})}
            page = funded.get("/v1/transfers", params=q).json()
            seen += [t["id"] for t in page["data"]]
            if not page["has_more"]:
                return seen
            cursor = page["next_cursor"]

    all_ids = walk(account_id="bob")
    assert all_ids == [*ids, pending]
    assert walk(account_id="bob", order="desc") == list(reversed(all_ids))
    assert walk(status="pending") == [pending]
    assert len(walk()) == 7  # and the funding transfer from bank
    assert walk(account_id="nobody") == []


def test_list_transfers_by_creation_time(funded: Api) -> None:
    t1 = funded.transfer("alice", "bob", 1)
    t2 = funded.transfer("alice", "bob", 1)
    after = funded.get(
        "/v1/transfers", params={"created_after": t1["created_at"], "account_id": "bob"}
    ).json()
    assert [t["id"] for t in after["data"]] == [t2["id"]]
    before = funded.get(
        "/v1/transfers", params={"created_before": t2["created_at"], "account_id": "bob"}
    ).json()
    assert [t["id"] for t in before["data"]] == [t1["id"]]

"""POST /v1/transfers/batch: items in order, atomic or independent."""

from __future__ import annotations

import pytest

from tests.api.conftest import Api


@pytest.fixture
def funded(api: Api) -> Api:
    api.account("bank", normal_balance="debit")
    api.account("a", flags={"debits_must_not_exceed_credits": True})
    api.account("b", flags={"debits_must_not_exceed_credits": True})
    api.transfer("bank", "a", 100)
    return api


def item(debit: str, credit: str, amount: int, **fields: object) -> dict[str, object]:
    return {"debit_account_id": debit, "credit_account_id": credit, "amount": amount, **fields}


def test_non_atomic_items_apply_independently_and_in_order(funded: Api) -> None:
    r = funded.post(
        "/v1/transfers/batch",
        {
            "transfers": [
                item("a", "b", 60),
                item("a", "b", 60),  # only 40 left
                item("b", "a", 60),  # sees the first item's 60
            ]
        },
    )
    assert r.status_code == 200
    results = r.json()["results"]
    assert [x["status"] for x in results] == ["created", "failed", "created"]
    assert results[1]["error"]["code"] == "exceeds_credits"
    assert results[1]["transfer"] is None
    assert [x["index"] for x in results] == [0, 1, 2]
    assert funded.balance("a")["balance"]["posted"] == 100


def test_atomic_batch_applies_all_with_201(funded: Api) -> None:
    r = funded.post(
        "/v1/transfers/batch",
        {"atomic": True, "transfers": [item("a", "b", 60), item("b", "a", 10)]},
    )
    assert r.status_code == 201
    assert [x["status"] for x in r.json()["results"]] == ["created", "created"]
    assert funded.balance("b")["balance"]["posted"] == 50


def test_atomic_batch_with_one_failure_applies_nothing(funded: Api) -> None:
    events_before = funded.get("/v1/events").json()["data"]
    r = funded.post(
        "/v1/transfers/batch",
        {
            "atomic": True,
            "transfers": [
                item("a", "b", 60, id="x1"),
                item("a", "b", 60, id="x2"),
                item("b", "a", 1, id="x3"),
            ],
        },
    )
    assert r.status_code == 422
    problem = r.json()
    assert problem["code"] == "batch_failed"
    codes = [x["error"]["code"] for x in problem["results"]]
    assert codes == ["linked_event_failed", "exceeds_credits", "linked_event_failed"]
    assert funded.balance("a")["debits_posted"] == 0
    assert funded.get("/v1/transfers/x1").status_code == 404
    assert funded.get("/v1/events").json()["data"] == events_before


def test_an_atomic_failure_names_the_failing_item_and_what_was_available(funded: Api) -> None:
    body = {"atomic": True, "transfers": [item("a", "b", 60), item("a", "b", 60)]}
    problem = funded.post("/v1/transfers/batch", body).json()
    assert problem["code"] == "batch_failed"
    # The detail alone tells a person which item, why, and what to do.
    assert problem["detail"].startswith("Item 1 failed (exceeds_credits): ")
    assert "has 40 available" in problem["detail"]
    assert "fix or drop item 1" in problem["detail"]
    linked = problem["results"][0]["error"]
    assert linked["code"] == "linked_event_failed"
    assert "item 1 of this atomic batch failed" in linked["detail"]


def test_batch_items_can_post_and_void_pending_transfers(funded: Api) -> None:
    r = funded.post(
        "/v1/transfers/batch",
        {
            "atomic": True,
            "transfers": [
                item("a", "b", 30, id="p1", pending=True),
                item("a", "b", 30, id="p2", pending=True),
                {"pending_id": "p1", "action": "post", "amount": 20, "id": "p1-post"},
                {"pending_id": "p2", "action": "void"},
            ],
        },
    )
    assert r.status_code == 201, r.text
    results = r.json()["results"]
    assert results[2]["transfer"]["pending_id"] == "p1"
    assert results[3]["transfer"]["status"] == "voided"
    a = funded.balance("a")
    assert (a["debits_pending"], a["debits_posted"]) == (0, 20)


def test_a_repeated_item_reports_exists(funded: Api) -> None:
    funded.transfer("a", "b", 5, id="once")
    r = funded.post("/v1/transfers/batch", {"transfers": [item("a", "b", 5, id="once")]})
    assert r.json()["results"][0]["status"] == "exists"
    assert funded.balance("b")["credits_posted"] == 5


def test_a_void_item_with_an_amount_is_a_validation_error(funded: Api) -> None:
    r = funded.post(
        "/v1/transfers/batch", {"transfers": [{"pending_id": "p", "action": "void", "amount": 3}]}
    )
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "transfers[0].amount"


@pytest.mark.parametrize("field", ["pending", "action", "pending_id"])
def test_an_explicit_null_where_neither_shape_takes_one_is_a_validation_error(
    funded: Api, field: str
) -> None:
    r = funded.post("/v1/transfers/batch", {"transfers": [{**item("a", "b", 1), field: None}]})
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == f"transfers[0].{field}"
    assert funded.balance("b")["credits_posted"] == 0

"""Accounts over HTTP: create, read, list, patch, close, on both backends."""

from __future__ import annotations

from tests.api.conftest import Api


def test_creates_an_account_with_zero_totals_and_a_server_id(api: Api) -> None:
    r = api.post("/v1/accounts", {"currency": "USD"})
    assert r.status_code == 201
    body = r.json()
    assert body["id"].startswith("acc_")
    assert body["object"] == "account"
    assert body["normal_balance"] == "credit"
    assert body["status"] == "open"
    assert [
        body[k] for k in ("debits_pending", "debits_posted", "credits_pending", "credits_posted")
    ] == [0, 0, 0, 0]
    assert body["balance"] == {"posted": 0, "pending": 0, "available": 0}
    assert body["created_at"].endswith("Z") and len(body["created_at"]) == 27
    assert r.headers["location"] == f"/v1/accounts/{body['id']}"


def test_returns_the_existing_account_when_an_identical_create_is_repeated(api: Api) -> None:
    first = api.post("/v1/accounts", {"id": "wallet:1", "currency": "EUR", "metadata": {"a": "b"}})
    again = api.post("/v1/accounts", {"id": "wallet:1", "currency": "EUR", "metadata": {"a": "b"}})
    assert first.status_code == 201
    assert again.status_code == 200
    assert again.json() == first.json()


def test_refuses_a_repeated_id_with_different_fields_and_names_them(api: Api) -> None:
    api.account("wallet:2", "EUR")
    r = api.post("/v1/accounts", {"id": "wallet:2", "currency": "USD", "normal_balance": "debit"})
    assert r.status_code == 409
    problem = r.json()
    assert problem["code"] == "exists_with_different_fields"
    assert problem["fields"] == ["currency", "normal_balance"]
    assert r.headers["content-type"] == "application/problem+json"


def test_refuses_both_limit_flags_on_one_account(api: Api) -> None:
    r = api.post(
        "/v1/accounts",
        {
            "currency": "USD",
            "flags": {
                "debits_must_not_exceed_credits": True,
                "credits_must_not_exceed_debits": True,
            },
        },
    )
    assert r.status_code == 422
    assert r.json()["code"] == "flags_are_mutually_exclusive"


def test_accepts_either_limit_flag_alone(api: Api) -> None:
    for flag in ("debits_must_not_exceed_credits", "credits_must_not_exceed_debits"):
        r = api.post("/v1/accounts", {"currency": "USD", "flags": {flag: True}})
        assert r.status_code == 201
        assert r.json()["flags"][flag] is True


def test_get_returns_the_account_with_an_etag(api: Api) -> None:
    api.account("a1")
    r = api.get("/v1/accounts/a1")
    assert r.status_code == 200
    assert r.headers["etag"] == '"1"'
    assert r.json()["id"] == "a1"


def test_get_of_an_unknown_account_is_404(api: Api) -> None:
    r = api.get("/v1/accounts/nope")
    assert r.status_code == 404
    assert r.json()["code"] == "not_found"


def test_patch_merges_metadata_and_removes_null_keys(api: Api) -> None:
    api.account("a2", metadata={"keep": "1", "drop": "2"})
    r = api.patch("/v1/accounts/a2", {"metadata": {"drop": None, "new": "3"}})
    assert r.status_code == 200
    assert r.json()["metadata"] == {"keep": "1", "new": "3"}
    assert r.headers["etag"] == '"2"'


def test_patch_with_the_current_etag_succeeds(api: Api) -> None:
    api.account("a3")
    etag = api.get("/v1/accounts/a3").headers["etag"]
    r = api.patch("/v1/accounts/a3", {"metadata": {"x": "y"}}, headers={"If-Match": etag})
    assert r.status_code == 200


def test_patch_with_a_stale_etag_is_412_and_changes_nothing(api: Api) -> None:
    api.account("a4")
    stale = api.get("/v1/accounts/a4").headers["etag"]
    api.patch("/v1/accounts/a4", {"metadata": {"first": "1"}})
    r = api.patch("/v1/accounts/a4", {"metadata": {"second": "2"}}, headers={"If-Match": stale})
    assert r.status_code == 412
    assert r.json()["code"] == "precondition_failed"
    assert api.balance("a4")["metadata"] == {"first": "1"}


def test_patch_refuses_metadata_past_fifty_keys_after_merge(api: Api) -> None:
    api.account("a5", metadata={f"k{i}": "v" for i in range(50)})
    r = api.patch("/v1/accounts/a5", {"metadata": {"one-more": "v"}})
    assert r.status_code == 422
    assert r.json()["code"] == "validation_error"
    # api.md §2: a validation_error names its fields in errors, whoever decided it.
    [error] = r.json()["errors"]
    assert (error["field"], error["code"]) == ("metadata", "invalid_length")
    assert len(api.balance("a5")["metadata"]) == 50


def test_closing_an_account_blocks_new_transfers_both_ways(api: Api) -> None:
    api.account("open1")
    api.account("shut")
    r = api.patch("/v1/accounts/shut", {"status": "closed"})
    assert r.status_code == 200
    assert r.json()["status"] == "closed"
    debit = api.post(
        "/v1/transfers", {"debit_account_id": "shut", "credit_account_id": "open1", "amount": 1}
    )
    credit = api.post(
        "/v1/transfers", {"debit_account_id": "open1", "credit_account_id": "shut", "amount": 1}
    )
    assert debit.json()["code"] == "debit_account_closed"
    assert credit.json()["code"] == "credit_account_closed"
    assert debit.status_code == credit.status_code == 422


def test_an_account_cannot_be_reopened(api: Api) -> None:
    api.account("final")
    api.patch("/v1/accounts/final", {"status": "closed"})
    r = api.patch("/v1/accounts/final", {"status": "open"})
    assert r.status_code == 422
    assert api.balance("final")["status"] == "closed"


def test_patch_of_an_unknown_account_is_404(api: Api) -> None:
    r = api.patch("/v1/accounts/ghost", {"metadata": {"a": "b"}})
    assert r.status_code == 404


def test_list_pages_through_every_account_once_in_creation_order(api: Api) -> None:
    ids = [f"p{i:02d}" for i in range(7)]
    for account_id in ids:
        api.account(account_id)
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        page = api.get("/v1/accounts", params=params).json()
        seen.extend(a["id"] for a in page["data"])
        if not page["has_more"]:
            assert page["next_cursor"] is None
            break
        cursor = page["next_cursor"]
    assert seen == ids


def test_list_filters_by_currency_status_and_metadata(api: Api) -> None:
    api.account("f1", "USD", metadata={"team": "red"})
    api.account("f2", "EUR", metadata={"team": "red"})
    api.account("f3", "USD", metadata={"team": "blue"})
    api.patch("/v1/accounts/f3", {"status": "closed"})

    def ids(**params: str) -> list[str]:
        return [a["id"] for a in api.get("/v1/accounts", params=params).json()["data"]]

    assert ids(currency="USD") == ["f1", "f3"]
    assert ids(status="closed") == ["f3"]
    assert ids(**{"metadata[team]": "red"}) == ["f1", "f2"]
    assert ids(**{"metadata[team]": "red", "currency": "EUR"}) == ["f2"]
    assert ids(**{"metadata[team]": "green"}) == []


def test_another_tenants_account_is_404_on_every_account_route(api: Api, other_api: Api) -> None:
    api.account("mine")
    assert other_api.get("/v1/accounts/mine").status_code == 404
    assert other_api.patch("/v1/accounts/mine", {"metadata": {"a": "b"}}).status_code == 404
    assert other_api.get("/v1/accounts/mine/balances").status_code == 404
    assert other_api.get("/v1/accounts").json()["data"] == []
    assert api.balance("mine")["metadata"] == {}

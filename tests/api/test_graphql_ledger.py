"""The ledger's core behaviours through /graphql, on SQLite and PostgreSQL: the
same services as REST, so the same outcomes and the same contract codes."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.api.conftest import Api
from tests.api.graphql_client import GraphQL, code
from tests.conftest import FakeClock

TRANSFER = """
mutation Transfer($input: CreateTransferInput!) {
  createTransfer(input: $input) { id amount status pending debitAccountId creditAccountId }
}
"""
ACCOUNT = """
query Account($id: String!) {
  account(id: $id) { id balance { posted pending available } debitsPending creditsPending }
}
"""


@pytest.fixture
def gql(api: Api) -> GraphQL:
    return GraphQL(api)


@pytest.fixture
def funded(api: Api, gql: GraphQL) -> GraphQL:
    """``bank`` (debit-normal, no limit) funds ``wallet`` (may not overdraw) with 1000."""
    gql.data(
        'mutation { createAccount(input: {id: "bank", currency: "USD", normalBalance: "debit"})'
        " { id } }"
    )
    gql.data(
        'mutation { createAccount(input: {id: "wallet", currency: "USD",'
        " flags: {debitsMustNotExceedCredits: true}}) { id } }"
    )
    gql.data('mutation { createAccount(input: {id: "shop", currency: "USD"}) { id } }')
    transfer(gql, "bank", "wallet", 1000)
    return gql


def transfer(gql: GraphQL, debit: str, credit: str, amount: int, **fields: Any) -> dict[str, Any]:
    variables = {
        "input": {"debitAccountId": debit, "creditAccountId": credit, "amount": amount, **fields}
    }
    return gql.data(TRANSFER, variables)["createTransfer"]  # type: ignore[no-any-return]


def balance(gql: GraphQL, account_id: str) -> dict[str, Any]:
    return gql.data(ACCOUNT, {"id": account_id})["account"]  # type: ignore[no-any-return]


def test_a_transfer_moves_money_and_reads_back_through_nested_fields(funded: GraphQL) -> None:
    t = transfer(funded, "wallet", "shop", 300, id="t-1", metadata={"order": "42"})
    assert t == {
        "id": "t-1", "amount": 300, "status": "posted", "pending": False,
        "debitAccountId": "wallet", "creditAccountId": "shop",
    }  # fmt: skip
    data = funded.data(
        '{ transfer(id: "t-1") { metadata debitAccount { id balance { posted } }'
        " creditAccount { id balance { posted } } } }"
    )["transfer"]
    assert data["metadata"] == {"order": "42"}
    assert data["debitAccount"] == {"id": "wallet", "balance": {"posted": 700}}
    assert data["creditAccount"] == {"id": "shop", "balance": {"posted": 300}}


def test_an_overdraft_is_refused_with_the_contracts_code_and_changes_nothing(
    funded: GraphQL,
) -> None:
    error = funded.error(
        TRANSFER, {"input": {"debitAccountId": "wallet", "creditAccountId": "shop", "amount": 1001}}
    )
    assert code(error) == "exceeds_credits"
    assert error["path"] == ["createTransfer"]
    assert "1000" in error["message"]
    assert balance(funded, "wallet")["balance"]["posted"] == 1000


def test_an_amount_beyond_int32_and_up_to_2_63_minus_1_is_an_int64(funded: GraphQL) -> None:
    big = 2**40
    transfer(funded, "bank", "shop", big)
    assert balance(funded, "shop")["balance"]["posted"] == big
    error = funded.error(
        TRANSFER, {"input": {"debitAccountId": "bank", "creditAccountId": "shop", "amount": 2**63}}
    )
    assert code(error) == "validation_error"
    error = funded.error(
        TRANSFER, {"input": {"debitAccountId": "bank", "creditAccountId": "shop", "amount": 1.5}}
    )
    assert code(error) == "validation_error"


def test_bad_input_names_the_field_as_rest_does(funded: GraphQL) -> None:
    error = funded.error(
        TRANSFER, {"input": {"debitAccountId": "bank", "creditAccountId": "shop", "amount": 0}}
    )
    assert code(error) == "validation_error"
    assert error["extensions"]["errors"][0]["field"] == "amount"
    error = funded.error(
        TRANSFER, {"input": {"debitAccountId": "bank", "creditAccountId": "bank", "amount": 5}}
    )
    assert code(error) == "accounts_must_be_different"


def test_a_pending_transfer_posts_partly_and_releases_the_rest(funded: GraphQL) -> None:
    transfer(funded, "wallet", "shop", 400, id="hold-1", pending=True)
    assert balance(funded, "wallet")["balance"] == {
        "posted": 1000,
        "pending": -400,
        "available": 600,
    }
    posted = funded.data(
        'mutation { postTransfer(id: "hold-1", input: {amount: 250}) { amount status pendingId } }'
    )["postTransfer"]
    assert posted == {"amount": 250, "status": "posted", "pendingId": "hold-1"}
    assert balance(funded, "wallet")["balance"] == {"posted": 750, "pending": 0, "available": 750}
    error = funded.error('mutation { voidTransfer(id: "hold-1") { id } }')
    assert code(error) == "pending_transfer_already_posted"


def test_a_pending_transfer_voids_and_cannot_then_be_posted(funded: GraphQL) -> None:
    transfer(funded, "wallet", "shop", 400, id="hold-2", pending=True)
    voided = funded.data('mutation { voidTransfer(id: "hold-2") { status pendingId } }')
    assert voided["voidTransfer"] == {"status": "voided", "pendingId": "hold-2"}
    assert balance(funded, "wallet")["balance"]["available"] == 1000
    error = funded.error('mutation { postTransfer(id: "hold-2") { id } }')
    assert code(error) == "pending_transfer_already_voided"
    assert code(funded.error('mutation { postTransfer(id: "nowhere") { id } }')) == (
        "pending_transfer_not_found"
    )


def test_a_pending_transfer_expires_and_then_cannot_be_posted(
    funded: GraphQL, clock: FakeClock
) -> None:
    transfer(funded, "wallet", "shop", 100, id="short", pending=True, timeoutSeconds=30)
    clock.advance(31)
    error = funded.error('mutation { postTransfer(id: "short") { id } }')
    assert code(error) == "pending_transfer_expired"
    deadline = time.monotonic() + 10
    while funded.data('{ transfer(id: "short") { status } }')["transfer"]["status"] != "expired":
        assert time.monotonic() < deadline, "the expiry round never ran"
        time.sleep(0.1)
    assert balance(funded, "wallet")["balance"]["available"] == 1000


BATCH = """
mutation Batch($input: TransferBatchInput!) {
  createTransferBatch(input: $input) { results { index status transfer { id } error { code } } }
}
"""


def test_an_atomic_batch_applies_nothing_when_one_item_fails(funded: GraphQL) -> None:
    items = [
        {"id": "b-1", "debitAccountId": "wallet", "creditAccountId": "shop", "amount": 600},
        {"id": "b-2", "debitAccountId": "wallet", "creditAccountId": "shop", "amount": 600},
    ]
    error = funded.error(BATCH, {"input": {"atomic": True, "transfers": items}})
    assert code(error) == "batch_failed"
    results = error["extensions"]["results"]
    assert [r["error"]["code"] for r in results] == ["linked_event_failed", "exceeds_credits"]
    assert balance(funded, "wallet")["balance"]["posted"] == 1000
    assert code(funded.error('{ transfer(id: "b-1") { id } }')) == "not_found"


def test_an_atomic_batch_applies_every_item_in_order(funded: GraphQL) -> None:
    items = [
        {"id": "c-1", "debitAccountId": "wallet", "creditAccountId": "shop", "amount": 600},
        {
            "id": "c-2",
            "pending": True,
            "debitAccountId": "wallet",
            "creditAccountId": "shop",
            "amount": 100,
        },
        {"pendingId": "c-2", "action": "post", "amount": 50},
    ]
    results = funded.data(BATCH, {"input": {"atomic": True, "transfers": items}})
    statuses = [r["status"] for r in results["createTransferBatch"]["results"]]
    assert statuses == ["created", "created", "created"]
    assert balance(funded, "wallet")["balance"]["posted"] == 1000 - 650


def test_a_non_atomic_batch_reports_each_item(funded: GraphQL) -> None:
    items = [
        {"debitAccountId": "wallet", "creditAccountId": "shop", "amount": 5000},
        {"debitAccountId": "wallet", "creditAccountId": "shop", "amount": 10},
    ]
    results = funded.data(BATCH, {"input": {"transfers": items}})["createTransferBatch"]["results"]
    assert [(r["status"], r["error"] and r["error"]["code"]) for r in results] == [
        ("failed", "exceeds_credits"),
        ("created", None),
    ]


def test_a_batch_item_of_neither_shape_is_refused_naming_it(funded: GraphQL) -> None:
    items = [{"pendingId": "x", "action": "void", "debitAccountId": "wallet"}]
    error = funded.error(BATCH, {"input": {"transfers": items}})
    assert code(error) == "validation_error"
    assert error["extensions"]["errors"][0]["field"] == "transfers[0].debit_account_id"


def test_a_keyed_mutation_replays_its_stored_result_and_runs_once(funded: GraphQL) -> None:
    variables = {"input": {"debitAccountId": "wallet", "creditAccountId": "shop", "amount": 70}}
    first = funded.raw(TRANSFER, variables, key="pay-70")
    again = funded.raw(TRANSFER, variables, key="pay-70")
    assert first.status_code == again.status_code == 200
    assert "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"
    assert first.json() == again.json()
    assert balance(funded, "wallet")["balance"]["posted"] == 930
    other = {"input": {**variables["input"], "amount": 71}}
    reused = funded.raw(TRANSFER, other, key="pay-70").json()["errors"][0]
    assert code(reused) == "idempotency_key_reused"
    assert balance(funded, "wallet")["balance"]["posted"] == 930


def test_a_keyed_refusal_is_stored_and_replayed_with_its_code(funded: GraphQL) -> None:
    variables = {"input": {"debitAccountId": "wallet", "creditAccountId": "shop", "amount": 5000}}
    first = funded.raw(TRANSFER, variables, key="too-much").json()["errors"][0]
    funded.data(
        TRANSFER, {"input": {"debitAccountId": "bank", "creditAccountId": "wallet", "amount": 9000}}
    )
    again = funded.raw(TRANSFER, variables, key="too-much")
    assert again.headers["idempotent-replayed"] == "true"
    assert code(first) == code(again.json()["errors"][0]) == "exceeds_credits"


def test_a_key_is_scoped_to_its_tenant(funded: GraphQL, other_api: Api) -> None:
    other = GraphQL(other_api)
    mutation = 'mutation { createAccount(input: {id: "same", currency: "USD"}) { id } }'
    assert funded.raw(mutation, key="k").json()["data"]["createAccount"]["id"] == "same"
    r = other.raw(mutation, key="k")
    assert "idempotent-replayed" not in r.headers
    assert r.json()["data"]["createAccount"]["id"] == "same"


def test_a_malformed_idempotency_key_is_refused_before_anything_runs(funded: GraphQL) -> None:
    r = funded.raw(
        'mutation { createAccount(input: {currency: "USD"}) { id } }',
        headers={"Idempotency-Key": ""},
    )
    assert r.status_code == 400
    assert code(r.json()["errors"][0]) == "idempotency_key_invalid"


def test_an_existing_id_with_other_fields_is_a_conflict_naming_them(funded: GraphQL) -> None:
    error = funded.error('mutation { createAccount(input: {id: "shop", currency: "EUR"}) { id } }')
    assert code(error) == "exists_with_different_fields"
    assert error["extensions"]["fields"] == ["currency"]
    same = funded.data('mutation { createAccount(input: {id: "shop", currency: "USD"}) { id } }')
    assert same["createAccount"]["id"] == "shop"


def test_lists_page_with_cursors_and_never_repeat(funded: GraphQL) -> None:
    for i in range(5):
        transfer(funded, "bank", "shop", i + 1)
    seen: list[str] = []
    after = None
    while True:
        page = funded.data(
            'query Page($after: String) { transfers(first: 2, after: $after, accountId: "shop")'
            " { edges { cursor node { id } } pageInfo { hasNextPage endCursor } } }",
            {"after": after},
        )["transfers"]
        seen += [e["node"]["id"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        assert page["pageInfo"]["endCursor"] == page["edges"][-1]["cursor"]
        after = page["pageInfo"]["endCursor"]
    assert len(seen) == len(set(seen)) == 5


def test_balance_history_and_events_read_as_rest_does(funded: GraphQL) -> None:
    history = funded.data(
        '{ balanceHistory(accountId: "wallet")'
        " { nodes { version transferId balance { posted } } } }"
    )["balanceHistory"]["nodes"]
    assert [h["balance"]["posted"] for h in history] == [1000]
    nested = funded.data(
        '{ account(id: "wallet")'
        " { balanceHistory(first: 1) { nodes { version } pageInfo { hasNextPage } } } }"
    )["account"]["balanceHistory"]
    assert nested["nodes"] == [{"version": history[0]["version"]}]
    events = funded.data("{ events(first: 10) { nodes { sequence type data } } }")["events"][
        "nodes"
    ]
    assert [e["type"] for e in events] == ["account.created"] * 3 + ["transfer.created"]
    assert events[0]["data"]["id"] == "bank"
    later = funded.data("{ events(afterSequence: 3) { nodes { sequence } } }")["events"]["nodes"]
    assert [e["sequence"] for e in later] == [events[3]["sequence"]]


def test_accounts_filter_by_metadata_as_rest_does(gql: GraphQL) -> None:
    for name, team in (("m1", "a"), ("m2", "b")):
        gql.data(
            "mutation M($input: CreateAccountInput!) { createAccount(input: $input) { id } }",
            {"input": {"id": name, "currency": "USD", "metadata": {"team": team}}},
        )
    query = "query Q($m: Metadata) { accounts(metadata: $m) { nodes { id } } }"
    nodes = gql.data(query, {"m": {"team": "b"}})["accounts"]["nodes"]
    assert nodes == [{"id": "m2"}]
    error = gql.error(query, {"m": {f"k{i}": "v" for i in range(11)}})
    assert code(error) == "validation_error"
    error = gql.error(query, {"m": {"k" * 65: "v"}})
    assert code(error) == "validation_error"

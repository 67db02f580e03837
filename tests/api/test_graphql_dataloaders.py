"""No N+1: a page of accounts with their last transfers, each transfer's accounts
and each account's balance history costs a fixed number of SQL statements,
whatever the page's size. Counted on the real database, by wrapping the app's
Store: every read it makes goes through ``fetch`` or ``fetch_point``."""

from __future__ import annotations

from typing import Any

import pytest

from tally.storage import Store
from tests.api.conftest import Api
from tests.api.graphql_client import GraphQL

PAGE = """
query Page($first: Int!) {
  accounts(first: $first) {
    nodes {
      id
      lastTransfers(first: 3) {
        id amount
        debitAccount { id balance { posted } }
        creditAccount { id }
      }
      balanceHistory(first: 2) { nodes { version balance { posted } } }
    }
  }
}
"""


class StatementCounter:
    """Counts the statements the app's store runs for one tenant (its reads name
    the tenant first), leaving aside the background rounds and authentication."""

    def __init__(self, store: Store, tenant_id: str) -> None:
        self.store = store
        self.tenant_id = tenant_id
        self.statements: list[str] = []

    def wrap(self, name: str) -> Any:
        original = getattr(self.store, name)

        async def counted(sql: str, *args: Any) -> Any:
            if args and args[0] == self.tenant_id:
                self.statements.append(sql)
            return await original(sql, *args)

        return counted


@pytest.fixture
def counter(api: Api, monkeypatch: pytest.MonkeyPatch) -> StatementCounter:
    store: Store = api.client.app.state.services.store  # type: ignore[attr-defined]
    counting = StatementCounter(store, api.tenant_id)
    for name in ("fetch", "fetch_point"):
        monkeypatch.setattr(store, name, counting.wrap(name))
    return counting


def arrange(api: Api, accounts: int) -> None:
    for i in range(accounts):
        api.account(f"acc-{i:03}")
    for i in range(accounts):
        for j in (1, 2):
            api.transfer(f"acc-{i:03}", f"acc-{(i + j) % accounts:03}", 10 * j + i)


def statements_for_page(gql: GraphQL, counter: StatementCounter, first: int) -> int:
    counter.statements.clear()
    data = gql.data(PAGE, {"first": first})
    assert len(data["accounts"]["nodes"]) == first
    return len(counter.statements)


def test_a_page_of_accounts_with_their_last_transfers_costs_a_fixed_number_of_statements(
    api: Api, counter: StatementCounter
) -> None:
    arrange(api, 20)
    gql = GraphQL(api)
    small = statements_for_page(gql, counter, 2)
    large = statements_for_page(gql, counter, 20)
    # The page, the last transfers of all its accounts, the first page of each
    # one's balance history, and the accounts those transfers name: four.
    assert small == large == 4, counter.statements


def test_the_batched_reads_answer_what_the_rest_reads_answer(api: Api) -> None:
    arrange(api, 5)
    nodes = GraphQL(api).data(PAGE, {"first": 5})["accounts"]["nodes"]
    for node in nodes:
        rest = api.get(
            "/v1/transfers", params={"account_id": node["id"], "order": "desc", "limit": 3}
        )
        assert [t["id"] for t in node["lastTransfers"]] == [t["id"] for t in rest.json()["data"]]
        for t, r in zip(node["lastTransfers"], rest.json()["data"], strict=True):
            assert t["debitAccount"]["id"] == r["debit_account_id"]
            assert t["debitAccount"]["balance"] == {
                "posted": api.balance(r["debit_account_id"])["balance"]["posted"]
            }
        history = api.get(f"/v1/accounts/{node['id']}/balances", params={"limit": 2}).json()
        assert [h["version"] for h in node["balanceHistory"]["nodes"]] == [
            h["version"] for h in history["data"]
        ]

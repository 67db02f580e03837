"""TLS early data (0-RTT) can be replayed by anyone who saw it: a request marked
``Early-Data: 1`` (by tally.cli.hypercorn_server, or a proxy that terminated TLS)
may only read. Anything else is 425 Too Early, problem+json, and nothing runs
(RFC 8470 §5.2; docs/protocols.md). tests/e2e/test_protocols.py sends real 0-RTT."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from tests.api.conftest import Api
from tests.api.test_ops import assert_problem

EARLY = {"Early-Data": "1"}


def test_a_transfer_sent_in_early_data_is_refused_with_425_and_not_made(api: Api) -> None:
    api.account("early-a")
    api.account("early-b")
    body = {"id": "early-t", "debit_account_id": "early-a", "credit_account_id": "early-b"}
    r = api.post("/v1/transfers", {**body, "amount": 10}, headers=EARLY)
    problem = assert_problem(r, 425, "too_early")
    assert problem["request_id"] == r.headers["request-id"]
    assert api.get("/v1/transfers/early-t").status_code == 404
    assert api.balance("early-a")["debits_posted"] == 0
    # The same request once the handshake is complete (no mark) runs.
    assert api.post("/v1/transfers", {**body, "amount": 10}).status_code == 201


@pytest.mark.parametrize("method", ["POST", "PATCH", "DELETE", "PUT"])
def test_every_unsafe_method_in_early_data_is_425_on_any_route(
    api: Api, client: TestClient, method: str
) -> None:
    assert_problem(api.request(method, "/v1/accounts", headers=EARLY), 425, "too_early")
    assert_problem(client.request(method, "/no-such-route", headers=EARLY), 425, "too_early")


def test_safe_methods_in_early_data_are_served(api: Api, client: TestClient) -> None:
    api.account("early-read")
    assert api.get("/v1/accounts/early-read", headers=EARLY).status_code == 200
    assert client.get("/healthz", headers=EARLY).status_code == 200
    assert api.request("HEAD", "/v1/accounts/early-read", headers=EARLY).status_code == 200


def test_an_early_data_value_other_than_1_is_not_early(api: Api) -> None:
    api.account("late-a")
    api.account("late-b")
    transfer = {"debit_account_id": "late-a", "credit_account_id": "late-b", "amount": 1}
    assert api.post("/v1/transfers", transfer, headers={"Early-Data": "0"}).status_code == 201

"""GraphQL over WebSocket (graphql-transport-ws), in process: the protocol, the
``events`` subscription, and the same admission as REST.

In process a subscription ends after TALLY_EVENTS_STREAM_SECONDS_MAX (0.5 s, set
by tests/conftest.py) with ``complete``; tests/e2e/test_graphql_ws.py follows an
endless one on a real server as events commit.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from tally.api import create_app
from tally.config import Settings
from tests.api.conftest import Api
from tests.api.graphql_client import GraphQL
from tests.conftest import FakeClock, create_tenant

PROTOCOL = "graphql-transport-ws"
EVENTS = "subscription($after: Int64, $types: [String!]) { events(afterSequence: $after, types: $types) { sequence type createdAt data } }"  # noqa: E501


def connect(client: TestClient, **kwargs: Any) -> Any:
    return client.websocket_connect("/graphql", subprotocols=[PROTOCOL], **kwargs)


def init(ws: Any, key: str) -> None:
    ws.send_json({"type": "connection_init", "payload": {"authorization": f"Bearer {key}"}})
    assert ws.receive_json() == {"type": "connection_ack"}


def subscribe(ws: Any, op_id: str, query: str, variables: dict[str, Any] | None = None) -> None:
    payload: dict[str, Any] = {"query": query}
    if variables is not None:
        payload["variables"] = variables
    ws.send_json({"id": op_id, "type": "subscribe", "payload": payload})


def until_done(ws: Any, op_id: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The ``next`` payloads of one operation, and its final message
    (``complete`` or ``error``)."""
    payloads = []
    for _ in range(1_000):
        message = ws.receive_json()
        if message.get("type") == "ping":
            ws.send_json({"type": "pong"})
            continue
        assert message["id"] == op_id, message
        if message["type"] != "next":
            return payloads, message
        payloads.append(message["payload"])
    raise AssertionError("the operation did not end")


def closed_with(ws: Any) -> WebSocketDisconnect:
    """How the server closed the socket (after any messages it sent first)."""
    for _ in range(100):
        try:
            ws.receive_json()
        except WebSocketDisconnect as closed:
            return closed
    raise AssertionError("the socket was not closed")


def events_of(payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for p in payloads:
        assert "errors" not in p, p
    return [p["data"]["events"] for p in payloads]


# -- the events subscription ------------------------------------------------------------------


def test_a_subscription_sends_the_events_after_a_sequence_as_rest_lists_them(api: Api) -> None:
    for name in ("a", "b", "c"):
        api.account(name)
    with connect(api.client) as ws:
        assert ws.accepted_subprotocol == PROTOCOL
        init(ws, api.api_key)
        subscribe(ws, "1", EVENTS, {"after": 1})
        payloads, end = until_done(ws, "1")
    assert end == {"id": "1", "type": "complete"}
    events = events_of(payloads)
    listed = api.get("/v1/events", params={"after": "1"}).json()["data"]
    assert [e["sequence"] for e in events] == [2, 3]
    assert [
        {
            "sequence": e["sequence"],
            "type": e["type"],
            "created_at": e["createdAt"],
            "data": e["data"],
        }
        for e in events
    ] == listed


def test_a_subscription_filters_by_type_and_sees_only_its_tenant(api: Api, other_api: Api) -> None:
    api.account("a")
    api.account("b")
    api.transfer("a", "b", 5)
    other_api.account("theirs")
    with connect(api.client) as ws:
        init(ws, api.api_key)
        subscribe(ws, "t", EVENTS, {"after": 0, "types": ["transfer.created"]})
        payloads, _ = until_done(ws, "t")
        subscribe(ws, "all", EVENTS, {"after": 0})
        everything, _ = until_done(ws, "all")
    assert [e["type"] for e in events_of(payloads)] == ["transfer.created"]
    ids = {e["data"]["id"] for e in events_of(everything) if e["type"] == "account.created"}
    assert ids == {"a", "b"}


def test_an_unknown_event_type_or_a_bad_sequence_is_a_validation_error(api: Api) -> None:
    with connect(api.client) as ws:
        init(ws, api.api_key)
        for variables in ({"types": ["nope"]}, {"after": -1}):
            subscribe(ws, "bad", EVENTS, variables)
            payloads, end = until_done(ws, "bad")
            assert end["type"] == "complete"
            (payload,) = payloads
            (error,) = payload["errors"]
            assert error["extensions"]["code"] == "validation_error", error


def test_a_credential_without_events_read_is_refused_per_field(api: Api) -> None:
    r = api.post("/v1/api-keys", {"name": "reader", "scopes": ["accounts:read"]})
    assert r.status_code == 201, r.text
    with connect(api.client) as ws:
        init(ws, r.json()["secret"])
        subscribe(ws, "1", EVENTS, {"after": 0})
        payloads, _ = until_done(ws, "1")
    (error,) = payloads[0]["errors"]
    assert error["extensions"]["code"] == "forbidden"


def test_a_query_runs_over_the_socket_and_a_mutation_is_sent_to_http(api: Api) -> None:
    api.account("a")
    with connect(api.client) as ws:
        init(ws, api.api_key)
        subscribe(ws, "q", '{ account(id: "a") { id currency } }')
        payloads, end = until_done(ws, "q")
        assert payloads == [{"data": {"account": {"id": "a", "currency": "USD"}}}]
        assert end["type"] == "complete"
        subscribe(ws, "m", 'mutation { createAccount(input: {id: "x", currency: "USD"}) { id } }')
        payloads, end = until_done(ws, "m")
    assert payloads == []
    assert end["type"] == "error"
    assert "Idempotency-Key" in end["payload"][0]["message"]
    assert api.get("/v1/accounts/x").status_code == 404


def test_a_subscription_over_http_is_refused_with_a_pointer_to_the_socket(api: Api) -> None:
    error = GraphQL(api).error(EVENTS)
    assert error["extensions"]["code"] == "validation_error"
    assert "graphql-transport-ws" in error["message"]


def test_the_same_document_limits_apply_and_a_refused_document_is_an_error_message(
    api: Api,
) -> None:
    aliased = "{ " + " ".join(f'a{i}: account(id: "x") {{ id }}' for i in range(200)) + " }"
    with connect(api.client) as ws:
        init(ws, api.api_key)
        for op_id, query in (
            ("syntax", "subscription {"),
            ("aliases", aliased),
            ("unknown", "subscription { nope }"),
        ):
            subscribe(ws, op_id, query)
            payloads, end = until_done(ws, op_id)
            assert payloads == [] and end["type"] == "error", (op_id, end)
            assert end["payload"][0]["extensions"]["code"] in {
                "validation_error",
                "malformed_request",
            }


def test_complete_from_the_client_stops_an_operation_and_frees_its_id(api: Api) -> None:
    with connect(api.client) as ws:
        init(ws, api.api_key)
        subscribe(ws, "1", EVENTS)
        ws.send_json({"id": "1", "type": "complete"})
        ws.send_json({"type": "ping"})
        assert ws.receive_json() == {"type": "pong"}
        api.account("after-complete")
        subscribe(ws, "1", EVENTS, {"after": 0})
        payloads, end = until_done(ws, "1")
    assert end["type"] == "complete"
    assert [e["data"]["id"] for e in events_of(payloads)] == ["after-complete"]


# -- the protocol's refusals ------------------------------------------------------------------


def test_without_the_subprotocol_the_socket_is_closed_with_4406(api: Api) -> None:
    with api.client.websocket_connect("/graphql") as ws:
        closed = closed_with(ws)
    assert closed.code == 4406


def test_a_bad_credential_closes_the_connection_with_4403_and_its_code(api: Api) -> None:
    for payload in ({"authorization": "Bearer tly_nope_nope"}, {}, None):
        with connect(api.client) as ws:
            ws.send_json({"type": "connection_init", "payload": payload})
            closed = closed_with(ws)
        assert (closed.code, closed.reason) == (4403, "unauthenticated")


def test_the_handshake_authorization_header_is_a_credential_too(api: Api) -> None:
    api.account("a")
    with connect(api.client, headers=api.headers) as ws:
        ws.send_json({"type": "connection_init"})
        assert ws.receive_json() == {"type": "connection_ack"}
        subscribe(ws, "1", EVENTS, {"after": 0})
        payloads, _ = until_done(ws, "1")
    assert len(events_of(payloads)) == 1


def test_subscribe_before_connection_init_is_4401_and_a_second_init_4429(api: Api) -> None:
    with connect(api.client) as ws:
        subscribe(ws, "1", EVENTS)
        assert closed_with(ws).code == 4401
    with connect(api.client) as ws:
        init(ws, api.api_key)
        ws.send_json({"type": "connection_init"})
        assert closed_with(ws).code == 4429


def test_a_duplicate_operation_id_is_4409(api: Api) -> None:
    with connect(api.client) as ws:
        init(ws, api.api_key)
        subscribe(ws, "same", EVENTS)
        subscribe(ws, "same", EVENTS)
        assert closed_with(ws).code == 4409


@pytest.mark.parametrize(
    "message",
    [
        "not json",
        '["a list"]',
        '{"type": 1}',
        '{"type": "nonsense"}',
        '{"type": "subscribe", "id": "1"}',
    ],
)
def test_a_malformed_message_is_4400(api: Api, message: str) -> None:
    with connect(api.client) as ws:
        init(ws, api.api_key)
        ws.send_text(message)
        assert closed_with(ws).code == 4400


def test_a_key_revoked_after_connection_init_is_refused_at_the_next_subscribe(api: Api) -> None:
    r = api.post("/v1/api-keys", {"name": "short-lived", "scopes": ["events:read"]})
    assert r.status_code == 201, r.text
    key, secret = r.json()["api_key"], r.json()["secret"]
    with connect(api.client) as ws:
        init(ws, secret)
        assert api.request("DELETE", f"/v1/api-keys/{key['id']}").status_code == 204
        subscribe(ws, "1", EVENTS)
        closed = closed_with(ws)
    assert (closed.code, closed.reason) == (4403, "unauthenticated")


@pytest.fixture
def quiet_client(database_url: str) -> Iterator[tuple[TestClient, Api]]:
    # The wait for connection_init is 2 s: long enough that a paused machine still
    # sends it in time where a test does, short enough to wait out in the 4408 test.
    settings = Settings(
        database_url=database_url, events_ws_auth_seconds=2, events_heartbeat_seconds=0.2
    )
    with TestClient(create_app(settings, clock=FakeClock())) as client:
        tenant_id, key = create_tenant(database_url)
        yield client, Api(client, key, tenant_id)


def test_no_connection_init_within_the_wait_is_4408(quiet_client: tuple[TestClient, Api]) -> None:
    client, _ = quiet_client
    with connect(client) as ws:
        assert closed_with(ws).code == 4408


def test_the_server_pings_a_quiet_connection(quiet_client: tuple[TestClient, Api]) -> None:
    client, api = quiet_client
    with connect(client) as ws:
        init(ws, api.api_key)
        assert ws.receive_json() == {"type": "ping"}
        ws.send_json({"type": "pong"})

"""Live events in process (api.md §8): long polling, Server-Sent Events, WebSocket.

In process a stream ends after TALLY_EVENTS_STREAM_SECONDS_MAX (0.5 s, set by
tests/conftest.py), because Starlette's TestClient hands over a response only
once it has ended; tests/e2e/test_events.py reads endless streams from real
servers.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocketDisconnect

from tally.api import create_app
from tally.config import Settings
from tests.api.conftest import Api
from tests.conftest import FakeClock, create_tenant
from tests.security.conftest import sse_events

STREAM = "/v1/events/stream"
WS = "/v1/events/ws"


def stream(api: Api, **kwargs: Any) -> tuple[httpx.Response, list[dict[str, Any]]]:
    r = api.get(STREAM, **kwargs)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    return r, sse_events(r.text)


def during(api: Api, action: Callable[[], Any], read: Callable[[], Any]) -> Any:
    """``read`` (a stream) while ``action`` (a write) runs as soon as the stream
    has subscribed to the process's hub: a fixed sleep could let a slow machine
    write before the stream listens, or after its 0.5 s in process are over."""
    hub = api.client.app.state.services.events  # type: ignore[attr-defined]
    until(lambda: hub.subscribers == 0)  # an earlier test's stream lets go
    result: list[Any] = []
    reader = threading.Thread(target=lambda: result.append(read()))
    reader.start()
    until(lambda: hub.subscribers == 1 or not reader.is_alive())
    assert hub.subscribers == 1, "the stream did not subscribe"
    action()
    reader.join(timeout=10)
    assert result, "the read did not end"
    return result[0]


def until(condition: Callable[[], bool], seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.005)


def seqs(events: list[dict[str, Any]]) -> list[int]:
    return [e["sequence"] for e in events]


# -- Server-Sent Events --------------------------------------------------------------------


def test_the_stream_sends_each_event_as_the_event_list_shows_it(api: Api) -> None:
    api.account("a")
    api.account("b")
    api.transfer("a", "b", 5, id="t")
    listed = api.get("/v1/events").json()["data"]
    r, streamed = stream(api, params={"after": "0"})
    assert streamed == listed
    assert "id: 3\nevent: transfer.created\ndata: " in r.text
    assert r.headers["cache-control"] == "no-store"


def test_a_stream_without_a_resume_point_starts_with_the_next_event(api: Api) -> None:
    api.account("old")
    _, events = during(api, lambda: api.account("new"), lambda: stream(api))
    assert [e["data"]["id"] for e in events] == ["new"]


def test_live_events_reach_the_stream_as_they_commit(api: Api) -> None:
    api.account("a")

    def writes() -> None:
        api.account("b")
        api.transfer("a", "b", 1, id="t1")

    _, events = during(api, writes, lambda: stream(api, params={"after": "1"}))
    assert seqs(events) == [2, 3]


def test_last_event_id_resumes_with_no_gap_and_no_duplicate(api: Api) -> None:
    for i in range(6):
        api.account(f"r{i}")
    _, first = stream(api, params={"after": "0"})
    assert seqs(first) == [1, 2, 3, 4, 5, 6]
    _, resumed = during(
        api, lambda: api.account("r6"), lambda: stream(api, headers={"Last-Event-ID": "4"})
    )
    assert seqs(resumed) == [5, 6, 7]
    # Last-Event-ID (the reconnecting browser's) wins over ?after=.
    _, both = stream(api, params={"after": "0"}, headers={"Last-Event-ID": "6"})
    assert seqs(both) == [7]


def test_a_head_of_the_stream_answers_its_headers_at_once(
    quiet_app: tuple[TestClient, Api],
) -> None:
    _, api = quiet_app
    started = time.monotonic()
    r = api.request("HEAD", STREAM)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert time.monotonic() - started < 4  # not the 5 s a stream lasts in this app


def test_types_filter_the_stream(api: Api) -> None:
    api.account("a")
    api.account("b")
    api.transfer("a", "b", 5, id="t")
    api.patch("/v1/accounts/a", {"metadata": {"k": "v"}})
    _, events = stream(api, params={"after": "0", "types": "transfer.created,account.updated"})
    assert [e["type"] for e in events] == ["transfer.created", "account.updated"]


@pytest.mark.parametrize(
    ("params", "headers", "field"),
    [
        ({"after": "-1"}, {}, "after"),
        ({"after": "x"}, {}, "after"),
        ({"after": str(2**63)}, {}, "after"),
        ({}, {"Last-Event-ID": "abc"}, "Last-Event-ID"),
        ({}, {"Last-Event-ID": "-3"}, "Last-Event-ID"),
        ({}, {"Last-Event-ID": "9" * 30}, "Last-Event-ID"),
        ({"types": "account.created,nope"}, {}, "types"),
        ({"types": ""}, {}, "types"),
        ({"types": "a" * 600}, {}, "types"),
        ({"limit": "5"}, {}, "limit"),
    ],
)
def test_bad_stream_parameters_are_refused_with_422(
    api: Api, params: dict[str, str], headers: dict[str, str], field: str
) -> None:
    r = api.get(STREAM, params=params, headers=headers)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert [e["field"] for e in r.json()["errors"]] == [field]


def test_another_tenants_stream_shows_none_of_this_tenants_events(api: Api, other_api: Api) -> None:
    api.account("mine")
    read = lambda: stream(other_api, params={"after": "0"})  # noqa: E731
    _, events = during(api, lambda: api.account("mine2"), read)
    assert events == []


# -- long polling ---------------------------------------------------------------------------


def test_a_long_poll_answers_at_once_when_events_exist(api: Api) -> None:
    api.account("a")
    started = time.monotonic()
    r = api.get("/v1/events", params={"after": "0", "wait_seconds": "10"})
    assert r.status_code == 200 and seqs(r.json()["data"]) == [1]
    assert time.monotonic() - started < 2


def test_a_long_poll_answers_as_soon_as_an_event_commits(api: Api) -> None:
    api.account("a")
    started = time.monotonic()
    r = during(
        api,
        lambda: api.account("b"),
        lambda: api.get("/v1/events", params={"after": "1", "wait_seconds": "10"}),
    )
    assert r.status_code == 200, r.text
    assert seqs(r.json()["data"]) == [2]
    assert time.monotonic() - started < 3


def test_a_long_poll_with_nothing_new_answers_an_empty_page_when_the_wait_ends(api: Api) -> None:
    api.account("a")
    started = time.monotonic()
    r = api.get("/v1/events", params={"after": "1", "wait_seconds": "1"})
    assert r.status_code == 200
    assert r.json() == {"data": [], "has_more": False, "next_cursor": None}
    assert 0.9 <= time.monotonic() - started < 5


@pytest.mark.parametrize("wait", ["31", "-1", "1.5", "x", "99999999999999999999"])
def test_a_long_poll_outside_0_to_30_seconds_is_refused_with_422(api: Api, wait: str) -> None:
    r = api.get("/v1/events", params={"wait_seconds": wait})
    assert r.status_code == 422, r.text
    assert [e["field"] for e in r.json()["errors"]] == ["wait_seconds"]


# -- WebSocket ------------------------------------------------------------------------------


def ws_events(session: Any) -> list[dict[str, Any]]:
    """Every message until the server closes the socket (after 0.5 s in process)."""
    messages = []
    code = None
    for _ in range(10_000):
        try:
            messages.append(session.receive_json())
        except WebSocketDisconnect as closed:
            code = closed.code
            break
    assert code == 1000, "the socket did not close normally"
    return [m for m in messages if "sequence" in m]


def test_a_websocket_with_handshake_credentials_streams_and_resumes(api: Api) -> None:
    for i in range(3):
        api.account(f"w{i}")
    with api.client.websocket_connect(f"{WS}?after=1", headers=api.headers) as ws:
        events = ws_events(ws)
    assert seqs(events) == [2, 3]
    assert events == api.get("/v1/events", params={"after": "1"}).json()["data"]


def test_a_websocket_authenticated_by_its_first_message_streams(api: Api) -> None:
    api.account("a")
    with api.client.websocket_connect(f"{WS}?after=0&types=account.created") as ws:
        ws.send_json({"type": "auth", "token": api.api_key})
        events = ws_events(ws)
    assert seqs(events) == [1]


@pytest.mark.parametrize(
    "message",
    [{"type": "auth", "token": "tly_nope_nope"}, {"type": "hello"}, {"token": 1}, "not json"],
)
def test_a_websocket_with_a_bad_auth_message_is_closed_with_4401(api: Api, message: Any) -> None:
    with api.client.websocket_connect(WS) as ws:
        if isinstance(message, str):
            ws.send_text(message)
        else:
            ws.send_json(message)
        problem = ws.receive_json()
        assert problem["code"] == "unauthenticated"
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert closed.value.code == 4401


def test_a_websocket_handshake_with_a_bad_credential_is_refused_with_401(api: Api) -> None:
    with pytest.raises(WebSocketDenialResponse) as denied:
        api.client.websocket_connect(WS, headers={"Authorization": "Bearer tly_x_y"}).__enter__()
    assert denied.value.status_code == 401
    assert denied.value.json()["code"] == "unauthenticated"


@pytest.mark.parametrize("query", ["after=-1", "types=nope", "limit=3", "after=1&after=2"])
def test_a_websocket_with_bad_parameters_is_refused_with_422(api: Api, query: str) -> None:
    with pytest.raises(WebSocketDenialResponse) as denied:
        api.client.websocket_connect(f"{WS}?{query}", headers=api.headers).__enter__()
    assert denied.value.status_code == 422
    assert denied.value.json()["code"] == "validation_error"


def test_another_tenants_websocket_shows_none_of_this_tenants_events(
    api: Api, other_api: Api
) -> None:
    api.account("mine")
    with api.client.websocket_connect(f"{WS}?after=0", headers=other_api.headers) as ws:
        assert ws_events(ws) == []


@pytest.fixture
def quiet_app(database_url: str) -> Iterator[tuple[TestClient, Api]]:
    """An app of its own: a small stream buffer, slow-client and auth timeouts short."""
    settings = Settings(
        database_url=database_url,
        events_buffer_events_max=3,
        events_ws_auth_seconds=0.3,
        events_stream_seconds_max=5,
        events_send_timeout_seconds=1,
    )
    with TestClient(create_app(settings, clock=FakeClock())) as client:
        tenant_id, key = create_tenant(database_url)
        yield client, Api(client, key, tenant_id)


def test_a_websocket_without_any_credential_is_closed_after_the_auth_wait(
    quiet_app: tuple[TestClient, Api],
) -> None:
    client, _ = quiet_app
    with client.websocket_connect(WS) as ws:
        assert ws.receive_json()["code"] == "unauthenticated"
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert closed.value.code == 4401


# -- a slow client ---------------------------------------------------------------------------


def test_a_slow_client_gets_a_final_overflow_and_resumes_without_a_gap(
    quiet_app: tuple[TestClient, Api],
) -> None:
    client, api = quiet_app
    api.account("a")
    api.account("b")
    app = client.app
    assert client.portal is not None
    body = client.portal.call(_slow_stream, app, api, 12)
    frames = body.decode()
    assert frames.rstrip().endswith("}")
    assert "event: overflow" in frames
    delivered = sse_events(frames)
    # The buffer (3 events) went out, then the overflow: nothing was skipped before it.
    assert seqs(delivered) == [3, 4, 5]
    overflow = frames.rpartition("event: overflow\ndata: ")[2]
    assert '"last_sequence":5' in overflow
    _, resumed = stream(api, headers={"Last-Event-ID": "5"})
    assert seqs(resumed) == list(range(6, 15))


def test_a_client_that_takes_nothing_is_disconnected_after_the_send_timeout(
    quiet_app: tuple[TestClient, Api],
) -> None:
    client, api = quiet_app
    assert client.portal is not None
    seconds = client.portal.call(_stuck_stream, client.app, api)
    assert 0.9 < seconds < 4  # TALLY_EVENTS_SEND_TIMEOUT_SECONDS=1, the hub looks each 1 s


async def _stuck_stream(app: Any, api: Api) -> float:
    """A stream whose client never takes a byte: its first write never completes."""

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            await asyncio.Event().wait()

    started = time.monotonic()
    await asyncio.wait_for(app(_scope(api, b""), receive, send), 10)
    return time.monotonic() - started


def _scope(api: Api, query: bytes) -> dict[str, Any]:
    headers = [(b"authorization", f"Bearer {api.api_key}".encode())]
    return {
        "type": "http", "method": "GET", "path": STREAM, "raw_path": STREAM.encode(),
        "query_string": query, "headers": headers, "scheme": "http",
        "http_version": "1.1", "server": ("testserver", 80), "client": ("127.0.0.1", 1),
        "root_path": "", "asgi": {"version": "3.0"},
    }  # fmt: skip


async def _slow_stream(app: Any, api: Api, transfers: int) -> bytes:
    """A stream whose client takes 0.2 s to read each write, while a batch of
    ``transfers`` commits: the buffer of 3 fills."""
    sent: list[bytes] = []
    done = asyncio.Event()

    async def receive() -> dict[str, Any]:
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            sent.append(message.get("body", b""))
            if not message.get("more_body"):
                done.set()
            await asyncio.sleep(0.2)

    scope = _scope(api, b"after=2")
    task = asyncio.create_task(app(scope, receive, send))
    hub = app.state.services.events
    for _ in range(2_000):  # the batch commits once the stream listens
        if hub.subscribers or task.done():
            break
        await asyncio.sleep(0.005)
    items = [{"debit_account_id": "a", "credit_account_id": "b", "amount": 1}] * transfers
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        r = await c.post("/v1/transfers/batch", json={"transfers": items}, headers=api.headers)
        assert r.status_code == 200, r.text
    await asyncio.wait_for(task, 10)
    return b"".join(sent)

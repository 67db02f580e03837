"""Live events end to end (api.md §8): real ``tally serve`` processes on PostgreSQL,
real clients (httpx streaming, the ``websockets`` package).

What this proves: an event committed by one server process reaches the streams
and long polls of another within a second (through PostgreSQL NOTIFY, or Redis
pub/sub when TALLY_REDIS_URL is set); a reconnect with Last-Event-ID resumes
with no gap and no duplicate; a slow client is sent a final ``overflow`` and
disconnected, and resumes; the types filter; WebSocket credentials at the
handshake and in a first message; bad parameters are 422s.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets

from tests.e2e.conftest import StartServer, cli_create_tenant

REDIS_URL = "redis://127.0.0.1:6379/0"
DELIVERY_SECONDS_MAX = 1.0
TIMEOUT_SECONDS = 10.0


class Sse:
    """One Server-Sent Events stream, read frame by frame."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()
        self.comments = 0

    async def next(self, timeout: float = TIMEOUT_SECONDS) -> dict[str, str] | None:  # noqa: ASYNC109
        """The next frame's fields (``id``, ``event``, ``data``), or None at the end."""
        fields: dict[str, str] = {}
        async with asyncio.timeout(timeout):
            async for line in self._lines:
                if not line:
                    if "data" in fields:
                        return fields
                    fields = {}
                elif line.startswith(":"):
                    self.comments += 1
                else:
                    name, _, value = line.partition(": ")
                    fields[name] = value
        return None

    async def events(
        self,
        count: int,
        timeout: float = TIMEOUT_SECONDS,  # noqa: ASYNC109
    ) -> list[dict[str, Any]]:
        found = []
        while len(found) < count:
            frame = await self.next(timeout)
            assert frame is not None, f"the stream ended after {found}"
            event = json.loads(frame["data"])
            assert frame["id"] == str(event["sequence"]) and frame["event"] == event["type"]
            found.append(event)
        return found


@contextlib.asynccontextmanager
async def sse(
    base_url: str, key: str, *, client: httpx.AsyncClient | None = None, **kwargs: Any
) -> AsyncIterator[Sse]:
    headers = {"Authorization": f"Bearer {key}", **kwargs.pop("headers", {})}
    async with contextlib.AsyncExitStack() as stack:
        if client is None:
            client = await stack.enter_async_context(httpx.AsyncClient(timeout=TIMEOUT_SECONDS))
        request = client.build_request(
            "GET", f"{base_url}/v1/events/stream", headers=headers, **kwargs
        )
        response = await client.send(request, stream=True)
        stack.push_async_callback(response.aclose)
        assert response.status_code == 200, await response.aread()
        # The subscription is taken before the headers are sent: from here on,
        # every event committed reaches this stream.
        yield Sse(response)


async def post_accounts(base_url: str, key: str, ids: list[str], **fields: Any) -> float:
    """Create the accounts; the time the last one was answered."""
    async with httpx.AsyncClient(base_url=base_url, timeout=TIMEOUT_SECONDS) as client:
        for account_id in ids:
            r = await client.post(
                "/v1/accounts",
                json={"id": account_id, "currency": "USD", **fields},
                headers={"Authorization": f"Bearer {key}"},
            )
            assert r.status_code == 201, r.text
    return time.monotonic()


def ws_url(base_url: str, query: str = "") -> str:
    return base_url.replace("http://", "ws://") + "/v1/events/ws" + (f"?{query}" if query else "")


async def ws_events(ws: Any, count: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    async with asyncio.timeout(TIMEOUT_SECONDS):
        while len(found) < count:
            message = json.loads(await ws.recv())
            if "sequence" in message:
                found.append(message)
    return found


# -- between processes ----------------------------------------------------------------------


@pytest.mark.parametrize("wakeups", ["postgres", "redis"])
def test_an_event_committed_by_one_process_reaches_the_other_within_a_second(
    postgres_url: str, start_server: StartServer, wakeups: str
) -> None:
    settings = {"redis_url": REDIS_URL} if wakeups == "redis" else {}
    writer = start_server(postgres_url, **settings)
    reader = start_server(postgres_url, migrate=False, **settings)
    _, key = cli_create_tenant(postgres_url, f"cross-{wakeups}")

    async def run() -> None:
        async with (
            sse(reader.base_url, key) as stream,
            # From the first event on: the socket subscribes just after its handshake,
            # and an event committed before that comes from the table.
            websockets.connect(
                ws_url(reader.base_url, "after=0"),
                additional_headers={"Authorization": f"Bearer {key}"},
            ) as ws,
        ):
            for i in range(3):
                committed = await post_accounts(writer.base_url, key, [f"x{i}"])
                (event,) = await stream.events(1)
                (message,) = await ws_events(ws, 1)
                assert time.monotonic() - committed < DELIVERY_SECONDS_MAX
                assert event == message
                assert event["sequence"] == i + 1 and event["data"]["id"] == f"x{i}"

    asyncio.run(run())


def test_every_subscriber_of_two_workers_gets_every_event_once_in_order(
    postgres_url: str, start_server: StartServer
) -> None:
    server = start_server(postgres_url, workers=2)
    _, key = cli_create_tenant(postgres_url, "two-workers")
    count = 12

    async def run() -> None:
        async with contextlib.AsyncExitStack() as stack:
            # New connections each: the kernel spreads them over both workers.
            streams = [await stack.enter_async_context(sse(server.base_url, key)) for _ in range(8)]
            sockets = [
                await stack.enter_async_context(
                    websockets.connect(ws_url(server.base_url, "after=0"))
                )
                for _ in range(4)
            ]
            for ws in sockets:
                await ws.send(json.dumps({"type": "auth", "token": key}))
            await asyncio.sleep(0.3)
            ids = [f"w{i}" for i in range(count)]
            await asyncio.gather(
                *(post_accounts(server.base_url, key, ids[i::4]) for i in range(4))
            )
            received = await asyncio.gather(
                *(s.events(count) for s in streams), *(ws_events(w, count) for w in sockets)
            )
            for events in received:
                assert [e["sequence"] for e in events] == list(range(1, count + 1))
                assert sorted(e["data"]["id"] for e in events) == sorted(ids)

    asyncio.run(run())


def test_a_long_poll_on_one_process_is_answered_by_a_commit_on_the_other(
    postgres_url: str, start_server: StartServer
) -> None:
    writer = start_server(postgres_url)
    reader = start_server(postgres_url, migrate=False)
    _, key = cli_create_tenant(postgres_url, "long-poll")

    async def run() -> None:
        async with httpx.AsyncClient(base_url=reader.base_url, timeout=40) as client:
            poll = asyncio.create_task(
                client.get(
                    "/v1/events",
                    params={"after": "0", "wait_seconds": "20"},
                    headers={"Authorization": f"Bearer {key}"},
                )
            )
            await asyncio.sleep(0.5)
            assert not poll.done()
            committed = await post_accounts(writer.base_url, key, ["lp"])
            r = await poll
            assert time.monotonic() - committed < DELIVERY_SECONDS_MAX
            assert r.status_code == 200
            assert [e["data"]["id"] for e in r.json()["data"]] == ["lp"]

    asyncio.run(run())


# -- resuming, filtering, slow clients -------------------------------------------------------


def test_a_reconnect_with_last_event_id_resumes_with_no_gap_and_no_duplicate(
    postgres_url: str, start_server: StartServer
) -> None:
    server = start_server(postgres_url, workers=2)
    _, key = cli_create_tenant(postgres_url, "resume")

    async def run() -> None:
        async with sse(server.base_url, key, params={"after": "0"}) as stream:
            await post_accounts(server.base_url, key, [f"r{i}" for i in range(5)])
            first = await stream.events(3)
        last_id = str(first[-1]["sequence"])
        # Written while no stream is open: they must come from the table.
        await post_accounts(server.base_url, key, [f"s{i}" for i in range(3)])
        async with sse(server.base_url, key, headers={"Last-Event-ID": last_id}) as stream:
            await post_accounts(server.base_url, key, ["t0"])
            rest = await stream.events(6)
        assert [e["sequence"] for e in first + rest] == list(range(1, 10))

    asyncio.run(run())


def test_the_types_filter_sends_only_those_types(
    postgres_url: str, start_server: StartServer
) -> None:
    server = start_server(postgres_url)
    _, key = cli_create_tenant(postgres_url, "types")

    async def run() -> None:
        async with sse(
            server.base_url, key, params={"after": "0", "types": "account.updated"}
        ) as stream:
            await post_accounts(server.base_url, key, ["a", "b"])
            async with httpx.AsyncClient(base_url=server.base_url) as client:
                r = await client.patch(
                    "/v1/accounts/b",
                    json={"metadata": {"k": "v"}},
                    headers={"Authorization": f"Bearer {key}"},
                )
                assert r.status_code == 200, r.text
            (event,) = await stream.events(1)
            assert event["type"] == "account.updated" and event["sequence"] == 3

    asyncio.run(run())


def test_a_client_too_slow_to_keep_up_is_sent_overflow_and_resumes(
    postgres_url: str, start_server: StartServer
) -> None:
    # Each event carries ~27 KiB of metadata, so 240 of them (6.5 MiB) outgrow the
    # socket buffers of a client that stops reading; the stream's buffer holds 4.
    server = start_server(
        postgres_url, events_buffer_events_max="4", body_bytes_max=str(16 * 1024 * 1024)
    )
    _, key = cli_create_tenant(postgres_url, "slow")
    metadata = {f"k{i:02}": "v" * 512 for i in range(50)}
    small_buffer = httpx.AsyncHTTPTransport(
        socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)]
    )

    async def run() -> None:
        async with (
            httpx.AsyncClient(transport=small_buffer, timeout=30) as slow,
            sse(server.base_url, key, client=slow, params={"after": "0"}) as stream,
        ):
            await post_accounts(server.base_url, key, ["a", "b"])
            items = [
                {"debit_account_id": "a", "credit_account_id": "b", "amount": 1,
                 "metadata": metadata}
                for _ in range(120)
            ]  # fmt: skip
            async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
                for _ in range(2):
                    r = await client.post(
                        "/v1/transfers/batch",
                        json={"transfers": items},
                        headers={"Authorization": f"Bearer {key}"},
                    )
                    assert r.status_code == 200, r.text[:300]
            await asyncio.sleep(1.0)  # the client has read nothing meanwhile
            received, overflow = [], None
            while (frame := await stream.next(30)) is not None:
                if frame.get("event") == "overflow":
                    overflow = json.loads(frame["data"])
                    continue
                received.append(json.loads(frame["data"])["sequence"])
            assert overflow is not None, f"no overflow after {len(received)} events"
            assert received == list(range(1, len(received) + 1))
            assert overflow["last_sequence"] == received[-1] < 242
        async with sse(server.base_url, key, headers={"Last-Event-ID": str(received[-1])}) as s:
            rest = await s.events(242 - received[-1], timeout=30)
        assert [e["sequence"] for e in rest] == list(range(received[-1] + 1, 243))

    asyncio.run(run())


# -- WebSocket credentials and bad parameters ------------------------------------------------


def test_websocket_credentials_at_the_handshake_or_in_a_first_message(
    postgres_url: str, start_server: StartServer
) -> None:
    server = start_server(postgres_url)
    _, key = cli_create_tenant(postgres_url, "ws-auth")
    _, other_key = cli_create_tenant(postgres_url, "ws-other")

    async def run() -> None:
        await post_accounts(server.base_url, key, ["a"])
        auth = {"Authorization": f"Bearer {key}"}
        async with websockets.connect(
            ws_url(server.base_url, "after=0"), additional_headers=auth
        ) as ws:
            assert (await ws_events(ws, 1))[0]["data"]["id"] == "a"
        async with websockets.connect(ws_url(server.base_url, "after=0")) as ws:
            await ws.send(json.dumps({"type": "auth", "token": key}))
            assert (await ws_events(ws, 1))[0]["data"]["id"] == "a"
        async with websockets.connect(ws_url(server.base_url, "after=0")) as ws:
            await ws.send(json.dumps({"type": "auth", "token": other_key}))
            await post_accounts(server.base_url, other_key, ["theirs"])
            assert (await ws_events(ws, 1))[0]["data"]["id"] == "theirs"
        async with websockets.connect(ws_url(server.base_url)) as ws:
            await ws.send(json.dumps({"type": "auth", "token": "tly_wrong_wrong"}))
            assert json.loads(await ws.recv())["code"] == "unauthenticated"
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
        for headers in ({"Authorization": "Bearer tly_wrong_wrong"}, {"Authorization": "Basic x"}):
            with pytest.raises(websockets.InvalidStatus) as denied:
                await websockets.connect(ws_url(server.base_url), additional_headers=headers)
            assert denied.value.response.status_code == 401

    asyncio.run(run())


def test_bad_parameters_are_422_on_every_events_route(
    postgres_url: str, start_server: StartServer
) -> None:
    server = start_server(postgres_url)
    _, key = cli_create_tenant(postgres_url, "bad-params")
    auth = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=server.base_url, headers=auth, timeout=TIMEOUT_SECONDS) as client:
        for path, params, headers in [
            ("/v1/events", {"wait_seconds": "31"}, {}),
            ("/v1/events", {"wait_seconds": "-1"}, {}),
            ("/v1/events/stream", {"after": "-1"}, {}),
            ("/v1/events/stream", {"types": "account.created,bogus"}, {}),
            ("/v1/events/stream", {}, {"Last-Event-ID": "not-a-number"}),
            ("/v1/events/stream", {"wait_seconds": "1"}, {}),
        ]:
            r = client.get(path, params=params, headers=headers)
            assert r.status_code == 422, (path, params, r.text)
            assert r.headers["content-type"] == "application/problem+json"

    async def run() -> None:
        for query in ("after=x", "types=bogus", "cursor=abc"):
            with pytest.raises(websockets.InvalidStatus) as denied:
                await websockets.connect(ws_url(server.base_url, query), additional_headers=auth)
            assert denied.value.response.status_code == 422

    asyncio.run(run())


def test_a_stopping_server_ends_its_streams_at_once_rather_than_holding_them(
    postgres_url: str, start_server: StartServer
) -> None:
    server = start_server(postgres_url)
    _, key = cli_create_tenant(postgres_url, "shutdown")

    async def run() -> float:
        async with sse(server.base_url, key) as stream:
            stopping = time.monotonic()
            os.killpg(server.process.pid, signal.SIGTERM)
            assert await stream.next(timeout=5) is None  # the stream ended, cleanly
            return time.monotonic() - stopping

    assert asyncio.run(run()) < 3
    server.process.wait(timeout=5)  # not uvicorn's 10 s graceful timeout

"""A GraphQL subscription end to end: two real ``tally serve`` processes on
PostgreSQL, a real WebSocket client (the ``websockets`` package) speaking
graphql-transport-ws.

What this proves: an event committed through one process reaches a subscription
held by the other (PostgreSQL NOTIFY wakes its hub) within a second, as the
``next`` of a subscription that stays open; the server pings a quiet socket;
``complete`` from the client ends the operation and the connection stays usable.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import websockets

from tests.e2e.conftest import StartServer, cli_create_tenant

DELIVERY_SECONDS_MAX = 1.0
TIMEOUT_SECONDS = 10.0
# From the first event on (afterSequence: 0): a subscription that takes its place
# in the hub after the first commit still gets it, from the table.
EVENTS = (
    'subscription { events(afterSequence: 0, types: ["account.created"]) { sequence type data } }'
)


async def receive(ws: Any) -> dict[str, Any]:
    """The next message that is not a ping (answered with a pong)."""
    async with asyncio.timeout(TIMEOUT_SECONDS):
        while True:
            message: dict[str, Any] = json.loads(await ws.recv())
            if message["type"] != "ping":
                return message
            await ws.send(json.dumps({"type": "pong"}))


def test_a_subscription_on_one_process_sees_a_commit_made_through_another(
    postgres_url: str, start_server: StartServer
) -> None:
    writer = start_server(postgres_url)
    reader = start_server(postgres_url, migrate=False)
    _, key = cli_create_tenant(postgres_url, "graphql-ws")
    url = reader.base_url.replace("http://", "ws://") + "/graphql"

    async def run() -> None:
        async with websockets.connect(url, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
            assert ws.subprotocol == "graphql-transport-ws"
            init = {"type": "connection_init", "payload": {"authorization": f"Bearer {key}"}}
            await ws.send(json.dumps(init))
            assert await receive(ws) == {"type": "connection_ack"}
            await ws.send(
                json.dumps({"id": "live", "type": "subscribe", "payload": {"query": EVENTS}})
            )
            async with httpx.AsyncClient(base_url=writer.base_url) as http:
                for account_id in ("first", "second"):
                    r = await http.post(
                        "/v1/accounts",
                        json={"id": account_id, "currency": "USD"},
                        headers={"Authorization": f"Bearer {key}"},
                    )
                    assert r.status_code == 201, r.text
                    committed = time.monotonic()
                    message = await receive(ws)
                    assert time.monotonic() - committed < DELIVERY_SECONDS_MAX
                    assert message["id"] == "live" and message["type"] == "next", message
                    event = message["payload"]["data"]["events"]
                    assert (event["type"], event["data"]["id"]) == ("account.created", account_id)
            await ws.send(json.dumps({"id": "live", "type": "complete"}))
            await ws.send(json.dumps({"type": "ping"}))
            assert await receive(ws) == {"type": "pong"}

    asyncio.run(run())

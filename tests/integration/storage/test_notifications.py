"""Messages between server processes through PostgreSQL (storage.notifications):
sent only when the transaction commits, echoed before the block returns, and a
lost listener listens again before it tells its subscribers to start afresh."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import psycopg
import pytest

from tally.config import Settings
from tally.storage.notifications import LISTENER_APPLICATION_NAME
from tally.storage.postgres import PostgresStore

CHANNEL = "tally_test_channel"
WAIT_SECONDS = 10.0


async def _until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def _run(postgres_url: str, scenario: Callable[..., object]) -> None:
    async def main() -> None:
        store = PostgresStore(Settings(database_url=postgres_url))
        received: list[str] = []
        resets: list[int] = []
        store.notifications.subscribe(CHANNEL, received.append, lambda: resets.append(1))
        await store.open()
        await store.notifications.start()
        try:
            await _until(lambda: store.notifications.listening)
            await scenario(store, received, resets)  # type: ignore[misc]
        finally:
            await store.notifications.stop()
            await store.close()

    asyncio.run(main())


def test_a_message_arrives_once_committed_and_before_the_block_returns(
    postgres_url: str,
) -> None:
    async def scenario(store: PostgresStore, received: list[str], resets: list[int]) -> None:
        assert resets == [1]  # the first LISTEN counts as a start afresh
        async with store.transaction() as tx:
            await tx.notify(CHANNEL, "key:one")
            assert received == []  # not before the commit
        assert received == ["key:one"]  # the echo: already here when the block ends

    _run(postgres_url, scenario)


def test_a_rolled_back_transaction_tells_nobody(postgres_url: str) -> None:
    async def scenario(store: PostgresStore, received: list[str], resets: list[int]) -> None:
        async def roll_back() -> None:
            async with store.transaction() as tx:
                await tx.notify(CHANNEL, "key:never")
                raise RuntimeError("roll back")

        with pytest.raises(RuntimeError):
            await roll_back()
        async with store.transaction() as tx:
            await tx.notify(CHANNEL, "key:after")
        assert received == ["key:after"]

    _run(postgres_url, scenario)


def test_a_lost_listener_listens_again_then_resets(postgres_url: str) -> None:
    async def scenario(store: PostgresStore, received: list[str], resets: list[int]) -> None:
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = %s AND datname = current_database()",
                (LISTENER_APPLICATION_NAME,),
            ).fetchone()
        assert killed is not None and killed[0] >= 1
        await _until(lambda: len(resets) == 2 and store.notifications.listening)
        async with store.transaction() as tx:
            await tx.notify(CHANNEL, "session:after-reconnect")
        assert received == ["session:after-reconnect"]

    _run(postgres_url, scenario)

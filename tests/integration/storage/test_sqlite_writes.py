"""SQLite's write transactions: on the event loop's thread, never sleeping on it.

A batch runs on the loop's own thread (docs/performance.md, "SQLite on the loop's
thread"): its Python holds the interpreter lock wherever it runs, and a thread of
its own only added the cost of winning that lock back after every statement. So
the loop must never wait in SQLite's busy handler: when another process holds
the file's write lock, the batch waits for it on the writer thread while the
loop serves everyone else, and past ``db_lock_timeout_ms`` it is a 503 that
wrote nothing. The other process here is a real one, holding ``BEGIN
IMMEDIATE`` on the same file (the session's migrated one: each test makes a
tenant of its own).
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from tally.config import Settings
from tally.core import CreateAccount, Status
from tally.errors import Unavailable
from tally.ledger.transaction import Job, execute
from tally.storage import make_store
from tally.storage.sqlite import SqliteStore
from tests.conftest import create_tenant

# Holds SQLite's write lock on the file named by argv[1] for argv[2] seconds.
_HOLDER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("ROLLBACK")
"""


def _hold_write_lock(url: str, seconds: float) -> subprocess.Popen[str]:
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, url.removeprefix("sqlite:///"), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "locked"
    return holder


async def _ticks_while(work: asyncio.Future[object]) -> int:
    """How many 10 ms sleeps the loop finished while ``work`` ran."""
    ticks = 0
    while not work.done():
        await asyncio.sleep(0.01)
        ticks += 1
    return ticks


def test_a_batch_runs_on_the_loops_thread_when_the_write_lock_is_free(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant_id, _ = create_tenant(sqlite_url)
    threads: set[int] = set()
    perform = SqliteStore._perform

    def spy(self: SqliteStore, conn: object, step: object) -> object:
        threads.add(threading.get_ident())
        return perform(self, conn, step)  # type: ignore[arg-type]

    monkeypatch.setattr(SqliteStore, "_perform", spy)

    async def scenario() -> tuple[Status, int]:
        store = make_store(Settings(database_url=sqlite_url))
        await store.open()
        try:
            job = Job(tenant_id, [CreateAccount("on-the-loop", "USD")])
            (result,) = await execute(store, [job], 0, retry_after_seconds=1)
            return result.outcomes[0].status, threading.get_ident()
        finally:
            await store.close()

    status, loop_thread = asyncio.run(scenario())
    assert status is Status.CREATED
    assert threads == {loop_thread}


def test_a_batch_waits_for_another_processes_write_lock_off_the_loop(
    sqlite_url: str,
) -> None:
    tenant_id, _ = create_tenant(sqlite_url)

    async def scenario() -> tuple[Status, float, int]:
        store = make_store(Settings(database_url=sqlite_url))
        await store.open()
        try:
            holder = _hold_write_lock(sqlite_url, 0.6)
            started = time.monotonic()
            job = Job(tenant_id, [CreateAccount("after-the-other", "USD")])
            work = asyncio.ensure_future(execute(store, [job], 0, retry_after_seconds=1))
            ticks = await _ticks_while(work)
            (result,) = await work
            waited = time.monotonic() - started
            holder.wait(timeout=10)
            return result.outcomes[0].status, waited, ticks
        finally:
            await store.close()

    status, waited, ticks = asyncio.run(scenario())
    assert status is Status.CREATED
    assert waited >= 0.3  # it did wait for the other process
    # A loop asleep in the busy handler would have ticked once or twice at most.
    assert ticks >= 10


def test_a_write_lock_held_past_the_timeout_is_unavailable_and_writes_nothing(
    sqlite_url: str,
) -> None:
    tenant_id, _ = create_tenant(sqlite_url)
    settings = Settings(database_url=sqlite_url, db_lock_timeout_ms=300)

    async def scenario() -> tuple[Unavailable, int, object, Status]:
        store = make_store(settings)
        await store.open()
        try:
            holder = _hold_write_lock(sqlite_url, 1.5)
            job = Job(tenant_id, [CreateAccount("never", "USD")])
            work = asyncio.ensure_future(execute(store, [job], 0, retry_after_seconds=1))
            ticks = await _ticks_while(work)
            with pytest.raises(Unavailable) as refused:
                await work
            holder.wait(timeout=10)
            found = await store.get_account(tenant_id, "never")
            # The lock is free again: the next batch, on the loop, commits.
            job = Job(tenant_id, [CreateAccount("later", "USD")])
            (result,) = await execute(store, [job], 0, retry_after_seconds=1)
            return refused.value, ticks, found, result.outcomes[0].status
        finally:
            await store.close()

    refused, ticks, found, later = asyncio.run(scenario())
    assert refused.retry_after_seconds == settings.db_unavailable_retry_after_seconds
    assert ticks >= 5
    assert found is None
    assert later is Status.CREATED


@pytest.mark.parametrize(
    ("failure", "raised"),
    [
        (RuntimeError("cut short after the write statements"), RuntimeError),
        # What SQLite raises for a full disk or an I/O error: a 503, nothing written.
        (sqlite3.OperationalError("database or disk is full"), Unavailable),
    ],
)
def test_a_batch_that_fails_midway_rolls_back_and_the_next_begins_afresh(
    sqlite_url: str,
    monkeypatch: pytest.MonkeyPatch,
    failure: BaseException,
    raised: type[BaseException],
) -> None:
    """The loop's write connection is kept from batch to batch: a batch cut short
    after its first statements must not leave it inside that transaction."""
    tenant_id, _ = create_tenant(sqlite_url)
    write = SqliteStore._write_tenant
    calls = 0

    def fails_once_after_writing(self: SqliteStore, conn: object, w: object, now_us: int) -> None:
        nonlocal calls
        calls += 1
        write(self, conn, w, now_us)  # type: ignore[arg-type]
        if calls == 1:
            raise failure

    monkeypatch.setattr(SqliteStore, "_write_tenant", fails_once_after_writing)

    async def scenario() -> tuple[object, object, Status]:
        store = make_store(Settings(database_url=sqlite_url))
        await store.open()
        try:
            job = Job(tenant_id, [CreateAccount("rolled-back", "USD")])
            with pytest.raises(raised):
                await execute(store, [job], 0, retry_after_seconds=1)
            gone = await store.get_account(tenant_id, "rolled-back")
            job = Job(tenant_id, [CreateAccount("next", "USD")])
            (result,) = await execute(store, [job], 0, retry_after_seconds=1)
            kept = await store.get_account(tenant_id, "next")
            return gone, kept, result.outcomes[0].status
        finally:
            await store.close()

    gone, kept, status = asyncio.run(scenario())
    assert gone is None
    assert kept is not None
    assert status is Status.CREATED

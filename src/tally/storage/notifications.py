"""Messages from one server process to all of them, through the database.

A process that changes shared state a cache depends on (a revoked API key, an
ended session) sends a message on a channel *inside the transaction that makes
the change*: PostgreSQL's ``NOTIFY`` is delivered when, and only if, that
transaction commits, to every session that ``LISTEN``s on the channel. Every
process keeps one such session (``PostgresNotifications``), named
``tally-listener`` in ``pg_stat_activity``.

A listener connection can be lost, and with it any message sent meanwhile. So a
subscriber is told twice: ``on_message`` for each message, and ``on_reset`` when
the listener has connected again, *after* it listens again, so that whatever the
subscriber reloads from then on is covered by later messages. While the
listener is down, ``listening`` is False: a cache must not answer from memory.

SQLite runs in one process, so it has nothing to tell anyone:
``NoNotifications`` is never listening, and its caches stay off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable, Iterable

import asyncpg

log = logging.getLogger(__name__)

LISTENER_APPLICATION_NAME = "tally-listener"
# The channel a write announces its tenant's new events on (tally.events), from
# the write statement itself: "<tenant id>:<its last sequence>". A wakeup only:
# the events table is what readers read.
EVENTS_CHANNEL = "tally_events"
RECONNECT_SECONDS_MAX = 5.0
# A quiet listener asks its connection this often whether it is still there, so
# a connection that died without a word (a network partition) is noticed.
PROBE_SECONDS = 15.0
# A sender waits at most this long for its own message to come back (``echo``).
ECHO_TIMEOUT_SECONDS = 1.0
# What separates a message from the nonce ``stamp`` adds, which makes it unique.
NONCE_SEPARATOR = "|"

OnMessage = Callable[[str], None]
OnReset = Callable[[], None]


def stamp(message: str) -> str:
    """The message with a nonce, so that waiting for its echo cannot be answered
    by an earlier copy of the same message."""
    return f"{message}{NONCE_SEPARATOR}{secrets.token_hex(6)}"


def unstamp(payload: str) -> str:
    return payload.rpartition(NONCE_SEPARATOR)[0] or payload


class Notifications:
    """The interface, and the implementation for one process (SQLite)."""

    listening = False

    def subscribe(self, channel: str, on_message: OnMessage, on_reset: OnReset) -> None:
        """Call before ``start``."""

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def expect(self, payloads: Iterable[str]) -> None:
        """Payloads this process is about to send and will ``echo``-wait for."""

    async def echo(self, payloads: Iterable[str], *, wait: bool = True) -> None:
        """Return once this process's own listener has received the payloads, or
        after ``ECHO_TIMEOUT_SECONDS``; with ``wait`` False (the transaction rolled
        back) at once. PostgreSQL hands a committed NOTIFY to
        every listener at once, so when it is back here the other processes
        have it too."""


NoNotifications = Notifications


class PostgresNotifications(Notifications):
    def __init__(self, dsn: str, *, connect_timeout_seconds: float) -> None:
        self._dsn = dsn
        self._connect_timeout = connect_timeout_seconds
        self._subscribers: dict[str, list[tuple[OnMessage, OnReset]]] = {}
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()
        self._waiting: dict[str, asyncio.Future[None]] = {}
        self.listening = False

    def subscribe(self, channel: str, on_message: OnMessage, on_reset: OnReset) -> None:
        self._subscribers.setdefault(channel, []).append((on_message, on_reset))

    async def start(self) -> None:
        if self._subscribers and self._task is None:
            self._task = asyncio.create_task(self._keep_listening(), name="tally-listener")

    async def stop(self) -> None:
        self.listening = False
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._close()

    def expect(self, payloads: Iterable[str]) -> None:
        loop = asyncio.get_running_loop()
        for payload in payloads:
            self._waiting[payload] = loop.create_future()

    async def echo(self, payloads: Iterable[str], *, wait: bool = True) -> None:
        payloads = list(payloads)
        futures = [f for p in payloads if (f := self._waiting.get(p)) is not None]
        try:
            if wait and futures and self.listening:
                await asyncio.wait(futures, timeout=ECHO_TIMEOUT_SECONDS)
        finally:
            for payload in payloads:
                self._waiting.pop(payload, None)

    # -- the listener -------------------------------------------------------------------

    async def _keep_listening(self) -> None:
        delay = 0.1
        while True:
            try:
                await self._listen()
                delay = 0.1
                while not self._lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._lost.wait(), PROBE_SECONDS)
                    if not self._lost.is_set() and self._conn is not None:
                        await self._conn.fetchval("SELECT 1", timeout=PROBE_SECONDS)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                log.warning("notification listener: %s: %s", type(exc).__name__, exc)
            self.listening = False
            await self._close()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_SECONDS_MAX)

    async def _listen(self) -> None:
        self._lost.clear()
        conn = self._conn = await asyncpg.connect(
            self._dsn,
            timeout=self._connect_timeout,
            server_settings={"application_name": LISTENER_APPLICATION_NAME},
        )
        conn.add_termination_listener(lambda _conn: self._lost.set())
        for channel in self._subscribers:
            await conn.add_listener(channel, self._deliver)
        # Listening again before anyone reloads: a change from now on is a message.
        for subscribers in self._subscribers.values():
            for _, on_reset in subscribers:
                on_reset()
        self.listening = True
        log.info("notification listener: listening on %s", ", ".join(self._subscribers))

    def _deliver(self, _conn: object, _pid: int, channel: str, payload: str) -> None:
        for on_message, _ in self._subscribers.get(channel, ()):
            try:
                on_message(unstamp(payload))
            except Exception:  # one subscriber's bug must not silence the others
                log.exception("notification subscriber failed on %s", channel)
        waiter = self._waiting.get(payload)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), timeout=1.0)
            if not conn.is_closed():
                conn.terminate()

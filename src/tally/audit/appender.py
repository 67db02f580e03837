"""The appender: the audit rows of requests that changed nothing, batched."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from prometheus_client import Counter

from tally.audit.context import INSERT_SQL
from tally.errors import TallyError
from tally.storage import Store
from tally.support.loops import start_rounds

log = logging.getLogger(__name__)

AUDIT_APPEND_FAILURES = Counter(
    "tally_audit_append_failures", "Audit rows of refused requests that could not be written."
)


class Appender:
    """Batches the rows of requests that changed nothing. Bounded: past
    ``queue_rows_max`` waiting rows, ``append`` waits for the next flush."""

    def __init__(
        self, store: Store, *, flush_seconds: float, queue_rows_max: int, batch_rows_max: int
    ) -> None:
        self._store = store
        self._flush_seconds = flush_seconds
        self._queue_rows_max = queue_rows_max
        self._batch_rows_max = batch_rows_max
        self._rows: list[tuple[Any, ...]] = []
        self._flushed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        self._task = start_rounds(
            "audit appender",
            self._flush,
            interval_seconds=self._flush_seconds,
            batch_max=self._batch_rows_max,
            wait_first=True,
        )

    async def stop(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        while self._rows and await self._flush():
            pass

    async def append(self, row: tuple[Any, ...]) -> None:
        while len(self._rows) >= self._queue_rows_max and not self._closing:
            self._flushed.clear()
            await self._flushed.wait()
        self._rows.append(row)

    async def _flush(self) -> int:
        """Write one batch of waiting rows; returns how many were written."""
        batch = self._rows[: self._batch_rows_max]
        try:
            if batch:
                async with self._store.transaction() as tx:
                    for row in batch:
                        await tx.execute(INSERT_SQL, *row)
        except TallyError as exc:  # the database is away: keep them, try next round
            log.warning("audit rows not written yet: %s", exc.detail or exc.code)
            if len(self._rows) > self._queue_rows_max:
                dropped = len(self._rows) - self._queue_rows_max
                del self._rows[:dropped]
                AUDIT_APPEND_FAILURES.inc(dropped)
            return 0
        finally:
            self._flushed.set()
        del self._rows[: len(batch)]
        return len(batch)

"""Retention of idempotency keys: purge the expired ones, in bounded batches.

A key past its retention already counts as new (every lookup compares with the
clock), so purging is only about space. Every server process runs this loop;
on PostgreSQL the delete skips rows another process is deleting (``SKIP
LOCKED``), on SQLite deletes take turns on the one writer thread. Each round
deletes at most ``batch_max`` rows, so no round holds locks for long.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from tally.errors import TallyError
from tally.storage import Store

log = logging.getLogger(__name__)


async def purge_expired_keys(store: Store, now_us: int, batch_max: int) -> int:
    """Purge until nothing expired is left (or a round comes back short)."""
    total = 0
    while True:
        purged = await store.purge_idempotency_keys(now_us, batch_max)
        total += purged
        if purged < batch_max:
            return total


async def run_retention(
    store: Store, clock: Callable[[], int], *, interval_seconds: float, batch_max: int
) -> None:
    while True:
        await asyncio.sleep(interval_seconds)
        try:
            purged = await purge_expired_keys(store, clock(), batch_max)
        except TallyError as exc:  # the database is away: try again next round
            log.warning("idempotency purge failed: %s", exc.detail)
            continue
        except Exception:
            log.exception("idempotency purge failed")
            continue
        if purged:
            log.info("purged %d expired idempotency keys", purged)

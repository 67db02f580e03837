"""Retention of idempotency keys: purge the expired ones, in bounded batches.

A key past its retention already counts as new (every lookup compares with the
clock), so purging is only about space. Every server process runs this round
(``tally.support.loops``); on PostgreSQL the delete skips rows another process
is deleting (``SKIP LOCKED``), on SQLite deletes take turns on the one writer
thread. Each statement deletes at most ``batch_max`` rows, so none holds locks
for long.
"""

from __future__ import annotations

import logging

from tally.storage import Store

log = logging.getLogger(__name__)


async def purge_expired_keys(store: Store, now_us: int, batch_max: int) -> int:
    """Purge in batches of ``batch_max`` until a batch comes back short; returns
    how many keys were purged."""
    total = 0
    while True:
        purged = await store.purge_idempotency_keys(now_us, batch_max)
        total += purged
        if purged < batch_max:
            break
    if total:
        log.info("purged %d expired idempotency keys", total)
    return total

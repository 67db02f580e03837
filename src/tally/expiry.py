"""Expiry of pending transfers past their ``timeout_seconds``.

Every server process runs this loop. It finds pending transfers whose deadline
has passed and sends an ``ExpirePending`` command for each through the writer,
where the core decides under the accounts' locks: a transfer that another
process expired a moment ago, or that was posted or voided in time, is skipped.
So expiry happens exactly once however many processes race, and within about
``expiry_interval_seconds`` of the deadline. (A pending transfer past its
deadline can never be posted anyway: the core compares with the clock too.)
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable

from tally.core import ExpirePending
from tally.errors import TallyError
from tally.storage import Store
from tally.writer import Writer

log = logging.getLogger(__name__)


async def expire_due(store: Store, writer: Writer, now_us: int, batch_max: int) -> int:
    """Expire what is due now; returns how many commands were sent."""
    due = await store.due_pending_transfers(now_us, batch_max)
    by_tenant: dict[str, list[ExpirePending]] = defaultdict(list)
    for tenant_id, transfer_id in due:
        by_tenant[tenant_id].append(ExpirePending(transfer_id))
    for tenant_id, commands in by_tenant.items():
        await writer.submit(tenant_id, commands)
    return len(due)


async def run_expiry(
    store: Store,
    writer: Writer,
    clock: Callable[[], int],
    *,
    interval_seconds: float,
    batch_max: int,
) -> None:
    while True:
        try:
            sent = await expire_due(store, writer, clock(), batch_max)
        except TallyError as exc:  # the database is away: try again next round
            log.warning("expiry round failed: %s", exc.detail)
            sent = 0
        except Exception:
            log.exception("expiry round failed")
            sent = 0
        # A full round means more may be due: go again at once.
        if sent < batch_max:
            await asyncio.sleep(interval_seconds)

"""Expiry of pending transfers past their ``timeout_seconds``.

Every server process runs this round (``tally.support.loops``). It finds pending
transfers whose deadline has passed and sends an ``ExpirePending`` command for
each through the writer, where the core decides under the accounts' locks: a
transfer that another process expired a moment ago, or that was posted or
voided in time, is skipped. So expiry happens exactly once however many
processes race, and within about ``expiry_interval_seconds`` of the deadline.
(A pending transfer past its deadline can never be posted anyway: the core
compares with the clock too.)
"""

from __future__ import annotations

from collections import defaultdict

from tally.core import ExpirePending
from tally.ledger.writer import Writer
from tally.storage import Store


async def expire_due(store: Store, writer: Writer, now_us: int, batch_max: int) -> int:
    """Expire what is due now; returns how many commands were sent."""
    due = await store.due_pending_transfers(now_us, batch_max)
    by_tenant: dict[str, list[ExpirePending]] = defaultdict(list)
    for tenant_id, transfer_id in due:
        by_tenant[tenant_id].append(ExpirePending(transfer_id))
    for tenant_id, commands in by_tenant.items():
        await writer.submit(tenant_id, commands)
    return len(due)

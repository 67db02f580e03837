"""The one shape of Tally's background work: do a bounded round, then wait.

Expiry, the idempotency purge and the audit sealer each run a round of at most
``batch_max`` items. A full round means more is waiting, so the next starts at
once; otherwise the loop sleeps ``interval_seconds``. A round that fails is
logged and retried next time: a database that is away (``TallyError``, a 503 to
clients) is a warning, anything else a bug with its traceback. Nothing here
ever ends the loop but cancellation.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from tally.errors import TallyError

log = logging.getLogger(__name__)


def start_rounds(
    name: str,
    round_: Callable[[], Awaitable[int]],
    *,
    interval_seconds: float,
    batch_max: int,
    wait_first: bool = False,
    wake: asyncio.Event | None = None,
) -> asyncio.Task[None]:
    """``run_periodically`` as a task named ``tally-<name>`` (tally-expiry, ...)."""
    rounds = run_periodically(
        name,
        round_,
        interval_seconds=interval_seconds,
        batch_max=batch_max,
        wait_first=wait_first,
        wake=wake,
    )
    return asyncio.create_task(rounds, name="tally-" + name.replace(" ", "-"))


async def run_periodically(
    name: str,
    round_: Callable[[], Awaitable[int]],
    *,
    interval_seconds: float,
    batch_max: int,
    wait_first: bool = False,
    wake: asyncio.Event | None = None,
) -> None:
    """Run ``round_`` (which returns how many items it handled) forever. Setting
    ``wake`` cuts a wait short: the next round starts at once."""
    if wait_first:
        await asyncio.sleep(interval_seconds)
    while True:
        try:
            handled = await round_()
        except TallyError as exc:
            log.warning("%s round failed: %s", name, exc.detail or exc.code)
            handled = 0
        except Exception:
            log.exception("%s round failed", name)
            handled = 0
        if handled < batch_max:
            await _wait(interval_seconds, wake)


async def _wait(seconds: float, wake: asyncio.Event | None) -> None:
    if wake is None:
        await asyncio.sleep(seconds)
        return
    await woken_within(wake, seconds)
    wake.clear()


async def woken_within(event: asyncio.Event, seconds: float) -> bool:
    """Whether ``event`` was set within ``seconds`` (it is left as it is)."""
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True

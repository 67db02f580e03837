"""The background loop: a bounded round, then a wait that a wake-up cuts short."""

from __future__ import annotations

import asyncio
import contextlib
import time

from tally.support.loops import start_rounds


def test_a_wake_up_starts_the_next_round_at_once() -> None:
    async def main() -> list[float]:
        rounds: list[float] = []
        wake = asyncio.Event()

        async def round_() -> int:
            rounds.append(time.monotonic())
            return 0

        task = start_rounds("test", round_, interval_seconds=60, batch_max=10, wake=wake)
        await asyncio.sleep(0.05)
        wake.set()
        await asyncio.sleep(0.05)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return rounds

    rounds = asyncio.run(main())
    assert len(rounds) == 2  # the first, and the one the wake-up brought forward
    assert rounds[1] - rounds[0] < 1


def test_without_a_wake_up_the_loop_waits_its_interval() -> None:
    async def main() -> int:
        count = 0

        async def round_() -> int:
            nonlocal count
            count += 1
            return 0

        task = start_rounds("test", round_, interval_seconds=60, batch_max=10)
        await asyncio.sleep(0.1)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return count

    assert asyncio.run(main()) == 1

"""Time as Tally keeps it: integer microseconds since the Unix epoch, read from one
injectable clock, and written as RFC 3339 text in UTC with microseconds."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

Clock = Callable[[], int]
"""Returns microseconds since the epoch. Tests pass a FakeClock they move forward."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def wall_clock_us() -> int:
    return time.time_ns() // 1000


@functools.lru_cache(maxsize=4096)
def _format_second(second: int) -> str:
    return (_EPOCH + timedelta(seconds=second)).strftime("%Y-%m-%dT%H:%M:%S")


def format_time(us: int) -> str:
    # Every response and event carries several times, mostly from the same few
    # seconds: format each second once, then add the microseconds.
    second, micro = divmod(us, 1_000_000)
    return f"{_format_second(second)}.{micro:06d}Z"


def parse_time(text: str) -> int:
    """An RFC 3339 instant to microseconds; ValueError if it is not one."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError("a time needs a zone offset, such as Z")
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds

"""When the next attempt of a failed delivery happens.

Exponential backoff with jitter: the n-th retry waits ``base * 2**(n-1)``
seconds, capped at ``delay_max``, times a random factor in ``1 ± jitter`` (so
that endpoints failing together do not retry together). With the defaults
(10 s base, 14 attempts, 12 h cap) the 13 retries span about 22.7 hours: a
receiver that is down for most of a day still gets every event. A
``Retry-After`` from the receiver replaces the computed delay (capped too).
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    base_seconds: float
    delay_max_seconds: float
    jitter: float
    attempts_max: int

    def delay_seconds(self, attempts: int, rng: random.Random | None = None) -> float:
        """The wait after the ``attempts``-th failed attempt (1 for the first)."""
        assert attempts >= 1
        exponent = min(attempts - 1, 62)
        delay = min(self.base_seconds * 2.0**exponent, self.delay_max_seconds)
        spread = (rng or random).uniform(-self.jitter, self.jitter)
        return float(max(0.0, delay * (1.0 + spread)))

    def retry_after_seconds(self, retry_after: float) -> float:
        """A receiver's Retry-After, honoured up to the longest delay we keep."""
        return float(min(max(retry_after, 0.0), self.delay_max_seconds))

    def gives_up(self, attempts: int) -> bool:
        """Whether a delivery that failed ``attempts`` times is dead-lettered."""
        return attempts >= self.attempts_max

    def span_seconds(self) -> float:
        """The time from the first attempt to the last, without jitter."""
        return sum(
            min(self.base_seconds * 2.0 ** (n - 1), self.delay_max_seconds)
            for n in range(1, self.attempts_max)
        )


def parse_retry_after(value: str | None, now_seconds: float) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP date; None if
    absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit() and len(value) <= 9:
        return float(value)
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now_seconds)

"""When to try a call again, and how long to wait first.

A write is safe to retry only under the same idempotency key: the server then
applies it once, and a retry of a call that did commit answers the stored
result (api.md §3). So the client makes one key per logical call and sends it on
every attempt, and retries only what another attempt can fix:

- no answer (connect error, broken connection, time-out): the write may or may
  not have committed; the key makes the retry safe either way;
- 409 ``idempotency_key_in_use``: the first attempt is still running;
- 429 and 503 (and a proxy's 502 and 504): nothing was changed.

Everything else (a 422, a 404, …) is an answer: retrying would get the same.
Waits grow exponentially with full jitter (AWS's "Exponential Backoff And
Jitter": a random wait between 0 and the cap, so that many clients refused at
once do not come back at once), never shorter than the server's ``Retry-After``,
and the attempts are bounded in number and in total time.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

RETRY_STATUSES = frozenset({429, 502, 503, 504})
IN_USE = "idempotency_key_in_use"


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` in all (1: never retry); waits from ``base_seconds`` doubling
    up to ``cap_seconds``; no attempt starts after ``deadline_seconds``."""

    attempts: int = 5
    base_seconds: float = 0.25
    cap_seconds: float = 8.0
    deadline_seconds: float = 60.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")


NO_RETRY = RetryPolicy(attempts=1)


@dataclass
class Attempts:
    """One logical call's attempts: asked after each failure how long to wait,
    it answers ``None`` when the call must give up."""

    policy: RetryPolicy
    clock: Callable[[], float] = time.monotonic
    rand: Callable[[float, float], float] = random.uniform
    made: int = 0
    started: float = field(default=0.0)

    def __post_init__(self) -> None:
        self.started = self.clock()

    def delay(self, retry_after: str | None = None) -> float | None:
        """The wait before the next attempt, or None: stop."""
        self.made += 1
        if self.made >= self.policy.attempts:
            return None
        p = self.policy
        wait = self.rand(0.0, min(p.cap_seconds, p.base_seconds * 2 ** (self.made - 1)))
        server = parse_retry_after(retry_after)
        if server is not None:
            wait = max(wait, server)
        if self.clock() - self.started + wait > p.deadline_seconds:
            return None
        return wait


def retryable_status(status: int, code: str | None) -> bool:
    return status in RETRY_STATUSES or (status == 409 and code == IN_USE)


def parse_retry_after(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """Seconds from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now())

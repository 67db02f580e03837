"""The retry schedule: exponential, jittered, capped, about a day in all."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import format_datetime

from tally.config import Settings
from tally.services import dispatch_settings
from tally.webhooks.delivery import Attempt
from tally.webhooks.dispatcher import decide
from tally.webhooks.schedule import Backoff, parse_retry_after

DEFAULT = dispatch_settings(Settings()).backoff
US = 1_000_000


def test_the_default_schedule_spans_about_a_day() -> None:
    assert 18 * 3600 <= DEFAULT.span_seconds() <= 30 * 3600
    assert DEFAULT.attempts_max == 14


def test_each_delay_doubles_until_the_cap() -> None:
    b = Backoff(base_seconds=10, delay_max_seconds=100, jitter=0, attempts_max=10)
    assert [b.delay_seconds(n) for n in range(1, 7)] == [10, 20, 40, 80, 100, 100]


def test_jitter_spreads_delays_within_its_bounds() -> None:
    b = Backoff(base_seconds=100, delay_max_seconds=10_000, jitter=0.2, attempts_max=10)
    rng = random.Random(7)
    delays = [b.delay_seconds(1, rng) for _ in range(1000)]
    assert min(delays) >= 80 and max(delays) <= 120
    assert len({round(d, 3) for d in delays}) > 900  # not all the same: endpoints spread


def test_a_huge_attempt_number_does_not_overflow() -> None:
    assert DEFAULT.delay_seconds(10_000) <= DEFAULT.delay_max_seconds * 1.2


def test_retry_after_is_read_as_seconds_or_a_date() -> None:
    now = 1_800_000_000.0
    assert parse_retry_after("120", now) == 120
    date = format_datetime(datetime.fromtimestamp(now + 60, UTC), usegmt=True)
    assert parse_retry_after(date, now) == 60
    for bad in (None, "soon", "-5", "1e9", "9" * 40):
        assert parse_retry_after(bad, now) is None


def test_a_failure_is_retried_then_dead_lettered() -> None:
    b = Backoff(base_seconds=10, delay_max_seconds=1000, jitter=0, attempts_max=3)
    now = 1_000 * US
    first = decide(Attempt(500, "HTTP 500"), 1, now, b)
    assert (first.status, first.next_attempt_at_us) == ("pending", now + 10 * US)
    second = decide(Attempt(None, "timed out after 10 s"), 2, now, b)
    assert (second.status, second.next_attempt_at_us) == ("pending", now + 20 * US)
    assert decide(Attempt(500, "HTTP 500"), 3, now, b).status == "failed"
    assert decide(Attempt(204, None), 3, now, b).status == "succeeded"


def test_retry_after_replaces_the_backoff_up_to_the_cap() -> None:
    b = Backoff(base_seconds=10, delay_max_seconds=1000, jitter=0, attempts_max=5)
    now = 1_000 * US
    assert decide(Attempt(429, "HTTP 429", "300"), 1, now, b).next_attempt_at_us == now + 300 * US
    assert (
        decide(Attempt(503, "HTTP 503", "99999"), 1, now, b).next_attempt_at_us == now + 1000 * US
    )


def test_410_dead_letters_and_disables_the_endpoint_at_once() -> None:
    result = decide(Attempt(410, "HTTP 410"), 1, 0, DEFAULT)
    assert result.status == "failed"
    assert result.disable_endpoint

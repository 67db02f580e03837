"""When the client tries a call again, and how long it waits (tally.client.retry)."""

from __future__ import annotations

import email.utils

import pytest

from tally.client.retry import Attempts, RetryPolicy, parse_retry_after, retryable_status


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def highest(low: float, high: float) -> float:
    assert low == 0.0  # full jitter: anywhere from nothing to the cap
    return high


def test_waits_double_from_the_base_up_to_the_cap_with_full_jitter() -> None:
    policy = RetryPolicy(attempts=8, base_seconds=0.5, cap_seconds=3.0, deadline_seconds=1e9)
    attempts = Attempts(policy, clock=Clock(), rand=highest)
    waits = [attempts.delay() for _ in range(8)]
    assert waits == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0, 3.0, None]  # 8 attempts: 7 waits


def test_the_jitter_is_random_between_zero_and_the_cap() -> None:
    policy = RetryPolicy(attempts=1000, base_seconds=1.0, cap_seconds=1.0, deadline_seconds=1e9)
    attempts = Attempts(policy, clock=Clock())
    waits = [attempts.delay() for _ in range(500)]
    assert all(w is not None and 0.0 <= w <= 1.0 for w in waits)
    assert len(set(waits)) > 400  # spread out, not one value


def test_attempts_are_bounded_in_number() -> None:
    attempts = Attempts(RetryPolicy(attempts=3), clock=Clock(), rand=highest)
    assert attempts.delay() is not None
    assert attempts.delay() is not None
    assert attempts.delay() is None  # the third attempt failed: give up


def test_one_attempt_means_no_retry() -> None:
    assert Attempts(RetryPolicy(attempts=1), clock=Clock()).delay() is None


def test_attempts_are_bounded_in_time() -> None:
    clock = Clock()
    policy = RetryPolicy(attempts=100, base_seconds=1.0, cap_seconds=1.0, deadline_seconds=10.0)
    attempts = Attempts(policy, clock=clock, rand=highest)
    clock.now = 8.5
    assert attempts.delay() == 1.0  # 9.5 s: still inside the deadline
    clock.now = 9.5
    assert attempts.delay() is None  # the next attempt would start after 10 s


def test_retry_after_is_a_floor_under_the_jittered_wait() -> None:
    attempts = Attempts(RetryPolicy(deadline_seconds=1e9), clock=Clock(), rand=highest)
    assert attempts.delay("7") == 7.0
    assert attempts.delay("0") == 0.5  # the backoff's own wait when the server's is shorter


def test_a_retry_after_past_the_deadline_gives_up_rather_than_wait() -> None:
    attempts = Attempts(RetryPolicy(deadline_seconds=5.0), clock=Clock(), rand=highest)
    assert attempts.delay("30") is None


def test_retry_after_as_an_http_date() -> None:
    header = email.utils.formatdate(1_000_030.0, usegmt=True)
    assert parse_retry_after(header, now=lambda: 1_000_000.0) == pytest.approx(30.0)
    assert parse_retry_after(email.utils.formatdate(5.0, usegmt=True), now=lambda: 50.0) == 0.0


@pytest.mark.parametrize("value", [None, "", "soon", "-3", "1.5e3"])
def test_a_retry_after_that_means_nothing_is_ignored(value: str | None) -> None:
    assert parse_retry_after(value) is None


@pytest.mark.parametrize(
    ("status", "code", "retry"),
    [
        (429, "rate_limited", True),
        (503, "unavailable", True),
        (502, None, True),
        (504, None, True),
        (409, "idempotency_key_in_use", True),
        (409, "exists_with_different_fields", False),
        (422, "exceeds_credits", False),
        (500, "internal_error", False),
        (404, "not_found", False),
        (400, "idempotency_key_invalid", False),
    ],
)
def test_only_what_another_attempt_can_fix_is_retried(
    status: int, code: str | None, retry: bool
) -> None:
    assert retryable_status(status, code) is retry


def test_a_policy_needs_at_least_one_attempt() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        RetryPolicy(attempts=0)

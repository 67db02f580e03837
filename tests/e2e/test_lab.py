"""``tally lab``: each experiment run as a reader would, at a small size, and its
table read back: the lesson it prints must be the one it claims."""

from __future__ import annotations

import subprocess

from tests.e2e.conftest import TALLY

RUN_SECONDS = 120


def lab(*args: str) -> list[list[str]]:
    done = subprocess.run(
        [str(TALLY), "lab", *args], capture_output=True, text=True, timeout=RUN_SECONDS, check=False
    )
    assert done.returncode == 0, done.stderr
    rows = [line.split("  ") for line in done.stdout.splitlines()[1:]]
    return [[cell.strip() for cell in row if cell.strip()] for row in rows]


def number(cell: str) -> float:
    return float(cell.replace(",", ""))


def test_a_double_click_makes_two_transfers_without_a_key_and_one_with() -> None:
    without, with_key = lab("double-submit")
    assert without[0] == "without Idempotency-Key" and without[1:] == ["201 201", "2"]
    assert with_key[0] == "with Idempotency-Key" and with_key[-1] == "1"
    assert with_key[1] in ("201 409", "409 201", "201 201")  # in use, or replayed


def test_the_batching_writer_commits_far_less_often_than_once_per_transfer() -> None:
    single, batched = lab("batching", "--transfers", "300", "--clients", "32")
    assert single[0] == "one transaction per transfer" and number(single[4]) == 300
    assert batched[0] == "batching writer (group commit)" and number(batched[4]) < 100
    assert number(batched[3]) > number(single[3])  # transfers/s


def test_an_event_loop_holds_idle_connections_in_one_thread() -> None:
    threads, loop = lab("connections", "--connections", "300")
    assert threads[0] == "threads" and number(threads[5]) > 300
    assert loop[0] == "event-loop" and number(loop[5]) == 1
    assert number(threads[7]) == number(loop[7]) == 300  # every connection answered

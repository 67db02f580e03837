"""Server ids (tally.support.ids.new_id): the bits of a ULID, in Crockford's
base32, written out for speed and held here to a plain reference that encodes
one character (5 bits) at a time."""

from __future__ import annotations

import random
import threading
import time

import pytest

from tally.support import ids


def _reference(prefix: str, ms: int, random_bits: int) -> str:
    value = ms << 80 | random_bits
    chars = "".join(ids._CROCKFORD[(value >> shift) & 31] for shift in range(125, -5, -5))
    return f"{prefix}_{chars}"


def test_an_id_is_its_milliseconds_and_80_random_bits_in_crockford_base32() -> None:
    for _ in range(5000):
        state = random.getstate()
        before = time.time_ns() // 1_000_000
        made = ids.new_id("trf")
        after = time.time_ns() // 1_000_000
        random.setstate(state)
        bits = random.getrandbits(80)
        assert made in {_reference("trf", ms, bits) for ms in range(before, after + 1)}
        assert ids.is_valid_id(made) and len(made) == len("trf_") + 26


def test_the_extremes_of_the_random_bits_and_of_time_encode_exactly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for ms in (0, 1, 1_733_500_000_123, 2**48 - 1):
        for bits in (0, 1, 2**80 - 1, 0x5555_5555_5555_5555_5555):
            monkeypatch.setattr(ids.time, "time_ns", lambda ms=ms: ms * 1_000_000 + 999_999)
            monkeypatch.setattr(ids.random, "getrandbits", lambda k, bits=bits: bits)
            assert ids.new_id("x") == _reference("x", ms, bits)


def test_ids_made_later_sort_after_and_none_repeat_across_threads() -> None:
    made: list[list[str]] = [[] for _ in range(4)]

    def make(out: list[str]) -> None:
        for _ in range(5000):
            out.append(ids.new_id("req"))

    threads = [threading.Thread(target=make, args=(out,)) for out in made]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [i for out in made for i in out]
    assert len(set(every)) == len(every)
    for out in made:  # each thread's ids: their time part never goes back
        assert [i[4:14] for i in out] == sorted(i[4:14] for i in out)
    time.sleep(0.002)
    assert ids.new_id("req")[4:14] > max(i[4:14] for i in every)

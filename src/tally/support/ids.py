"""Object ids: client-supplied ones are checked, server ones are time-sortable.

A server id is a type prefix and a ULID-like string: 48 bits of milliseconds and
80 random bits, in Crockford's base32, so ids sort by creation time and never
collide in practice. The bits come from ``random`` (seeded from the OS, and
reseeded in every forked child), not ``secrets``: an id names an object, it
does not guard one (every lookup is scoped to the caller's tenant), and a system
call per id showed in profiles of the hot path. An id is also an idempotency
key (a client that supplies its own can retry the create safely).
"""

from __future__ import annotations

import random
import re
import time

# Ends in (?![\s\S]) rather than $: msgspec matches with re.search, where $ also
# matches before a final newline ("abc\n" would pass). The lookahead means "end
# of text" in both Python and the ECMA-262 regexes of JSON Schema.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}(?![\s\S])"
ID_CHARS_MAX = 64
_ID = re.compile(ID_PATTERN)
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def is_valid_id(value: str) -> bool:
    return _ID.fullmatch(value) is not None


# Two base32 characters per 10 bits: 13 lookups an id instead of 26 (ids are made
# on every request, so this is on the hot path).
_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]
# The time's ten characters, made once a millisecond: (milliseconds, text), one
# tuple so that a thread reads a matching pair.
_time_text: tuple[int, str] = (-1, "")


def new_id(prefix: str) -> str:
    """``prefix_`` and 26 characters: 48 bits of milliseconds (10 characters, the
    top two bits zero, as in a ULID) and 80 random bits (16)."""
    global _time_text
    ms = time.time_ns() // 1_000_000
    cached_ms, time_text = _time_text
    if cached_ms != ms:
        time_text = "".join(_PAIRS[ms >> shift & 1023] for shift in (40, 30, 20, 10, 0))
        _time_text = (ms, time_text)
    r = random.getrandbits(80)
    p = _PAIRS
    # Written out, not a comprehension and a join: 0.85 µs an id against 2.1.
    return (
        f"{prefix}_{time_text}{p[r >> 70]}{p[r >> 60 & 1023]}{p[r >> 50 & 1023]}"
        f"{p[r >> 40 & 1023]}{p[r >> 30 & 1023]}{p[r >> 20 & 1023]}{p[r >> 10 & 1023]}"
        f"{p[r & 1023]}"
    )

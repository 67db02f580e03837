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


def new_id(prefix: str) -> str:
    value = (time.time_ns() // 1_000_000) << 80 | random.getrandbits(80)
    # 26 characters hold 130 bits; the top two are zero, as in a ULID.
    pairs = [_PAIRS[(value >> shift) & 1023] for shift in range(120, -10, -10)]
    return f"{prefix}_{''.join(pairs)}"

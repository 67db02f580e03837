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


def new_id(prefix: str) -> str:
    value = (time.time_ns() // 1_000_000) << 80 | random.getrandbits(80)
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return f"{prefix}_{''.join(reversed(chars))}"

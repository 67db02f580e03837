"""What every schema of the API shares."""

from __future__ import annotations

from msgspec import Struct

from tally.ledger.public import Timestamp

# What each pattern a request field is decoded with means, in words. A refusal
# quotes these (tally.api.field_errors), never the regular expression, and a test
# holds every pattern of every request schema to having its words here.
PATTERN_WORDS: dict[str, str] = {}


def pattern(regex: str, words: str) -> str:
    """Register ``words`` (a sentence starting "Must") for ``regex``; return it."""
    assert words.startswith("Must "), words
    PATTERN_WORDS[regex] = words
    return regex


# No NUL anywhere a client's text is stored or compared: PostgreSQL's text and
# jsonb cannot hold it.
NO_NUL = pattern("^[^\u0000]*$", "Must not contain a NUL character (U+0000).")


class RequestBody(Struct, forbid_unknown_fields=True, kw_only=True, gc=False):
    """Base of request bodies: an unknown field is an error, never silently dropped.
    Decoded JSON holds no reference cycle, so a body is not tracked by the cycle
    collector (``gc=False``, inherited; ``tally.core.model`` says why it matters)."""


__all__ = ["NO_NUL", "PATTERN_WORDS", "RequestBody", "Timestamp", "pattern"]

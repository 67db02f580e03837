"""What every schema of the API shares."""

from __future__ import annotations

from msgspec import Struct

from tally.ledger.public import Timestamp

# No NUL anywhere a client's text is stored or compared: PostgreSQL's text and
# jsonb cannot hold it.
NO_NUL = "^[^\u0000]*$"


class RequestBody(Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of request bodies: an unknown field is an error, never silently dropped."""


__all__ = ["NO_NUL", "RequestBody", "Timestamp"]

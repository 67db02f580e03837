"""Parameters and error lists the ledger's routes share, as the OpenAPI document
publishes them (each says what ``tally.api.parsing`` accepts)."""

from __future__ import annotations

from typing import Any

from tally.api.endpoint import Param
from tally.api.schemas.common import NO_NUL

WRITE_ERRORS = (400, 401, 403, 413, 415, 422, 503)
READ_ERRORS = (401, 403, 422, 503)
TIME = {"type": "string", "format": "date-time"}

ID = Param("id", "path", {"type": "string", "maxLength": 64}, required=True)
LIMIT = Param(
    "limit",
    "query",
    {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
    "Page size.",
)


def query_text(chars_max: int) -> dict[str, Any]:
    """What ``parsing.query_text`` accepts: 1 to ``chars_max`` characters, no NUL."""
    return {"type": "string", "minLength": 1, "maxLength": chars_max, "pattern": NO_NUL}


CURSOR = Param(
    "cursor",
    "query",
    query_text(128),
    "Opaque: the next_cursor of the previous page. Any other value is a 422 naming cursor.",
)

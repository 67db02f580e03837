"""RFC 9457 problem details, the body of every error response."""

from __future__ import annotations

from msgspec import Struct

from tally.api.schemas.ledger import BatchResultOut


class FieldErrorOut(Struct):
    field: str
    code: str
    message: str


class Problem(Struct, omit_defaults=True):
    """RFC 9457 problem details, with the contract's stable ``code``."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    request_id: str | None = None
    errors: list[FieldErrorOut] | None = None
    fields: list[str] | None = None
    results: list[BatchResultOut] | None = None

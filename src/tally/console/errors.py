"""The console's one table from the error tree to its protocol: an HTML page's
status and the heading a person reads (docs/architecture.md: each entry point
maps the one error tree to its protocol in one table; REST's is
``api/problems.py``). The detail under the heading is the error's own words."""

from __future__ import annotations

_NOT_FOUND = {"not_found", "pending_transfer_not_found"}
_CONFLICT = {
    "conflict",
    "exists_with_different_fields",
    "idempotency_key_in_use",
    "pending_transfer_not_pending",
    "pending_transfer_already_posted",
    "pending_transfer_already_voided",
    "pending_transfer_expired",
}
_STATUS = {
    "malformed_request": 400,
    "idempotency_key_invalid": 400,
    "unauthenticated": 401,
    "forbidden": 403,
    "payload_too_large": 413,
    "unsupported_media_type": 415,
    "rate_limited": 429,
    "client_closed_request": 400,
    "unavailable": 503,
    "internal_error": 500,
}
_HEADINGS = {
    "unauthenticated": "Please log in",
    "forbidden": "Not allowed",
    "rate_limited": "Too many attempts: wait a moment, then try again",
    "unavailable": "The ledger is busy or unreachable: try again in a moment",
    "validation_error": "Some fields need another look",
    "internal_error": "Something went wrong on our side",
}


def status_of(code: str) -> int:
    if code in _NOT_FOUND:
        return 404
    if code in _CONFLICT:
        return 409
    # Every other code is a refusal of what was asked: the ledger's own (422) or
    # the request's shape.
    return _STATUS.get(code, 422)


def message_of(code: str) -> str:
    """The page's heading: the code in words."""
    if code in _HEADINGS:
        return _HEADINGS[code]
    if code in _NOT_FOUND:
        return "Not found"
    return code.replace("_", " ").capitalize()

"""RFC 9457 problem details: the one place that turns errors into HTTP.

``STATUS`` maps every code of the error tree (``tally.errors``) and of the core
(``tally.core.Code``) to its HTTP status and title (api.md §5); a test holds it
to both. Every error response of the API is rendered here, from a
``TallyError``. Nothing else (no stack trace, no SQL, no exception text from a
library) reaches a client.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from tally.api.responses import encode, to_response
from tally.api.schemas.ledger import BatchResultOut
from tally.api.schemas.problem import FieldErrorOut, Problem
from tally.errors import TallyError, ValidationFailed
from tally.storage.records import StoredResponse

# A URN names the problem type without pretending to be a page we host;
# docs/errors.md describes each code.
PROBLEM_TYPE_BASE = "urn:tally:problem:"
PROBLEM_MEDIA_TYPE = "application/problem+json"

STATUS: dict[str, tuple[int, str]] = {
    "malformed_request": (400, "Malformed request"),
    "idempotency_key_invalid": (400, "Idempotency key invalid"),
    "idempotency_key_required": (400, "Idempotency key required"),
    "unauthenticated": (401, "Unauthenticated"),
    "forbidden": (403, "Forbidden"),
    "not_found": (404, "Not found"),
    "pending_transfer_not_found": (404, "Pending transfer not found"),
    "method_not_allowed": (405, "Method not allowed"),
    "conflict": (409, "Conflict"),
    "exists_with_different_fields": (409, "Exists with different fields"),
    "idempotency_key_in_use": (409, "Idempotency key in use"),
    "pending_transfer_not_pending": (409, "Transfer is not pending"),
    "pending_transfer_already_posted": (409, "Pending transfer already posted"),
    "pending_transfer_already_voided": (409, "Pending transfer already voided"),
    "pending_transfer_expired": (409, "Pending transfer expired"),
    "precondition_failed": (412, "Precondition failed"),
    "payload_too_large": (413, "Payload too large"),
    "unsupported_media_type": (415, "Unsupported media type"),
    "validation_error": (422, "Validation error"),
    "idempotency_key_reused": (422, "Idempotency key reused"),
    "url_not_allowed": (422, "URL not allowed"),
    "accounts_must_be_different": (422, "Accounts must be different"),
    "debit_account_not_found": (422, "Debit account not found"),
    "credit_account_not_found": (422, "Credit account not found"),
    "accounts_must_have_the_same_currency": (422, "Accounts must have the same currency"),
    "currency_mismatch": (422, "Currency mismatch"),
    "debit_account_closed": (422, "Debit account closed"),
    "credit_account_closed": (422, "Credit account closed"),
    "exceeds_credits": (422, "Exceeds credits"),
    "exceeds_debits": (422, "Exceeds debits"),
    "overflows_debits": (422, "Overflows debits"),
    "overflows_credits": (422, "Overflows credits"),
    "exceeds_pending_transfer_amount": (422, "Exceeds pending transfer amount"),
    "timeout_requires_pending": (422, "Timeout requires pending"),
    "flags_are_mutually_exclusive": (422, "Flags are mutually exclusive"),
    "batch_failed": (422, "Batch failed"),
    "linked_event_failed": (422, "Linked event failed"),
    "too_early": (425, "Too early"),
    "rate_limited": (429, "Too many requests"),
    # nginx's status for a client that hung up mid-request, kept so that logs,
    # metrics and the audit log tell it apart from a refusal.
    "client_closed_request": (499, "Client closed request"),
    "internal_error": (500, "Internal error"),
    "unavailable": (503, "Service unavailable"),
}


def status_of(error: TallyError) -> int:
    return STATUS[error.code][0]


def request_id_of(request: Request) -> str | None:
    return request.scope.get("state", {}).get("request_id")  # type: ignore[no-any-return]


def problem(
    error: TallyError, request_id: str | None, results: list[BatchResultOut] | None = None
) -> StoredResponse:
    status, title = STATUS[error.code]
    body = Problem(
        type=PROBLEM_TYPE_BASE + error.code,
        title=title,
        status=status,
        detail=error.detail or title,
        code=error.code,
        request_id=request_id,
        errors=(
            [FieldErrorOut(e.field, e.code, e.message) for e in error.errors]
            if isinstance(error, ValidationFailed)
            else None
        ),
        fields=list(error.fields) if error.fields else None,
        results=results,
    )
    headers = [("content-type", PROBLEM_MEDIA_TYPE), *error.metadata.items()]
    if error.retry_after_seconds is not None:
        headers.append(("Retry-After", str(error.retry_after_seconds)))
    if status == 401:
        headers.append(("WWW-Authenticate", 'Bearer realm="tally"'))
    return StoredResponse(status, encode(body), tuple(headers))


def problem_response(error: TallyError, request: Request) -> Response:
    return to_response(problem(error, request_id_of(request)))

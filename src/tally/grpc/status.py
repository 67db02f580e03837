"""The one place that turns errors into gRPC statuses (api.md §5 in gRPC's words).

``STATUS`` maps every code of the error tree (``tally.errors.CODES``) to a gRPC
status code; a test holds it to the tree, as ``api.problems.STATUS`` is held for
HTTP. A refusal carries, in ``grpc-status-details-bin`` (a ``google.rpc.Status``,
read with grpcio-status), a ``google.rpc.ErrorInfo`` whose ``reason`` is the
contract's code (domain ``tally``, metadata ``request_id`` and, for a conflict,
``fields``), a ``google.rpc.RetryInfo`` when a retry may succeed (429, 503, a key
in use), and a ``google.rpc.BadRequest`` naming each field of a validation_error.
The code is also sent as the trailing metadata ``tally-code``, for clients that do
not decode details (grpcurl shows both).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from tally.errors import FieldError, TallyError, ValidationFailed

DOMAIN = "tally"
C = grpc.StatusCode

STATUS: dict[str, grpc.StatusCode] = {
    "malformed_request": C.INVALID_ARGUMENT,
    "idempotency_key_invalid": C.INVALID_ARGUMENT,
    "idempotency_key_required": C.INVALID_ARGUMENT,
    "unauthenticated": C.UNAUTHENTICATED,
    "forbidden": C.PERMISSION_DENIED,
    "not_found": C.NOT_FOUND,
    "pending_transfer_not_found": C.NOT_FOUND,
    "method_not_allowed": C.UNIMPLEMENTED,
    # The object exists: the caller asked to create what is there with other fields.
    "conflict": C.ALREADY_EXISTS,
    "exists_with_different_fields": C.ALREADY_EXISTS,
    # Another call with this key is running: retry (RetryInfo says when).
    "idempotency_key_in_use": C.ABORTED,
    # The pending transfer is not in the state a post or void needs.
    "pending_transfer_not_pending": C.FAILED_PRECONDITION,
    "pending_transfer_already_posted": C.FAILED_PRECONDITION,
    "pending_transfer_already_voided": C.FAILED_PRECONDITION,
    "pending_transfer_expired": C.FAILED_PRECONDITION,
    "precondition_failed": C.FAILED_PRECONDITION,
    "payload_too_large": C.RESOURCE_EXHAUSTED,
    "unsupported_media_type": C.INVALID_ARGUMENT,
    # Wrong whatever the ledger holds: the request itself.
    "validation_error": C.INVALID_ARGUMENT,
    "idempotency_key_reused": C.INVALID_ARGUMENT,
    "url_not_allowed": C.INVALID_ARGUMENT,
    "accounts_must_be_different": C.INVALID_ARGUMENT,
    "timeout_requires_pending": C.INVALID_ARGUMENT,
    "flags_are_mutually_exclusive": C.INVALID_ARGUMENT,
    # Refused because of what the ledger holds (the accounts, their totals, the
    # pending transfer): the same request may pass once that changes.
    "debit_account_not_found": C.FAILED_PRECONDITION,
    "credit_account_not_found": C.FAILED_PRECONDITION,
    "accounts_must_have_the_same_currency": C.FAILED_PRECONDITION,
    "currency_mismatch": C.FAILED_PRECONDITION,
    "debit_account_closed": C.FAILED_PRECONDITION,
    "credit_account_closed": C.FAILED_PRECONDITION,
    "exceeds_credits": C.FAILED_PRECONDITION,
    "exceeds_debits": C.FAILED_PRECONDITION,
    "overflows_debits": C.FAILED_PRECONDITION,
    "overflows_credits": C.FAILED_PRECONDITION,
    "exceeds_pending_transfer_amount": C.FAILED_PRECONDITION,
    "batch_failed": C.FAILED_PRECONDITION,
    "linked_event_failed": C.FAILED_PRECONDITION,
    "rate_limited": C.RESOURCE_EXHAUSTED,
    "client_closed_request": C.CANCELLED,
    "internal_error": C.INTERNAL,
    "unavailable": C.UNAVAILABLE,
    # HTTP/3 0-RTT early data (425): gRPC never sees early data, but the table
    # covers every code of the tree; "send it again" is UNAVAILABLE's meaning.
    "too_early": C.UNAVAILABLE,
    # gRPC's alone: an event stream whose client fell behind (grpc.events).
    "stream_overflow": C.RESOURCE_EXHAUSTED,
}


@dataclass(frozen=True, slots=True)
class Refusal:
    """What a refused call tells its client: from a ``TallyError`` raised now, or
    from a problem stored with an idempotency key (``answers``)."""

    code: str
    detail: str
    errors: list[FieldError] = field(default_factory=list)
    fields: tuple[str, ...] = ()
    retry_after_seconds: int | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, error: TallyError) -> Refusal:
        return cls(
            error.code,
            error.detail or error.code,
            error.errors if isinstance(error, ValidationFailed) else [],
            error.fields,
            error.retry_after_seconds,
            error.metadata,
        )


def _packed(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def grpc_status(refusal: Refusal, request_id: str | None) -> grpc.Status:
    """The status, its details and its trailing metadata."""
    info = error_details_pb2.ErrorInfo(reason=refusal.code, domain=DOMAIN)
    if request_id is not None:
        info.metadata["request_id"] = request_id
    if refusal.fields:
        info.metadata["fields"] = ",".join(refusal.fields)
    details = [_packed(info)]
    if refusal.retry_after_seconds is not None:
        delay = duration_pb2.Duration(seconds=refusal.retry_after_seconds)
        details.append(_packed(error_details_pb2.RetryInfo(retry_delay=delay)))
    if refusal.errors:
        violations = [
            error_details_pb2.BadRequest.FieldViolation(
                field=e.field, description=e.message, reason=e.code
            )
            for e in refusal.errors
        ]
        details.append(_packed(error_details_pb2.BadRequest(field_violations=violations)))
    code = STATUS[refusal.code]
    status = status_pb2.Status(code=code.value[0], message=refusal.detail, details=details)
    converted = rpc_status.to_status(status)
    extra = [("tally-code", refusal.code)]
    # HTTP's header names (RateLimit-Remaining) are not valid metadata keys as they
    # are: gRPC takes lower case only.
    extra += [(k.lower(), v) for k, v in refusal.metadata.items()]
    if refusal.retry_after_seconds is not None:
        extra.append(("retry-after", str(refusal.retry_after_seconds)))
    return _Status(converted.code, converted.details, (*converted.trailing_metadata, *extra))


@dataclass(frozen=True, slots=True)
class _Status(grpc.Status):  # type: ignore[misc]
    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]

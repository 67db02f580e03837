"""Result codes the ledger core decides, with their place in the HTTP contract.

The strings are the stable ``code`` values of api.md §5; the statuses are there so
that exactly one table maps a decision to HTTP, and the core itself stays free of
any web notion beyond this mapping.
"""

from __future__ import annotations

from enum import StrEnum


class Code(StrEnum):
    NOT_FOUND = "not_found"
    PRECONDITION_FAILED = "precondition_failed"
    VALIDATION_ERROR = "validation_error"
    EXISTS_WITH_DIFFERENT_FIELDS = "exists_with_different_fields"
    PENDING_TRANSFER_NOT_FOUND = "pending_transfer_not_found"
    PENDING_TRANSFER_NOT_PENDING = "pending_transfer_not_pending"
    PENDING_TRANSFER_ALREADY_POSTED = "pending_transfer_already_posted"
    PENDING_TRANSFER_ALREADY_VOIDED = "pending_transfer_already_voided"
    PENDING_TRANSFER_EXPIRED = "pending_transfer_expired"
    ACCOUNTS_MUST_BE_DIFFERENT = "accounts_must_be_different"
    DEBIT_ACCOUNT_NOT_FOUND = "debit_account_not_found"
    CREDIT_ACCOUNT_NOT_FOUND = "credit_account_not_found"
    ACCOUNTS_MUST_HAVE_THE_SAME_CURRENCY = "accounts_must_have_the_same_currency"
    CURRENCY_MISMATCH = "currency_mismatch"
    DEBIT_ACCOUNT_CLOSED = "debit_account_closed"
    CREDIT_ACCOUNT_CLOSED = "credit_account_closed"
    EXCEEDS_CREDITS = "exceeds_credits"
    EXCEEDS_DEBITS = "exceeds_debits"
    OVERFLOWS_DEBITS = "overflows_debits"
    OVERFLOWS_CREDITS = "overflows_credits"
    EXCEEDS_PENDING_TRANSFER_AMOUNT = "exceeds_pending_transfer_amount"
    TIMEOUT_REQUIRES_PENDING = "timeout_requires_pending"
    FLAGS_ARE_MUTUALLY_EXCLUSIVE = "flags_are_mutually_exclusive"
    BATCH_FAILED = "batch_failed"
    LINKED_EVENT_FAILED = "linked_event_failed"


HTTP_STATUS: dict[Code, int] = {
    Code.NOT_FOUND: 404,
    Code.PENDING_TRANSFER_NOT_FOUND: 404,
    Code.EXISTS_WITH_DIFFERENT_FIELDS: 409,
    Code.PENDING_TRANSFER_NOT_PENDING: 409,
    Code.PENDING_TRANSFER_ALREADY_POSTED: 409,
    Code.PENDING_TRANSFER_ALREADY_VOIDED: 409,
    Code.PENDING_TRANSFER_EXPIRED: 409,
    Code.PRECONDITION_FAILED: 412,
}
"""Every code not listed here is a 422: a well-formed request the ledger refuses."""


def http_status(code: Code) -> int:
    return HTTP_STATUS.get(code, 422)


TITLES: dict[Code, str] = {
    Code.NOT_FOUND: "Not found",
    Code.PRECONDITION_FAILED: "Precondition failed",
    Code.VALIDATION_ERROR: "Validation error",
    Code.EXISTS_WITH_DIFFERENT_FIELDS: "Exists with different fields",
    Code.PENDING_TRANSFER_NOT_FOUND: "Pending transfer not found",
    Code.PENDING_TRANSFER_NOT_PENDING: "Transfer is not pending",
    Code.PENDING_TRANSFER_ALREADY_POSTED: "Pending transfer already posted",
    Code.PENDING_TRANSFER_ALREADY_VOIDED: "Pending transfer already voided",
    Code.PENDING_TRANSFER_EXPIRED: "Pending transfer expired",
    Code.ACCOUNTS_MUST_BE_DIFFERENT: "Accounts must be different",
    Code.DEBIT_ACCOUNT_NOT_FOUND: "Debit account not found",
    Code.CREDIT_ACCOUNT_NOT_FOUND: "Credit account not found",
    Code.ACCOUNTS_MUST_HAVE_THE_SAME_CURRENCY: "Accounts must have the same currency",
    Code.CURRENCY_MISMATCH: "Currency mismatch",
    Code.DEBIT_ACCOUNT_CLOSED: "Debit account closed",
    Code.CREDIT_ACCOUNT_CLOSED: "Credit account closed",
    Code.EXCEEDS_CREDITS: "Exceeds credits",
    Code.EXCEEDS_DEBITS: "Exceeds debits",
    Code.OVERFLOWS_DEBITS: "Overflows debits",
    Code.OVERFLOWS_CREDITS: "Overflows credits",
    Code.EXCEEDS_PENDING_TRANSFER_AMOUNT: "Exceeds pending transfer amount",
    Code.TIMEOUT_REQUIRES_PENDING: "Timeout requires pending",
    Code.FLAGS_ARE_MUTUALLY_EXCLUSIVE: "Flags are mutually exclusive",
    Code.BATCH_FAILED: "Batch failed",
    Code.LINKED_EVENT_FAILED: "Linked event failed",
}

"""Result codes: the stable strings of api.md §5, which the core decides."""

from __future__ import annotations

import re

import pytest

from tally.core import Code

# api.md §5, for the codes the core decides (tests/unit/api/test_problems.py holds
# their HTTP statuses).
HTTP_STATUS_BY_CODE = {
    "not_found": 404,
    "pending_transfer_not_found": 404,
    "exists_with_different_fields": 409,
    "pending_transfer_not_pending": 409,
    "pending_transfer_already_posted": 409,
    "pending_transfer_already_voided": 409,
    "pending_transfer_expired": 409,
    "precondition_failed": 412,
    "validation_error": 422,
    "accounts_must_be_different": 422,
    "debit_account_not_found": 422,
    "credit_account_not_found": 422,
    "accounts_must_have_the_same_currency": 422,
    "currency_mismatch": 422,
    "debit_account_closed": 422,
    "credit_account_closed": 422,
    "exceeds_credits": 422,
    "exceeds_debits": 422,
    "overflows_debits": 422,
    "overflows_credits": 422,
    "exceeds_pending_transfer_amount": 422,
    "timeout_requires_pending": 422,
    "flags_are_mutually_exclusive": 422,
    "batch_failed": 422,
    "linked_event_failed": 422,
}


def test_the_core_has_exactly_the_codes_of_the_contract() -> None:
    assert {code.value for code in Code} == set(HTTP_STATUS_BY_CODE)


@pytest.mark.parametrize("code", list(Code))
def test_each_code_is_snake_case(code: Code) -> None:
    assert re.fullmatch(r"[a-z]+(_[a-z]+)*", code.value)

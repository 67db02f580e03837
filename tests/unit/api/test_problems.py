"""The one table from error codes to HTTP: every code of the error tree and of the
core has its status (api.md §5) and a title, and a problem carries what the
contract says it carries."""

from __future__ import annotations

import json

import pytest

from tally.api.problems import STATUS, problem
from tally.core import Code
from tally.errors import (
    CODES,
    FieldError,
    IdempotencyKeyInUse,
    LedgerRefused,
    RateLimited,
    TallyError,
    Unauthenticated,
    Unavailable,
    ValidationFailed,
)
from tests.unit.core.test_codes import HTTP_STATUS_BY_CODE

# api.md §5 and docs/errors.md, for the codes outside the core.
CONTRACT = {
    **HTTP_STATUS_BY_CODE,
    "malformed_request": 400,
    "idempotency_key_invalid": 400,
    "idempotency_key_required": 400,
    "unauthenticated": 401,
    "forbidden": 403,
    "method_not_allowed": 405,
    "conflict": 409,
    "idempotency_key_in_use": 409,
    "payload_too_large": 413,
    "unsupported_media_type": 415,
    "too_early": 425,
    "idempotency_key_reused": 422,
    "url_not_allowed": 422,
    "rate_limited": 429,
    "client_closed_request": 499,
    "internal_error": 500,
    "unavailable": 503,
}


def test_the_table_has_exactly_the_codes_of_the_error_tree_and_the_core() -> None:
    assert set(STATUS) == CODES
    assert {c.value for c in Code} <= CODES


@pytest.mark.parametrize("code", sorted(CODES))
def test_each_code_has_the_status_of_the_contract_and_a_title(code: str) -> None:
    status, title = STATUS[code]
    assert status == CONTRACT[code]
    assert title and title[0].isupper()


def _body(error: TallyError) -> dict[str, object]:
    return json.loads(problem(error, "req_1").body)  # type: ignore[no-any-return]


def test_a_ledger_refusal_names_its_code_status_and_fields() -> None:
    body = _body(LedgerRefused(Code.EXISTS_WITH_DIFFERENT_FIELDS, "differs", ("amount",)))
    assert body == {
        "type": "urn:tally:problem:exists_with_different_fields",
        "title": "Exists with different fields",
        "status": 409,
        "detail": "differs",
        "code": "exists_with_different_fields",
        "request_id": "req_1",
        "fields": ["amount"],
    }


def test_a_validation_error_lists_its_fields() -> None:
    body = _body(ValidationFailed([FieldError("amount", "out_of_range", "too big")]))
    assert body["errors"] == [{"field": "amount", "code": "out_of_range", "message": "too big"}]


def test_an_error_without_detail_shows_its_title() -> None:
    assert _body(TallyError())["detail"] == "Internal error"


@pytest.mark.parametrize(
    ("error", "header", "value"),
    [
        (Unavailable("away", retry_after_seconds=2), "Retry-After", "2"),
        (IdempotencyKeyInUse(1), "Retry-After", "1"),
        (Unauthenticated("who?"), "WWW-Authenticate", 'Bearer realm="tally"'),
        (
            RateLimited("slow down", retry_after_seconds=3, metadata={"RateLimit": "x"}),
            "RateLimit",
            "x",
        ),
    ],
)
def test_what_a_protocol_sends_beside_an_error_becomes_a_header(
    error: TallyError, header: str, value: str
) -> None:
    assert dict(problem(error, None).headers)[header] == value

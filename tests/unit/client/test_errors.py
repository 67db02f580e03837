"""Refusals become exceptions typed by the contract's code (tally.client.errors)."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest

from tally.client import errors
from tally.client.errors import BY_CODE, ApiError, error_for

API_MD = Path(__file__).resolve().parents[3] / "docs" / "api.md"


def contract_codes() -> set[str]:
    """Every code in docs/api.md §5's table."""
    table = API_MD.read_text().split("## 5. Error codes", 1)[1].split("\n## ", 1)[0]
    return {
        c
        for row in table.splitlines()
        if row.startswith("| 4")
        for c in re.findall(r"`([a-z_]+)`", row.split("|")[2])
    }


def problem(status: int, code: str, **extra: object) -> bytes:
    return msgspec.json.encode(
        {
            "type": f"urn:tally:problem:{code}",
            "title": "t",
            "status": status,
            "detail": "why",
            "code": code,
            **extra,
        }
    )


def test_every_contract_code_with_a_class_of_its_own_is_named_after_it() -> None:
    # The codes that only have their status's class are the generic ones.
    generic = {"malformed_request", "unauthenticated", "forbidden", "not_found", "conflict",
               "precondition_failed", "payload_too_large", "unsupported_media_type",
               "method_not_allowed", "rate_limited", "idempotency_key_required",
               "idempotency_key_invalid", "too_early",
               "linked_event_failed"}  # a batch item's code, never a whole answer's  # fmt: skip
    missing = contract_codes() - set(BY_CODE) - generic
    assert not missing, f"codes without a class: {sorted(missing)}"
    assert set(BY_CODE) <= contract_codes() | {"unavailable"}


def test_a_refusal_raises_the_class_of_its_code_with_the_request_id() -> None:
    body = problem(422, "exceeds_credits", request_id="req_1")
    error = error_for(422, body, {"request-id": "req_1"})
    assert type(error) is errors.ExceedsCredits
    assert isinstance(error, errors.LedgerRefused)
    assert (error.status, error.code, error.detail, error.request_id) == (
        422, "exceeds_credits", "why", "req_1",
    )  # fmt: skip
    assert "req_1" in str(error)


def test_the_request_id_header_stands_in_when_the_body_has_none() -> None:
    error = error_for(503, b"", {"request-id": "req_h", "retry-after": "2"})
    assert type(error) is errors.Unavailable
    assert (error.request_id, error.retry_after, error.code) == ("req_h", "2", "http_503")


@pytest.mark.parametrize(
    ("status", "cls"),
    [(400, errors.InvalidRequest), (401, errors.AuthenticationFailed),
     (403, errors.PermissionDenied), (404, errors.NotFound), (409, errors.Conflict),
     (412, errors.PreconditionFailed), (422, errors.Unprocessable), (429, errors.RateLimited),
     (500, errors.ServerError), (502, errors.ServerError), (418, ApiError)],
)  # fmt: skip
def test_a_code_the_client_does_not_know_falls_back_to_its_status(
    status: int, cls: type[ApiError]
) -> None:
    assert type(error_for(status, problem(status, "from_a_newer_server"), {})) is cls


@pytest.mark.parametrize("body", [b"<html>bad gateway</html>", b"[1, 2]", b"\xff\xfe"])
def test_an_answer_that_is_not_problem_details_still_raises_by_status(body: bytes) -> None:
    error = error_for(502, body, {})
    assert type(error) is errors.ServerError
    assert error.code == "http_502"


def test_validation_errors_and_batch_results_are_at_hand() -> None:
    invalid = error_for(
        422,
        problem(
            422, "validation_error", errors=[{"field": "amount", "code": "invalid", "message": "m"}]
        ),
        {},
    )
    assert type(invalid) is errors.ValidationError
    assert invalid.errors == [{"field": "amount", "code": "invalid", "message": "m"}]
    failed = error_for(422, problem(422, "batch_failed", results=[{"index": 0}]), {})
    assert type(failed) is errors.BatchFailed and failed.results == [{"index": 0}]
    exists = error_for(409, problem(409, "exists_with_different_fields", fields=["amount"]), {})
    assert type(exists) is errors.ExistsWithDifferentFields and exists.fields == ["amount"]

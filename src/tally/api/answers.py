"""The REST answers to the ledger's outcomes.

Each ``answer_*`` returns the ``Answer`` a write hands to the ledger (a pure
function of the outcomes): for a request with an Idempotency-Key the writer
calls it inside the database transaction, so that the stored response commits
with the effect, and for every audited write so that the audit row records the
status. Reads render with ``list_response`` and the Structs directly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.responses import Response

from tally.api.problems import problem
from tally.api.responses import json_response, stored_json, to_response
from tally.api.schemas.ledger import BatchOut, BatchResultOut, ErrorOut
from tally.core import Account, Code, Outcome, Status, Transfer
from tally.errors import FieldError, LedgerRefused, ValidationFailed
from tally.ledger import Written
from tally.ledger.public import account_out, transfer_out
from tally.ledger.transaction import Answer
from tally.storage.records import StoredResponse
from tally.support.cursors import Page


def account_etag(account: Account) -> str:
    return f'"{account.version}"'


def written_response(written: Written) -> Response:
    assert written.answer is not None, "REST writes are audited, so always answered"
    return to_response(written.answer, replayed=written.replayed)


def list_response(page: Page[Any], render: Callable[[Any], Any], list_type: type) -> Response:
    return json_response(
        list_type(
            data=[render(x) for x in page.items],
            has_more=page.has_more,
            next_cursor=page.next_cursor,
        )
    )


def _created_status(outcome: Outcome) -> int:
    return 201 if outcome.status is Status.CREATED else 200


def refused(outcome: Outcome, request_id: str | None) -> StoredResponse:
    assert outcome.code is not None
    if outcome.code is Code.VALIDATION_ERROR:
        # The core checks a limit that depends on stored data (metadata keys after a
        # merge); api.md §2 says a validation_error names its fields in ``errors``.
        errors = [FieldError(f, "invalid_length", outcome.detail) for f in outcome.fields]
        return problem(ValidationFailed(errors, outcome.detail), request_id)
    return problem(LedgerRefused(outcome.code, outcome.detail, outcome.fields), request_id)


def answer_account(request_id: str | None) -> Answer:
    def answer(outcomes: list[Outcome]) -> StoredResponse:
        (outcome,) = outcomes
        if not outcome.ok:
            return refused(outcome, request_id)
        account = outcome.object
        assert isinstance(account, Account)
        status = 200 if outcome.status is Status.UPDATED else _created_status(outcome)
        headers: tuple[tuple[str, str], ...] = (("etag", account_etag(account)),)
        if outcome.status is not Status.UPDATED:
            headers += (("location", f"/v1/accounts/{account.id}"),)
        return stored_json(account_out(account), status, headers)

    return answer


def answer_transfer(request_id: str | None) -> Answer:
    def answer(outcomes: list[Outcome]) -> StoredResponse:
        (outcome,) = outcomes
        if not outcome.ok:
            return refused(outcome, request_id)
        transfer = outcome.object
        assert isinstance(transfer, Transfer)
        return stored_json(
            transfer_out(transfer),
            _created_status(outcome),
            (("location", f"/v1/transfers/{transfer.id}"),),
        )

    return answer


def _batch_result(index: int, outcome: Outcome) -> BatchResultOut:
    if outcome.ok:
        assert isinstance(outcome.object, Transfer)
        return BatchResultOut(
            index=index,
            status="created" if outcome.status is Status.CREATED else "exists",
            transfer=transfer_out(outcome.object),
            error=None,
        )
    assert outcome.code is not None
    return BatchResultOut(
        index=index, status="failed", transfer=None, error=ErrorOut(outcome.code, outcome.detail)
    )


def answer_batch(request_id: str | None, atomic: bool) -> Answer:
    def answer(outcomes: list[Outcome]) -> StoredResponse:
        results = [_batch_result(i, o) for i, o in enumerate(outcomes)]
        if not atomic:
            return stored_json(BatchOut(results), 200)
        if all(o.ok for o in outcomes):
            return stored_json(BatchOut(results), 201)
        index, failed = next(
            (i, o) for i, o in enumerate(outcomes) if o.code not in (None, Code.LINKED_EVENT_FAILED)
        )
        assert failed.code is not None
        detail = (
            f"Item {index} failed ({failed.code.value}): {failed.detail} The batch is atomic, "
            f"so nothing was applied: fix or drop item {index}, then send the batch again."
        )
        return problem(LedgerRefused(Code.BATCH_FAILED, detail), request_id, results)

    return answer

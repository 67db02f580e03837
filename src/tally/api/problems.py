"""RFC 9457 problem details: the one place that turns errors into HTTP.

Every error response of the API is rendered here, from a ``TallyError``. Nothing
else (no stack trace, no SQL, no exception text from a library) reaches a client.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from tally.errors import TallyError, ValidationFailed
from tally.idempotency import StoredResponse
from tally.schemas import BatchResultOut, FieldErrorOut, Problem, encode

# A URN names the problem type without pretending to be a page we host;
# docs/errors.md describes each code.
PROBLEM_TYPE_BASE = "urn:tally:problem:"
PROBLEM_MEDIA_TYPE = "application/problem+json"


def request_id_of(request: Request) -> str | None:
    return request.scope.get("state", {}).get("request_id")  # type: ignore[no-any-return]


def problem(
    error: TallyError, request_id: str | None, results: list[BatchResultOut] | None = None
) -> StoredResponse:
    body = Problem(
        type=PROBLEM_TYPE_BASE + error.code,
        title=error.title,
        status=error.status,
        detail=error.detail,
        code=error.code,
        request_id=request_id,
        errors=(
            [FieldErrorOut(e.field, e.code, e.message) for e in error.errors]
            if isinstance(error, ValidationFailed)
            else None
        ),
        fields=error.extra.get("fields"),  # type: ignore[arg-type]
        results=results,
    )
    headers = (("content-type", PROBLEM_MEDIA_TYPE), *error.headers.items())
    return StoredResponse(error.status, encode(body), tuple(headers))


def to_response(stored: StoredResponse, *, replayed: bool = False) -> Response:
    headers = dict(stored.headers)
    if replayed:
        headers["idempotent-replayed"] = "true"
    return Response(stored.body, status_code=stored.status, headers=headers)


def problem_response(error: TallyError, request: Request) -> Response:
    return to_response(problem(error, request_id_of(request)))

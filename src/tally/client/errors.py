"""What a refused call raises: one exception class per contract code (api.md §5).

Every error the server answers is RFC 9457 problem details with a stable
``code``; the client raises the class registered for that code, so callers
write ``except ExceedsCredits`` rather than compare strings. A code this
version of the client does not know (a newer server) falls back to the class of
its HTTP status, and a status it does not know to ``ApiError``: nothing is
lost, ``code`` and ``problem`` always carry what the server said.

The tree, by what a caller does about it:

- ``ApiError``: the server answered with an error.
  - ``InvalidRequest`` (400, 413, 415): fix the request.
  - ``AuthenticationFailed`` (401), ``PermissionDenied`` (403).
  - ``NotFound`` (404), ``Conflict`` (409), ``PreconditionFailed`` (412).
  - ``Unprocessable`` (422): ``ValidationError`` (the schema), or
    ``LedgerRefused`` (a ledger rule: ``ExceedsCredits``, ``BatchFailed``, …).
  - ``RateLimited`` (429), ``ServerError`` (5xx), ``Unavailable`` (503).
- ``ConnectionFailed``: no answer at all (after the retries).
"""

from __future__ import annotations

from typing import Any

import msgspec


class TallyClientError(Exception):
    """Base of everything the client raises."""


class ConnectionFailed(TallyClientError):
    """No answer from the server: it could not be reached, or the connection
    broke (after every retry). With an idempotency key, calling again with the
    same key is safe: the server applies a write once."""


class ApiError(TallyClientError):
    """The server answered with an error (problem details)."""

    status: int
    code: str
    detail: str
    request_id: str | None
    problem: dict[str, Any]

    def __init__(self, status: int, problem: dict[str, Any], headers: dict[str, str]) -> None:
        self.status = status
        self.problem = problem
        self.headers = headers
        self.code = str(problem.get("code") or f"http_{status}")
        self.detail = str(problem.get("detail") or problem.get("title") or "")
        self.request_id = problem.get("request_id") or headers.get("request-id")
        super().__init__(f"{status} {self.code}: {self.detail} (request {self.request_id})")

    @property
    def errors(self) -> list[dict[str, str]]:
        """For ``validation_error``: each field refused, with its code and message."""
        return list(self.problem.get("errors") or [])

    @property
    def fields(self) -> list[str]:
        """For ``exists_with_different_fields``: the fields that differ."""
        return list(self.problem.get("fields") or [])

    @property
    def results(self) -> list[dict[str, Any]]:
        """For ``batch_failed``: every item's result, the failing one with its code."""
        return list(self.problem.get("results") or [])

    @property
    def retry_after(self) -> str | None:
        return self.headers.get("retry-after")


class InvalidRequest(ApiError):
    """400, 413, 415: the request itself is malformed; fix it before retrying."""


class AuthenticationFailed(ApiError):
    """401: no credential, or a wrong, expired or revoked one."""


class PermissionDenied(ApiError):
    """403: the credential lacks the scope or role."""


class NotFound(ApiError):
    """404."""


class Conflict(ApiError):
    """409."""


class PreconditionFailed(ApiError):
    """412: ``If-Match`` did not match; read the object again."""


class Unprocessable(ApiError):
    """422."""


class ValidationError(Unprocessable):
    """422 ``validation_error``: see ``errors`` for each field."""


class LedgerRefused(Unprocessable):
    """422 for a ledger rule: the request was well formed, and the ledger said no."""


class RateLimited(ApiError):
    """429: retried by the client until its attempts run out."""


class ServerError(ApiError):
    """5xx."""


class Unavailable(ServerError):
    """503: nothing was changed; retried by the client."""


# One class per contract code, named after it.
class IdempotencyKeyRequired(InvalidRequest): ...


class IdempotencyKeyInvalid(InvalidRequest): ...


class PendingTransferNotFound(NotFound): ...


class ExistsWithDifferentFields(Conflict): ...


class IdempotencyKeyInUse(Conflict): ...


class PendingTransferNotPending(Conflict): ...


class PendingTransferAlreadyPosted(Conflict): ...


class PendingTransferAlreadyVoided(Conflict): ...


class PendingTransferExpired(Conflict): ...


class IdempotencyKeyReused(Unprocessable): ...


class AccountsMustBeDifferent(LedgerRefused): ...


class DebitAccountNotFound(LedgerRefused): ...


class CreditAccountNotFound(LedgerRefused): ...


class AccountsMustHaveTheSameCurrency(LedgerRefused): ...


class CurrencyMismatch(LedgerRefused): ...


class DebitAccountClosed(LedgerRefused): ...


class CreditAccountClosed(LedgerRefused): ...


class ExceedsCredits(LedgerRefused): ...


class ExceedsDebits(LedgerRefused): ...


class OverflowsDebits(LedgerRefused): ...


class OverflowsCredits(LedgerRefused): ...


class ExceedsPendingTransferAmount(LedgerRefused): ...


class TimeoutRequiresPending(LedgerRefused): ...


class FlagsAreMutuallyExclusive(LedgerRefused): ...


class BatchFailed(LedgerRefused): ...


_BY_STATUS: dict[int, type[ApiError]] = {
    400: InvalidRequest,
    401: AuthenticationFailed,
    403: PermissionDenied,
    404: NotFound,
    409: Conflict,
    412: PreconditionFailed,
    413: InvalidRequest,
    415: InvalidRequest,
    422: Unprocessable,
    429: RateLimited,
    503: Unavailable,
}


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


_CODED: tuple[type[ApiError], ...] = (
    ValidationError, IdempotencyKeyRequired, IdempotencyKeyInvalid, PendingTransferNotFound,
    ExistsWithDifferentFields, IdempotencyKeyInUse, PendingTransferNotPending,
    PendingTransferAlreadyPosted, PendingTransferAlreadyVoided, PendingTransferExpired,
    IdempotencyKeyReused, AccountsMustBeDifferent, DebitAccountNotFound, CreditAccountNotFound,
    AccountsMustHaveTheSameCurrency, CurrencyMismatch, DebitAccountClosed, CreditAccountClosed,
    ExceedsCredits, ExceedsDebits, OverflowsDebits, OverflowsCredits,
    ExceedsPendingTransferAmount, TimeoutRequiresPending, FlagsAreMutuallyExclusive, BatchFailed,
)  # fmt: skip
# "exceeds_credits" -> ExceedsCredits, and so on: the class name is the code.
BY_CODE: dict[str, type[ApiError]] = {_snake(c.__name__): c for c in _CODED}


def error_for(status: int, body: bytes, headers: dict[str, str]) -> ApiError:
    """The exception for an error answer: by its code, else its status."""
    try:
        problem = msgspec.json.decode(body) if body else {}
    except msgspec.DecodeError:
        problem = {}
    if not isinstance(problem, dict):
        problem = {}
    cls = BY_CODE.get(str(problem.get("code")))
    if cls is None:
        cls = _BY_STATUS.get(status, ServerError if status >= 500 else ApiError)
    return cls(status, problem, headers)

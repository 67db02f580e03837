"""The one exception tree of Tally.

Every error a caller can cause carries the stable ``code`` of the API contract
(api.md §5). Library errors are translated where they enter (storage adapters,
request parsing); exactly one place, ``tally.api.problems``, renders these as
HTTP problem details.
"""

from __future__ import annotations

from dataclasses import dataclass

from tally.core.codes import TITLES, Code, http_status


@dataclass(frozen=True, slots=True)
class FieldError:
    field: str
    code: str
    message: str


class TallyError(Exception):
    """Base of every error a client can be shown."""

    status: int = 500
    code: str = "internal_error"
    title: str = "Internal error"

    def __init__(self, detail: str = "", *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.headers = headers or {}
        self.extra: dict[str, object] = {}


class MalformedRequest(TallyError):
    status, code, title = 400, "malformed_request", "Malformed request"


class IdempotencyKeyInvalid(TallyError):
    status, code, title = 400, "idempotency_key_invalid", "Idempotency key invalid"


class IdempotencyKeyRequired(TallyError):
    status, code, title = 400, "idempotency_key_required", "Idempotency key required"


class IdempotencyKeyInUse(TallyError):
    status, code, title = 409, "idempotency_key_in_use", "Idempotency key in use"

    def __init__(self, retry_after_seconds: int) -> None:
        super().__init__(
            "A request with this Idempotency-Key is still being executed; retry shortly.",
            headers={"Retry-After": str(retry_after_seconds)},
        )


class IdempotencyKeyReused(TallyError):
    status, code, title = 422, "idempotency_key_reused", "Idempotency key reused"

    def __init__(self) -> None:
        super().__init__(
            "This Idempotency-Key was used for a different request (another method, path "
            "or body). Use a new key for a new request."
        )


class Unauthenticated(TallyError):
    status, code, title = 401, "unauthenticated", "Unauthenticated"

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="tally"'})


class Forbidden(TallyError):
    status, code, title = 403, "forbidden", "Forbidden"


class NotFound(TallyError):
    status, code, title = 404, "not_found", "Not found"


class Conflict(TallyError):
    """The object exists already (an email taken, a member invited twice)."""

    status, code, title = 409, "conflict", "Conflict"


class RateLimited(TallyError):
    status, code, title = 429, "rate_limited", "Too many requests"

    def __init__(self, detail: str, *, retry_after_seconds: int, headers: dict[str, str]) -> None:
        super().__init__(detail, headers={**headers, "Retry-After": str(retry_after_seconds)})


class ClientClosedRequest(TallyError):
    """The client went away before sending its whole request. Nothing was done; the
    answer reaches nobody. 499 is nginx's status for it, kept so that logs, metrics
    and the audit log tell it apart from a refusal."""

    status, code, title = 499, "client_closed_request", "Client closed request"


class MethodNotAllowed(TallyError):
    status, code, title = 405, "method_not_allowed", "Method not allowed"


class PreconditionFailed(TallyError):
    status, code, title = 412, "precondition_failed", "Precondition failed"


class PayloadTooLarge(TallyError):
    status, code, title = 413, "payload_too_large", "Payload too large"


class UnsupportedMediaType(TallyError):
    status, code, title = 415, "unsupported_media_type", "Unsupported media type"


class ValidationFailed(TallyError):
    status, code, title = 422, "validation_error", "Validation error"

    def __init__(self, errors: list[FieldError], detail: str = "") -> None:
        super().__init__(detail or "; ".join(f"{e.field}: {e.message}" for e in errors))
        self.errors = errors


class Unavailable(TallyError):
    """Nothing was committed; the client may retry after ``retry_after_seconds``."""

    status, code, title = 503, "unavailable", "Service unavailable"

    def __init__(self, detail: str = "", *, retry_after_seconds: int = 1) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after_seconds)})


class LedgerRefused(TallyError):
    """The ledger core refused a command: a business outcome, not a bug."""

    def __init__(self, code: Code, detail: str, fields: tuple[str, ...] = ()) -> None:
        super().__init__(detail)
        self.ledger_code = code
        self.status = http_status(code)
        self.code = code.value
        self.title = TITLES[code]
        if fields:
            self.extra["fields"] = list(fields)

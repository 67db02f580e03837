"""The one exception tree of Tally.

Every error a caller can cause carries the stable ``code`` of the API contract
(api.md §5) and a ``detail`` for people. What a code means to a protocol (an
HTTP status and title today; a gRPC status or a GraphQL ``extensions.code``
later) is decided by each entry point, in one table each (``tally.api.problems``
for HTTP). Library errors are translated where they enter (storage adapters,
request parsing), so nothing else ever reaches a client.
"""

from __future__ import annotations

from dataclasses import dataclass

from tally.core.codes import Code


@dataclass(frozen=True, slots=True)
class FieldError:
    field: str
    code: str
    message: str


class TallyError(Exception):
    """Base of every error a client can be shown.

    ``retry_after_seconds`` says when a retry may succeed (HTTP's Retry-After);
    ``metadata`` carries what a protocol sends beside the error, such as the
    rate limit a caller stands at (HTTP headers, gRPC trailing metadata).
    """

    code: str = "internal_error"

    def __init__(
        self,
        detail: str = "",
        *,
        retry_after_seconds: int | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail or self.code)
        self.detail = detail
        self.retry_after_seconds = retry_after_seconds
        self.metadata = metadata or {}
        self.fields: tuple[str, ...] = ()


class MalformedRequest(TallyError):
    code = "malformed_request"


class IdempotencyKeyInvalid(TallyError):
    code = "idempotency_key_invalid"


class IdempotencyKeyRequired(TallyError):
    code = "idempotency_key_required"


class IdempotencyKeyInUse(TallyError):
    code = "idempotency_key_in_use"

    def __init__(self, retry_after_seconds: int) -> None:
        super().__init__(
            "A request with this Idempotency-Key is still being executed; retry shortly.",
            retry_after_seconds=retry_after_seconds,
        )


class IdempotencyKeyReused(TallyError):
    code = "idempotency_key_reused"

    def __init__(self) -> None:
        super().__init__(
            "This Idempotency-Key was used for a different request (another method, path "
            "or body). Use a new key for a new request."
        )


class Unauthenticated(TallyError):
    code = "unauthenticated"


class Forbidden(TallyError):
    code = "forbidden"


class NotFound(TallyError):
    code = "not_found"


class Conflict(TallyError):
    """The object exists already (an email taken, a member invited twice)."""

    code = "conflict"


class RateLimited(TallyError):
    code = "rate_limited"


class ClientClosedRequest(TallyError):
    """The client went away before sending its whole request. Nothing was done; the
    answer reaches nobody."""

    code = "client_closed_request"


class MethodNotAllowed(TallyError):
    code = "method_not_allowed"


class TooEarly(TallyError):
    """A request that changes something arrived in TLS early data (0-RTT), which
    an attacker can replay: refused unprocessed (RFC 8470); the client sends it
    again once its handshake is complete."""

    code = "too_early"


class PreconditionFailed(TallyError):
    code = "precondition_failed"


class PayloadTooLarge(TallyError):
    code = "payload_too_large"


class UnsupportedMediaType(TallyError):
    code = "unsupported_media_type"


class ValidationFailed(TallyError):
    code = "validation_error"

    def __init__(self, errors: list[FieldError], detail: str = "") -> None:
        super().__init__(detail or "; ".join(f"{e.field}: {e.message}" for e in errors))
        self.errors = errors


class UrlNotAllowed(TallyError):
    """A webhook URL Tally will not call: not https, or a host that resolves to a
    loopback, private, link-local, multicast, unspecified or metadata address."""

    code = "url_not_allowed"


class Unavailable(TallyError):
    """The database or a queue cannot take the request now; retry after
    ``retry_after_seconds``. The detail says whether anything was changed."""

    code = "unavailable"

    def __init__(self, detail: str = "", *, retry_after_seconds: int = 1) -> None:
        super().__init__(detail, retry_after_seconds=retry_after_seconds)


class LedgerRefused(TallyError):
    """The ledger core refused a command: a business outcome, not a bug."""

    def __init__(self, code: Code, detail: str, fields: tuple[str, ...] = ()) -> None:
        super().__init__(detail)
        self.code = code.value
        self.fields = fields


# Every code this tree can carry, for the entry points' tables to cover (a test
# holds each table to it).
CODES: frozenset[str] = frozenset(
    {
        TallyError.code,
        *(cls.code for cls in TallyError.__subclasses__() if cls is not LedgerRefused),
        *(code.value for code in Code),
    }
)

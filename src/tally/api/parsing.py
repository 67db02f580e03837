"""Reading requests as a careless or hostile client sends them.

Bodies are bounded before they are read, must be JSON, and are decoded straight
into the request Struct (unknown fields, floats for integers, numbers past
2^63-1, over-long strings: all refused with a 422 naming the field). Query
parameters and the headers routes read (Idempotency-Key, If-Match) are parsed
here too, so routes see only clean values.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
from starlette.requests import HTTPConnection, Request

from tally.api.field_errors import field_error
from tally.errors import (
    ClientClosedRequest,
    FieldError,
    IdempotencyKeyInvalid,
    MalformedRequest,
    PayloadTooLarge,
    PreconditionFailed,
    UnsupportedMediaType,
    ValidationFailed,
)
from tally.support.clock import parse_time

S = TypeVar("S")

_JSON_MEDIA = re.compile(r"^application/(?:[\w.+-]+\+)?json\s*(?:;.*)?$", re.IGNORECASE)
_decoders: dict[type[Any], msgspec.json.Decoder[Any]] = {}


async def read_body(request: Request, body_bytes_max: int, *, empty_ok: bool = False) -> bytes:
    """The raw body, refusing it before reading past ``body_bytes_max``.

    Read from the ASGI ``receive`` messages directly, not through Starlette's
    ``request.stream()``, an async generator that cost about 2 µs a request more
    (docs/performance.md). The body is read once: nothing reads it again."""
    declared = request.headers.get("content-length")
    if declared is not None:
        # isascii: str.isdigit() is true of "²", which int() refuses.
        if not (declared.isascii() and declared.isdigit()):
            raise MalformedRequest("Content-Length must be a number of bytes.")
        # Compare lengths first: int() of thousands of digits is refused (and slow).
        if len(declared) > len(str(body_bytes_max)) or int(declared) > body_bytes_max:
            raise PayloadTooLarge(_too_large(body_bytes_max))
    receive = request.receive
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            # http.disconnect: the client hung up before its body arrived. Nothing
            # was done, and there is nobody to answer. Not a bug (a load
            # generator stopping does it).
            raise ClientClosedRequest("The client closed the connection mid-request.")
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > body_bytes_max:
                raise PayloadTooLarge(_too_large(body_bytes_max))
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if not body and empty_ok:
        return b"{}"
    content_type = request.headers.get("content-type", "")
    if content_type != "application/json" and not _JSON_MEDIA.match(content_type):
        raise UnsupportedMediaType("Send Content-Type: application/json.")
    return body


def _too_large(body_bytes_max: int) -> str:
    return (
        f"The body is over the {body_bytes_max}-byte limit (TALLY_BODY_BYTES_MAX): send "
        "less, or split a batch."
    )


def decode(body: bytes, schema: type[S], *, prefix: str = "") -> S:
    decoder = _decoders.get(schema)
    if decoder is None:
        decoder = _decoders[schema] = msgspec.json.Decoder(schema)
    try:
        return decoder.decode(body)  # type: ignore[no-any-return]
    except msgspec.ValidationError as exc:
        # msgspec reports a schema error as soon as it meets one, possibly before a
        # syntax error later in the body; "not JSON" must win (400, not 422).
        # Untyped, msgspec still refuses numbers it cannot hold (thousands of
        # digits, 1e400): that is the schema error already in hand, not a 500.
        try:
            msgspec.json.decode(body)
        except msgspec.ValidationError:
            pass
        except _NOT_JSON as not_json:
            raise _malformed(not_json) from None
        raise ValidationFailed([field_error(str(exc), prefix, schema)]) from None
    except _NOT_JSON as exc:
        raise _malformed(exc) from None


# What msgspec raises for a body that is not JSON at all (its ValidationError, a
# DecodeError too, is caught before these). Caught here rather than by a context
# manager around the decoding, which cost 1.1 µs of a request's 2.6.
_NOT_JSON = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)


def _malformed(exc: BaseException) -> MalformedRequest:
    """The 400 for a body that is not JSON."""
    if isinstance(exc, UnicodeDecodeError):
        return MalformedRequest("The body is not valid UTF-8.")
    if isinstance(exc, RecursionError):
        return MalformedRequest("The body is nested deeper than any request of this API.")
    # msgspec's reason names the byte where it gave up, which helps find the fault.
    reason = str(exc).removeprefix("JSON is malformed: ")
    return MalformedRequest(f"The body is not valid JSON ({reason}).")


# -- query parameters -------------------------------------------------------------------

# At most this many parameters are named in one refusal, and each name is cut to
# this length: the answer to a hostile query string stays small.
QUERY_ERRORS_MAX = 10
QUERY_NAME_ECHO_CHARS_MAX = 80


@dataclass(frozen=True, slots=True)
class QueryNames:
    """The query parameters a route takes: ``form`` ones are ``name=value``,
    ``deep`` ones ``name[key]=value`` (the metadata filter)."""

    form: frozenset[str]
    deep: frozenset[str]

    def describe(self) -> str:
        names = sorted(self.form) + [f"{name}[key]" for name in sorted(self.deep)]
        return f"it takes {', '.join(names)}" if names else "it takes none"


def check_query_names(request: HTTPConnection, names: QueryNames) -> None:
    """Refuse (422, naming each) a parameter the route does not take, and one given
    twice: a mistyped or repeated filter would otherwise be silently ignored, and a
    reconciliation script would read the wrong set."""
    if not request.scope.get("query_string"):
        return  # nearly every request
    seen: set[str] = set()
    errors: list[FieldError] = []
    for key, _ in request.query_params.multi_items():
        error = _query_name_error(key, names, seen)
        seen.add(key)
        if error is not None:
            errors.append(error)
            if len(errors) == QUERY_ERRORS_MAX:
                break
    if errors:
        raise ValidationFailed(errors)


def _query_name_error(key: str, names: QueryNames, seen: set[str]) -> FieldError | None:
    shown = key if len(key) <= QUERY_NAME_ECHO_CHARS_MAX else key[:QUERY_NAME_ECHO_CHARS_MAX] + "…"
    base, bracket, _ = key.partition("[")
    if key in names.form or (bracket and key.endswith("]") and base in names.deep):
        if key in seen:
            return FieldError(shown, "invalid", f"{shown} is given more than once; give it once.")
        return None
    if key in names.deep:
        return FieldError(
            shown, "invalid", f"A {key} filter is written {key}[key]=value, one per key."
        )
    message = f"{shown} is not a query parameter of this route; {names.describe()}."
    close = shown == key and difflib.get_close_matches(key, sorted(names.form | names.deep), n=1)
    if close:
        message = f"{message[:-1]}. Did you mean {close[0]}?"
    return FieldError(shown, "unknown_field", message)


def query_int(request: HTTPConnection, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not re.fullmatch(r"\d{1,19}", raw) or not low <= int(raw) <= high:
        raise ValidationFailed(
            [FieldError(name, "out_of_range", f"{name} must be an integer {low}-{high}.")]
        )
    return int(raw)


def query_choice(request: Request, name: str, choices: tuple[str, ...]) -> str | None:
    raw = request.query_params.get(name)
    if raw is not None and raw not in choices:
        raise ValidationFailed(
            [FieldError(name, "invalid", f"{name} must be one of {', '.join(choices)}.")]
        )
    return raw


def query_time(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        return parse_time(raw)
    except (ValueError, OverflowError):
        raise ValidationFailed(
            [
                FieldError(
                    name,
                    "invalid",
                    f"{name} must be an RFC 3339 time with a zone, such as 2026-11-26T08:00:00Z.",
                )
            ]
        ) from None


def query_text(request: HTTPConnection, name: str, chars_max: int = 64) -> str | None:
    raw = request.query_params.get(name)
    if raw is not None and not 1 <= len(raw) <= chars_max:
        raise ValidationFailed(
            [FieldError(name, "invalid_length", f"{name} must be 1-{chars_max} characters.")]
        )
    if raw is not None and "\x00" in raw:
        raise ValidationFailed([_nul_error(name)])
    return raw


def _nul_error(name: str) -> FieldError:
    # No stored text can contain NUL (PostgreSQL refuses it), so say so plainly.
    return FieldError(name, "invalid", f"{name} must not contain NUL characters.")


def metadata_filters(request: Request) -> dict[str, str]:
    pairs = (
        (key, key[len("metadata[") : -1], value)
        for key, value in request.query_params.multi_items()
        if key.startswith("metadata[") and key.endswith("]")
    )
    return checked_metadata_filters(pairs)


def checked_metadata_filters(pairs: Iterable[tuple[str, str, str]]) -> dict[str, str]:
    """Metadata filters from (the name to report, key, value) triples: REST's
    ``metadata[key]=value`` parameters, or GraphQL's ``metadata`` argument."""
    filters: dict[str, str] = {}
    for shown, name, value in pairs:
        if not 1 <= len(name) <= 64 or len(value) > 512:
            raise ValidationFailed(
                [
                    FieldError(
                        shown,
                        "invalid_length",
                        "A metadata filter's key must be 1-64 characters and its value "
                        "at most 512.",
                    )
                ]
            )
        if "\x00" in name or "\x00" in value:
            raise ValidationFailed([_nul_error(shown)])
        filters[name] = value
    if len(filters) > 10:
        raise ValidationFailed(
            [FieldError("metadata", "invalid", "At most 10 metadata filters at once.")]
        )
    return filters


# -- headers ----------------------------------------------------------------------------

IDEMPOTENCY_KEY_CHARS_MAX = 255


def idempotency_key(values: list[str]) -> str | None:
    """The key from the request's Idempotency-Key header values, if any.

    A repeated header, an empty one, one over 255 characters or with anything
    but printable ASCII is a 400: a client that sends it has a bug, and guessing
    which key it meant could double-charge.
    """
    if not values:
        return None
    if len(values) > 1:
        raise IdempotencyKeyInvalid("Send one Idempotency-Key header, not several.")
    key = values[0]
    if not 1 <= len(key) <= IDEMPOTENCY_KEY_CHARS_MAX:
        raise IdempotencyKeyInvalid(
            f"An Idempotency-Key is 1-{IDEMPOTENCY_KEY_CHARS_MAX} characters."
        )
    if not all(" " <= ch <= "~" for ch in key):
        raise IdempotencyKeyInvalid("An Idempotency-Key is printable ASCII only.")
    return key


def expected_version(request: Request) -> int | None:
    """The version named by If-Match; None when there is no precondition."""
    header = request.headers.get("if-match")
    if header is None or header.strip() == "*":
        return None
    tag = header.strip().removeprefix("W/")
    digits = tag[1:-1]
    quoted = len(tag) >= 3 and tag.startswith('"') and tag.endswith('"')
    # A version is a BIGINT: more than 19 digits names none (and int() of thousands
    # of digits is refused). ASCII digits only: str.isdigit() also takes the
    # superscripts a latin-1 header can carry, which int() refuses.
    if not quoted or not digits.isascii() or not digits.isdigit() or len(digits) > 19:
        raise PreconditionFailed(
            "If-Match names no version of this account: send its ETag as last read "
            '(such as "3"), or *.'
        )
    return int(digits)

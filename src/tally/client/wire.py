"""What both clients do the same way around one attempt: the headers sent, and
how an answer becomes a value or an exception."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol, TypeVar

import httpx
import msgspec

from tally import __version__
from tally.client.calls import Call
from tally.client.errors import ApiError, ConnectionFailed, error_for
from tally.client.retry import retryable_status

T = TypeVar("T")
Item_co = TypeVar("Item_co", covariant=True)
USER_AGENT = f"tally-python/{__version__}"
DEFAULT_BASE_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT_SECONDS = 30.0

# No answer, so the write may or may not have committed: the idempotency key
# makes trying again safe (httpx's TransportError covers connect, read and write
# errors, broken connections and time-outs).
RETRYABLE_ERRORS = (httpx.TransportError,)


class Page(Protocol[Item_co]):
    """A list answer (api.md §2, Lists)."""

    @property
    def data(self) -> Sequence[Item_co]: ...

    @property
    def has_more(self) -> bool: ...

    @property
    def next_cursor(self) -> str | None: ...


def headers(call: Call[Any], api_key: str | None) -> dict[str, str]:
    out = {"user-agent": USER_AGENT, "accept": "application/json"}
    if api_key:
        out["authorization"] = f"Bearer {api_key}"
    if call.body is not None:
        out["content-type"] = "application/json"
    if call.keyed and call.idempotency_key:
        out["idempotency-key"] = call.idempotency_key
    out.update(call.headers)
    return out


def answer(call: Call[T], response: httpx.Response) -> T:
    """The decoded answer, or the error it carries."""
    if response.status_code >= 400:
        raise error_for(response.status_code, response.content, dict(response.headers))
    return msgspec.json.decode(response.content, type=call.answer)


def should_retry(response: httpx.Response) -> bool:
    if response.status_code < 400:
        return False
    code = None
    if response.status_code == 409:
        code = error_for(409, response.content, {}).code
    return retryable_status(response.status_code, code)


def give_up(error: BaseException, call: Call[Any]) -> ConnectionFailed:
    key = f" (idempotency key {call.idempotency_key})" if call.keyed else ""
    return ConnectionFailed(f"{call.method} {call.path}: no answer: {error!r}{key}")


def items(pages: Iterator[Page[T]]) -> Iterator[T]:
    for page in pages:
        yield from page.data


__all__ = ["ApiError", "Page"]

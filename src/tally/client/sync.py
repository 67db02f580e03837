"""The synchronous client.

    from tally.client import Client

    with Client("http://127.0.0.1:8000", api_key="tk_test_…") as tally:
        cash = tally.accounts.create("USD", id="cash")
        tally.transfers.create("cash", "revenue", 1500)
        for t in tally.transfers.iterate(account_id="cash"):
            print(t.id, t.amount)

Each method is a description from ``tally.client.calls`` run by ``send``:
one idempotency key per logical call, reused by every retry.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Concatenate, ParamSpec, TypeVar

import httpx

from tally.api.schemas.ledger import EventOut
from tally.client import calls
from tally.client.calls import Call
from tally.client.retry import Attempts, RetryPolicy
from tally.client.streams import stream_events
from tally.client.wire import (
    DEFAULT_BASE_URL,
    DEFAULT_TIMEOUT_SECONDS,
    RETRYABLE_ERRORS,
    Page,
    answer,
    give_up,
    headers,
    items,
    should_retry,
)

P = ParamSpec("P")
T = TypeVar("T")
Item = TypeVar("Item")


class Client:
    """A Tally API client. ``retry`` bounds the retries of one call; ``http``
    lets a caller bring its own ``httpx.Client`` (proxies, TLS, transports)."""

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        api_key: str | None = None,
        *,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        retry: RetryPolicy | None = None,
        http: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.api_key = api_key
        self.retry = retry or RetryPolicy()
        self._own_http = http is None
        self.http = http or httpx.Client(base_url=base_url, timeout=timeout_seconds)
        self.sleep = sleep
        self.accounts = Accounts(self)
        self.transfers = Transfers(self)
        self.events = Events(self)

    def send(self, call: Call[T]) -> T:
        """Run one call, retrying what another attempt can fix (tally.client.retry)."""
        attempts = Attempts(self.retry)
        while True:
            try:
                response = self.http.request(
                    call.method, call.path, params=call.query, content=call.content(),
                    headers=headers(call, self.api_key),
                )  # fmt: skip
            except RETRYABLE_ERRORS as exc:
                wait = attempts.delay()
                if wait is None:
                    raise give_up(exc, call) from exc
            else:
                wait = attempts.delay(response.headers.get("retry-after"))
                if not should_retry(response) or wait is None:
                    return answer(call, response)
            self.sleep(wait)

    def pages(self, call: Call[Page[T]]) -> Iterator[Page[T]]:
        """Every page of a list, following ``next_cursor``."""
        while True:
            page = self.send(call)
            yield page
            if not page.has_more or page.next_cursor is None:
                return
            call = call.with_cursor(page.next_cursor)

    def close(self) -> None:
        if self._own_http:
            self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Resource:
    def __init__(self, client: Client) -> None:
        self._client = client


def _one(build: Callable[P, Call[T]]) -> Callable[Concatenate[_Resource, P], T]:
    def method(self: _Resource, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._client.send(build(*args, **kwargs))

    method.__doc__ = build.__doc__
    return method


def _all(
    build: Callable[P, Call[Page[Item]]],
) -> Callable[Concatenate[_Resource, P], Iterator[Item]]:
    def method(self: _Resource, /, *args: P.args, **kwargs: P.kwargs) -> Iterator[Item]:
        return items(self._client.pages(build(*args, **kwargs)))

    method.__doc__ = f"Every item, page after page. {build.__doc__ or ''}"
    return method


class Accounts(_Resource):
    create = _one(calls.create_account)
    get = _one(calls.get_account)
    list = _one(calls.list_accounts)
    iterate = _all(calls.list_accounts)
    update = _one(calls.update_account)
    balances = _one(calls.list_balances)
    iterate_balances = _all(calls.list_balances)
    balance_at = _one(calls.balance_at)


class Transfers(_Resource):
    create = _one(calls.create_transfer)
    post = _one(calls.post_transfer)
    void = _one(calls.void_transfer)
    batch = _one(calls.create_batch)
    get = _one(calls.get_transfer)
    list = _one(calls.list_transfers)
    iterate = _all(calls.list_transfers)


class Events(_Resource):
    list = _one(calls.list_events)
    iterate = _all(calls.list_events)

    def stream(
        self, *, after: int | None = None, types: Sequence[str] | None = None
    ) -> Iterator[EventOut]:
        """Every event after ``after`` (None: from the next one to commit), live,
        for as long as it is iterated: reconnects with Last-Event-ID, so never a
        gap or a repeat (``tally.client.streams``)."""
        return stream_events(self._client, after, types)


__all__ = ["Client"]

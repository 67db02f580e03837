"""The asynchronous client: the same calls as ``tally.client.sync``, awaited.

from tally.client import AsyncClient

async with AsyncClient("http://127.0.0.1:8000", api_key="tk_test_…") as tally:
    await tally.transfers.create("cash", "revenue", 1500)
    async for t in tally.transfers.iterate(account_id="cash"):
        print(t.id, t.amount)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Concatenate, ParamSpec, TypeVar

import httpx

from tally.api.schemas.ledger import EventOut
from tally.client import calls
from tally.client.calls import Call
from tally.client.retry import Attempts, RetryPolicy
from tally.client.streams import astream_events
from tally.client.wire import (
    DEFAULT_BASE_URL,
    DEFAULT_TIMEOUT_SECONDS,
    RETRYABLE_ERRORS,
    Page,
    answer,
    give_up,
    headers,
    should_retry,
)

P = ParamSpec("P")
T = TypeVar("T")
Item = TypeVar("Item")


class AsyncClient:
    """A Tally API client for asyncio; see ``tally.client.sync.Client``."""

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        api_key: str | None = None,
        *,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        retry: RetryPolicy | None = None,
        http: httpx.AsyncClient | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.api_key = api_key
        self.retry = retry or RetryPolicy()
        self._own_http = http is None
        self.http = http or httpx.AsyncClient(base_url=base_url, timeout=timeout_seconds)
        self.sleep = sleep
        self.accounts = Accounts(self)
        self.transfers = Transfers(self)
        self.events = Events(self)

    async def send(self, call: Call[T]) -> T:
        """Run one call, retrying what another attempt can fix (tally.client.retry)."""
        attempts = Attempts(self.retry)
        while True:
            try:
                response = await self.http.request(
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
            await self.sleep(wait)

    async def pages(self, call: Call[Page[T]]) -> AsyncIterator[Page[T]]:
        """Every page of a list, following ``next_cursor``."""
        while True:
            page = await self.send(call)
            yield page
            if not page.has_more or page.next_cursor is None:
                return
            call = call.with_cursor(page.next_cursor)

    async def aclose(self) -> None:
        if self._own_http:
            await self.http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class _Resource:
    def __init__(self, client: AsyncClient) -> None:
        self._client = client


def _one(
    build: Callable[P, Call[T]],
) -> Callable[Concatenate[_Resource, P], Awaitable[T]]:
    async def method(self: _Resource, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._client.send(build(*args, **kwargs))

    method.__doc__ = build.__doc__
    return method


def _all(
    build: Callable[P, Call[Page[Item]]],
) -> Callable[Concatenate[_Resource, P], AsyncIterator[Item]]:
    async def method(self: _Resource, /, *args: P.args, **kwargs: P.kwargs) -> AsyncIterator[Item]:
        async for page in self._client.pages(build(*args, **kwargs)):
            for item in page.data:
                yield item

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
    ) -> AsyncIterator[EventOut]:
        """Every event after ``after`` (None: from the next one to commit), live,
        for as long as it is iterated: reconnects with Last-Event-ID, so never a
        gap or a repeat (``tally.client.streams``)."""
        return astream_events(self._client, after, types)


__all__ = ["AsyncClient"]

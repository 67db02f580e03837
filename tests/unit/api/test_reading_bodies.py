"""``read_body`` reads the ASGI messages itself (not Starlette's ``stream()``):
what that must keep doing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.requests import Request

from tally.api.parsing import read_body
from tally.errors import ClientClosedRequest, PayloadTooLarge, UnsupportedMediaType

JSON = (b"content-type", b"application/json")


def read(
    messages: list[dict[str, Any]], headers: list[tuple[bytes, bytes]], limit: int = 64
) -> bytes:
    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    scope = {"type": "http", "method": "POST", "path": "/", "query_string": b"", "headers": headers}
    return asyncio.run(read_body(Request(scope, receive), limit))


def part(body: bytes, more: bool) -> dict[str, Any]:
    return {"type": "http.request", "body": body, "more_body": more}


def test_a_body_in_pieces_is_joined_and_empty_pieces_are_skipped() -> None:
    body = read([part(b'{"a":', True), part(b"", True), part(b"1}", False)], [JSON])
    assert body == b'{"a":1}'


def test_a_client_that_leaves_mid_body_is_told_apart_from_a_bad_request() -> None:
    with pytest.raises(ClientClosedRequest):
        read([part(b'{"a":', True), {"type": "http.disconnect"}], [JSON])


def test_pieces_past_the_limit_are_refused_without_a_content_length() -> None:
    with pytest.raises(PayloadTooLarge):
        read([part(b"x" * 40, True), part(b"x" * 40, False)], [JSON], limit=64)


@pytest.mark.parametrize(
    "content_type",
    [b"application/json", b"application/json; charset=utf-8", b"Application/JSON",
     b"application/merge-patch+json"],
)  # fmt: skip
def test_json_media_types_are_taken(content_type: bytes) -> None:
    assert read([part(b"{}", False)], [(b"content-type", content_type)]) == b"{}"


@pytest.mark.parametrize("content_type", [b"text/plain", b"application/jsonx", b""])
def test_other_media_types_are_refused(content_type: bytes) -> None:
    with pytest.raises(UnsupportedMediaType):
        read([part(b"{}", False)], [(b"content-type", content_type)])

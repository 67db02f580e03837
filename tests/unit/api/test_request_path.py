"""The path an idempotency fingerprint hashes: read from the scope where that is
the string Starlette's ``request.url.path`` gives (which costs 8 µs a request),
and always equal to it, so that a key stored by an older process still matches."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.requests import Request

from tally.api.endpoint import request_path

# What a decoded request path can hold, weighted toward what changes it.
_CHARS = st.sampled_from(list("/a0.:_-~%@!$&'()*+,;=?#\\\t\r\n é"))


@settings(max_examples=1500, deadline=None)
@given(st.lists(_CHARS, max_size=16).map("".join), st.booleans())
def test_the_path_is_the_one_request_url_gives(tail: str, host: bool) -> None:
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/" + tail,
        "scheme": "http",
        "server": None,
        "query_string": b"",
        "headers": [(b"host", b"tally.example")] if host else [],
    }
    request = Request(scope)
    assert request_path(request) == request.url.path


def test_a_route_path_is_taken_as_it_is() -> None:
    scope = {"type": "http", "path": "/v1/transfers/trf_01JX:a.b-c/post", "headers": []}
    assert request_path(Request(scope)) == "/v1/transfers/trf_01JX:a.b-c/post"

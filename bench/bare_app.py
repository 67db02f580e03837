"""The bare app ``bench/http_protocols.py`` serves: a transfer's 201, nothing else.

The body and headers are those Tally answers a created transfer with, so that what
differs between the arms is the HTTP layer's work. ``app`` is the ASGI app
(uvicorn with each protocol, and granian's ASGI interface); ``rsgi`` the same answer
through granian's own interface (RSGI: the response given whole, in one call, to
granian's Rust side). Run as a program, it serves ``app`` under uvicorn with the
protocol named by its first argument on the port named by its second.
"""

from __future__ import annotations

import json
import sys
from typing import Any

BODY = json.dumps(
    {
        "id": "tr_01JEXAMPLE0000000000000000",
        "debit_account_id": "acc_01JEXAMPLE000000000000000",
        "credit_account_id": "acc_01JEXAMPLE000000000000001",
        "amount": 100,
        "currency": "USD",
        "status": "posted",
        "pending": False,
        "metadata": {},
        "created_at": "2026-12-06T20:00:00.000000Z",
    },
    separators=(",", ":"),
).encode()
HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(BODY)).encode()),
    (b"location", b"/v1/transfers/tr_01JEXAMPLE0000000000000000"),
    (b"ratelimit", b'"default";r=999;t=0'),
    (b"ratelimit-policy", b'"default";q=1000;w=1'),
    (b"request-id", b"req_01JEXAMPLE00000000000000"),
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-store"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
# RSGI takes text headers and sets Content-Length itself.
TEXT_HEADERS = [(k.decode(), v.decode()) for k, v in HEADERS if k != b"content-length"]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 201, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


async def rsgi(scope: Any, protocol: Any) -> None:
    await protocol()  # the request's body, read as an app would
    protocol.response_bytes(status=201, headers=TEXT_HEADERS, body=BODY)


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[2]),
        loop="uvloop",
        http=sys.argv[1],
        interface="asgi3",
        lifespan="off",
        access_log=False,
        log_level="warning",
    )

"""Responses: JSON bodies, and answers kept to be replayed byte for byte."""

from __future__ import annotations

from starlette.responses import Response

from tally.ledger.public import encode
from tally.storage.records import StoredResponse

Headers = tuple[tuple[str, str], ...]


def stored_json(value: object, status: int = 200, headers: Headers = ()) -> StoredResponse:
    return StoredResponse(status, encode(value), (("content-type", "application/json"), *headers))


def to_response(stored: StoredResponse, *, replayed: bool = False) -> Response:
    headers = dict(stored.headers)
    if replayed:
        headers["idempotent-replayed"] = "true"
    return Response(stored.body, status_code=stored.status, headers=headers)


def json_response(value: object, status: int = 200, headers: Headers = ()) -> Response:
    return to_response(stored_json(value, status, headers))


__all__ = ["Headers", "encode", "json_response", "stored_json", "to_response"]

"""Idempotency keys: every retry of a write has exactly one effect.

The semantics follow the IETF httpapi draft "The Idempotency-Key HTTP Header
Field", with Stripe's choices where it leaves room (api.md §3, docs/idempotency.md).

The guarantee rests on one rule: **the stored response is written in the same
database transaction as the effect.** The batching writer runs the check and the
store inside the transaction that applies the commands, so there is no moment in
which an effect is committed without its key or a key without its effect. A
server killed mid-request leaves neither behind, so nothing is ever stuck: the
retry simply executes. Two processes executing the same key at once both try to
insert the key's row; the unique index lets one commit, and the other's whole
transaction rolls back and is retried by the writer, which then finds the key
and replays it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import msgspec

from tally.errors import IdempotencyKeyInvalid

KEY_CHARS_MAX = 255


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """What a keyed request answered, kept to answer its retries byte for byte."""

    status: int
    body: bytes
    # Only the headers that describe the result (Content-Type, Location, ETag);
    # per-request ones such as Request-Id are made anew on each replay.
    headers: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Claim:
    """A keyed request on its way to the writer."""

    key: str
    fingerprint: str


@dataclass(frozen=True, slots=True)
class StoredKey:
    fingerprint: str
    response: StoredResponse


def parse_key(values: list[str]) -> str | None:
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
    if not 1 <= len(key) <= KEY_CHARS_MAX:
        raise IdempotencyKeyInvalid(f"An Idempotency-Key is 1-{KEY_CHARS_MAX} characters.")
    if not all(" " <= ch <= "~" for ch in key):
        raise IdempotencyKeyInvalid("An Idempotency-Key is printable ASCII only.")
    return key


_canonical = msgspec.json.Encoder(order="sorted")


def fingerprint(method: str, path: str, body: bytes) -> str:
    """What makes two requests "the same": method, path and the parsed body.

    The body is decoded and re-encoded with sorted keys and no white space, so
    key order and formatting do not matter; values (and their types) do.
    """
    parsed = msgspec.json.decode(body) if body else None
    digest = hashlib.sha256()
    for part in (method.upper().encode(), path.encode(), _canonical.encode(parsed)):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()

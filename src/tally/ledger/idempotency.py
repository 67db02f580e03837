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
from collections.abc import Sequence
from dataclasses import dataclass, field

import msgspec

from tally.errors import IdempotencyKeyReused
from tally.storage.records import StoredKey, StoredResponse

Key = tuple[str, str]  # (tenant_id, idempotency key)


@dataclass(frozen=True, slots=True)
class Claim:
    """A keyed request on its way to the writer."""

    key: str
    fingerprint: str


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


@dataclass(frozen=True, slots=True)
class Replay:
    """The answer to a keyed request that is not executed: the stored response of
    its key (``replayed``), or the refusal of a key reused for another request."""

    response: StoredResponse | None = None
    error: IdempotencyKeyReused | None = None


def replay(stored: StoredKey, claim: Claim) -> Replay:
    if stored.fingerprint != claim.fingerprint:
        return Replay(error=IdempotencyKeyReused())
    return Replay(response=stored.response)


@dataclass(slots=True)
class KeyPlan:
    """Which of a batch's requests run, and which are answered without running."""

    run: list[int] = field(default_factory=list)
    answered: dict[int, Replay] = field(default_factory=dict)
    # request index -> index of the earlier request in this batch with the same key
    copies: dict[int, int] = field(default_factory=dict)


def plan_keys(claims: Sequence[tuple[str, Claim | None]], stored: dict[Key, StoredKey]) -> KeyPlan:
    """Given each request's (tenant, claim) and the keys already stored, decide
    which requests execute. A key seen earlier in the same batch is a copy of
    that request (or, with another fingerprint, a reuse)."""
    plan = KeyPlan()
    first: dict[Key, int] = {}
    for i, (tenant_id, claim) in enumerate(claims):
        if claim is None:
            plan.run.append(i)
            continue
        key = (tenant_id, claim.key)
        earlier = first.get(key)
        if key in stored:
            plan.answered[i] = replay(stored[key], claim)
        elif earlier is not None:
            earlier_claim = claims[earlier][1]
            assert earlier_claim is not None
            if earlier_claim.fingerprint == claim.fingerprint:
                plan.copies[i] = earlier
            else:
                plan.answered[i] = Replay(error=IdempotencyKeyReused())
        else:
            first[key] = i
            plan.run.append(i)
    return plan

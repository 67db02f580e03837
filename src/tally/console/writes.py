"""Ledger writes from the console: through the same ``Ledger`` use cases as REST,
audited in the same transaction, and keyed for exactly-once.

Every ledger form carries an idempotency key made when the form was rendered
(a hidden field). It is sent to the ledger as the write's key, scoped to the
tenant like any other (api.md §3), with a fingerprint of the form's fields: a
double click, a resubmitted form or a reload after a lost answer makes exactly
one change, and each later copy is answered as the first was.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from tally.console.errors import status_of
from tally.console.web import Visit
from tally.core import Account, Code, Outcome, Status, Transfer
from tally.errors import IdempotencyKeyInUse, LedgerRefused, MalformedRequest
from tally.ledger import WriteContext, Written
from tally.ledger.idempotency import Claim, fingerprint
from tally.ledger.public import object_json
from tally.storage.records import StoredResponse

KEY_FIELD = "idempotency_key"
KEY_CHARS_MAX = 255
# A second copy of a form while the first is being written (a double click) waits
# for the first's answer rather than failing: at most this long.
IN_USE_WAIT_SECONDS = 0.05
IN_USE_TRIES = 100
_JSON = (("content-type", "application/json"),)


def new_key() -> str:
    return f"con_{secrets.token_urlsafe(24)}"


def answer(outcomes: list[Outcome]) -> StoredResponse:
    """The console's answer, stored with a keyed write: the object's public JSON,
    or the refusal's code and detail."""
    (outcome,) = outcomes
    if not outcome.ok:
        assert outcome.code is not None
        body = msgspec.json.encode({"code": outcome.code.value, "detail": outcome.detail})
        return StoredResponse(status_of(outcome.code.value), body, _JSON)
    obj = outcome.object
    assert isinstance(obj, Account | Transfer)
    status = 201 if outcome.status is Status.CREATED else 200
    return StoredResponse(status, object_json(obj), _JSON)


def _claim(visit: Visit, fields: dict[str, Any]) -> Claim | None:
    key = visit.form.raw(KEY_FIELD)
    if not key:
        return None
    if len(key) > KEY_CHARS_MAX or not key.isascii() or not key.isprintable():
        raise MalformedRequest("The form's idempotency key is not valid: reload the page.")
    body = msgspec.json.encode(fields)
    return Claim(key, fingerprint("POST", visit.request.url.path, body))


async def keyed_write(
    visit: Visit,
    write: Callable[[WriteContext], Awaitable[Written]],
    fields: dict[str, Any],
) -> str:
    """Run ``write`` with the form's key; the id of the object it made or changed,
    or the ledger's refusal raised as an error."""
    ctx = WriteContext(answer=answer, claim=_claim(visit, fields), audit=visit.audit_of())
    for _ in range(IN_USE_TRIES):
        try:
            written = await write(ctx)
            break
        except IdempotencyKeyInUse:
            await asyncio.sleep(IN_USE_WAIT_SECONDS)
    else:
        raise IdempotencyKeyInUse(1)
    if written.replayed:  # recorded as REST records a replay
        visit.audit_code = "idempotent_replayed"
    stored = written.answer
    assert stored is not None, "console writes are audited, so always answered"
    result = msgspec.json.decode(stored.body)
    if stored.status >= 400:
        raise LedgerRefused(Code(result["code"]), result["detail"])
    object_id: str = result["id"]
    return object_id

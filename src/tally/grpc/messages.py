"""Messages in and out, through the REST API's own Structs.

A request message becomes the JSON body REST would have been sent, and is decoded
by REST's decoder into REST's request Struct: the same limits (ids, amounts,
currencies, metadata), the same field errors in the same words, and the body
bytes a keyed call's fingerprint is taken of. proto3 cannot tell a scalar left
out from one set to its zero value except where the .proto says ``optional``: an
``amount`` of 0 is sent as 0, and refused as REST refuses it.

An answer is the contract's JSON as REST's ``answers`` rendered it inside the
write's transaction (and, with an idempotency key, stored): decoded into the
public Structs (``ledger.public``) and copied field for field into the message.
A replay renders exactly as the first call did.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from tally.api.parsing import decode
from tally.api.schemas.ledger import BatchOut
from tally.api.schemas.problem import Problem
from tally.errors import FieldError
from tally.grpc.status import Refusal
from tally.grpc.v1 import ledger_pb2 as pb
from tally.ledger.public import AccountOut, TransferOut
from tally.storage.records import StoredResponse

S = TypeVar("S")
_encode = msgspec.json.encode
_decoders: dict[type[Any], msgspec.json.Decoder[Any]] = {}


def body_of(fields: dict[str, Any]) -> bytes:
    return _encode(fields)


def parsed(body: bytes, schema: type[S], prefix: str = "") -> S:
    """REST's decoding of a body into its request Struct (422 on a bad field)."""
    return decode(body, schema, prefix=prefix)


def _given(message: Any, fields: dict[str, Any], *names: str) -> dict[str, Any]:
    for name in names:
        if message.HasField(name):
            fields[name] = getattr(message, name)
    return fields


def account_fields(r: pb.CreateAccountRequest) -> dict[str, Any]:
    fields: dict[str, Any] = {"currency": r.currency, "metadata": dict(r.metadata)}
    if r.HasField("flags"):
        fields["flags"] = {
            "debits_must_not_exceed_credits": r.flags.debits_must_not_exceed_credits,
            "credits_must_not_exceed_debits": r.flags.credits_must_not_exceed_debits,
        }
    return _given(r, fields, "id", "normal_balance")


def transfer_fields(r: pb.CreateTransferRequest) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "debit_account_id": r.debit_account_id,
        "credit_account_id": r.credit_account_id,
        "amount": r.amount,
        "pending": r.pending,
        "metadata": dict(r.metadata),
    }
    return _given(r, fields, "id", "currency", "timeout_seconds")


def post_fields(r: pb.PostTransferRequest) -> dict[str, Any]:
    return _given(r, {"metadata": dict(r.metadata)}, "id", "amount")


def void_fields(r: pb.VoidTransferRequest) -> dict[str, Any]:
    return _given(r, {"metadata": dict(r.metadata)}, "id")


# -- answers ---------------------------------------------------------------------------


def _decoded(body: bytes, schema: type[S]) -> S:
    decoder = _decoders.get(schema)
    if decoder is None:
        decoder = _decoders[schema] = msgspec.json.Decoder(schema)
    return decoder.decode(body)  # type: ignore[no-any-return]


def refusal_of(stored: StoredResponse) -> Refusal | None:
    """The refusal a stored answer holds (a problem), or None for a success."""
    if stored.status < 400:
        return None
    problem = _decoded(stored.body, Problem)
    errors = [FieldError(e.field, e.code, e.message) for e in problem.errors or []]
    return Refusal(problem.code, problem.detail, errors, tuple(problem.fields or ()))


def account_message(stored: StoredResponse) -> pb.Account:
    return account_pb(_decoded(stored.body, AccountOut))


def transfer_message(stored: StoredResponse) -> pb.Transfer:
    return transfer_pb(_decoded(stored.body, TransferOut))


def batch_results(stored: StoredResponse, offset: int) -> list[pb.TransferResult]:
    """A non-atomic batch's results, numbered from ``offset`` (its place in the stream)."""
    results = []
    for r in _decoded(stored.body, BatchOut).results:
        result = pb.TransferResult(index=offset + r.index, status=r.status)
        if r.transfer is not None:
            result.transfer.CopyFrom(transfer_pb(r.transfer))
        if r.error is not None:
            result.error.CopyFrom(pb.ItemError(code=r.error.code, detail=r.error.detail))
        results.append(result)
    return results


def account_pb(a: AccountOut) -> pb.Account:
    return pb.Account(
        id=a.id,
        currency=a.currency,
        normal_balance=a.normal_balance,
        flags=pb.AccountFlags(
            debits_must_not_exceed_credits=a.flags.debits_must_not_exceed_credits,
            credits_must_not_exceed_debits=a.flags.credits_must_not_exceed_debits,
        ),
        status=a.status,
        debits_pending=a.debits_pending,
        debits_posted=a.debits_posted,
        credits_pending=a.credits_pending,
        credits_posted=a.credits_posted,
        balance=pb.Balance(
            posted=a.balance.posted, pending=a.balance.pending, available=a.balance.available
        ),
        metadata=a.metadata,
        version=a.version,
        created_at=a.created_at,
        updated_at=a.updated_at,
    )


def transfer_pb(t: TransferOut) -> pb.Transfer:
    return pb.Transfer(
        id=t.id,
        debit_account_id=t.debit_account_id,
        credit_account_id=t.credit_account_id,
        amount=t.amount,
        currency=t.currency,
        pending=t.pending,
        status=t.status,
        timeout_seconds=t.timeout_seconds,
        expires_at=t.expires_at,
        pending_id=t.pending_id,
        resolved_at=t.resolved_at,
        metadata=t.metadata,
        created_at=t.created_at,
    )

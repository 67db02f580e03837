"""Messages become the JSON body REST would have been sent, and are held to REST's
request Structs: a field left out stays out, a zero is a zero."""

from __future__ import annotations

import msgspec
import pytest

from tally.api.schemas.ledger import PendingPost, TransferCreate
from tally.errors import ValidationFailed
from tally.grpc import messages as m
from tally.grpc.v1 import ledger_pb2 as pb


def test_optional_fields_left_out_are_left_out_of_the_body() -> None:
    request = pb.CreateTransferRequest(debit_account_id="a", credit_account_id="b", amount=5)
    fields = m.transfer_fields(request)
    assert "id" not in fields and "currency" not in fields and "timeout_seconds" not in fields
    body = m.parsed(m.body_of(fields), TransferCreate)
    assert (body.id, body.currency, body.timeout_seconds) == (None, None, None)


def test_a_zero_amount_is_refused_as_rest_refuses_it_naming_the_field() -> None:
    request = pb.CreateTransferRequest(debit_account_id="a", credit_account_id="b")
    with pytest.raises(ValidationFailed) as refused:
        m.parsed(m.body_of(m.transfer_fields(request)), TransferCreate, prefix="items[3]")
    assert [e.field for e in refused.value.errors] == ["items[3].amount"]


def test_a_partial_post_keeps_its_amount_and_a_whole_one_has_none() -> None:
    partial = m.parsed(m.body_of(m.post_fields(pb.PostTransferRequest(amount=7))), PendingPost)
    whole = m.parsed(m.body_of(m.post_fields(pb.PostTransferRequest())), PendingPost)
    assert (partial.amount, whole.amount) == (7, None)


def test_the_body_fingerprinted_is_the_fields_as_json() -> None:
    request = pb.CreateTransferRequest(
        id="t1", debit_account_id="a", credit_account_id="b", amount=5, metadata={"k": "v"}
    )
    assert msgspec.json.decode(m.body_of(m.transfer_fields(request))) == {
        "id": "t1",
        "debit_account_id": "a",
        "credit_account_id": "b",
        "amount": 5,
        "pending": False,
        "metadata": {"k": "v"},
    }

"""Schema refusals in words: every request field's rule is stated as a sentence, never
as msgspec's text (a regular expression, Python type names, ``$.path``)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from tally.api.field_errors import WHOLE_NUMBERS
from tally.api.parsing import decode
from tally.api.routes import ROUTES
from tally.api.schemas.common import PATTERN_WORDS
from tally.api.schemas.ledger import AccountCreate, BatchCreate, BatchItem, TransferCreate
from tally.errors import FieldError, ValidationFailed

REQUESTS: list[type[Any]] = sorted(
    {s.request for s in ROUTES if s.request is not None} | {BatchItem}, key=lambda t: t.__name__
)
INTERNALS = re.compile(r"`|regex|\(\?!|\$\.|\b(?:str|int|float|bool|dict|NoneType|Struct)\b")


def patterns(schema: Any) -> Iterator[str]:
    if isinstance(schema, dict):
        if isinstance(schema.get("pattern"), str):
            yield schema["pattern"]
        for value in schema.values():
            yield from patterns(value)
    elif isinstance(schema, list):
        for value in schema:
            yield from patterns(value)


def refusal(schema: type[Any], body: bytes) -> FieldError:
    with pytest.raises(ValidationFailed) as refused:
        decode(body, schema)
    (error,) = refused.value.errors
    return error


def test_every_pattern_of_every_request_schema_has_its_rule_in_words() -> None:
    _, components = msgspec.json.schema_components(REQUESTS)
    found = set(patterns(components))
    assert found, "the request schemas have patterns"
    assert found <= set(PATTERN_WORDS), found - set(PATTERN_WORDS)


def transfer(amount: str) -> bytes:
    return b'{"debit_account_id": "a", "credit_account_id": "b"' + amount.encode() + b"}"


def account(fields: str) -> bytes:
    return b'{"currency": "USD", ' + fields.encode() + b"}"


@pytest.mark.parametrize(
    ("schema", "body", "field", "says"),
    [
        (AccountCreate, b'{"currency": "usd"}', "currency", "ISO 4217"),
        (AccountCreate, account('"id": "-x"'), "id", "letters, digits"),
        (AccountCreate, account('"metadata": {"k": "\\u0000"}'), "metadata[...]", "NUL"),
        (AccountCreate, account('"normal_balance": "x"'), "normal_balance", "credit, debit"),
        (AccountCreate, account('"metadata": {"k": 1}'), "metadata[...]", "A value must be"),
        (TransferCreate, transfer(', "amount": 0'), "amount", "at least 1"),
        (TransferCreate, transfer(', "amount": 1.5'), "amount", WHOLE_NUMBERS),
        (TransferCreate, transfer(', "amount": "1"'), "amount", "integer, not a string"),
        (TransferCreate, transfer(""), "amount", "amount is required"),
        (BatchCreate, b'{"transfers": []}', "transfers", "at least 1 item"),
    ],
)
def test_a_refusal_states_the_rule_in_words(
    schema: type[Any], body: bytes, field: str, says: str
) -> None:
    error = refusal(schema, body)
    assert error.field == field
    assert says in error.message, error.message
    assert not INTERNALS.search(error.message), error.message


def test_an_unknown_field_is_named_with_the_fields_there_are_and_the_likely_one() -> None:
    error = refusal(AccountCreate, b'{"currency": "USD", "flgs": {}}')
    assert (error.field, error.code) == ("flgs", "unknown_field")
    assert "currency, id, normal_balance, flags, metadata" in error.message
    assert error.message.endswith("Did you mean flags?")


def test_an_unknown_field_in_a_nested_object_lists_that_objects_fields() -> None:
    error = refusal(AccountCreate, b'{"currency": "USD", "flags": {"overdraft": true}}')
    assert error.field == "flags.overdraft"
    assert "debits_must_not_exceed_credits, credits_must_not_exceed_debits" in error.message


def test_a_too_long_metadata_key_is_said_to_be_a_key() -> None:
    error = refusal(AccountCreate, b'{"currency": "USD", "metadata": {"' + b"k" * 65 + b'": "v"}}')
    assert error.field == "metadata"
    assert error.message == "A key must be at most 64 characters."


def test_the_largest_amount_is_said_with_its_power_of_two() -> None:
    body = b'{"debit_account_id": "a", "credit_account_id": "b", "amount": 9223372036854775808}'
    assert refusal(TransferCreate, body).message == "Must be at most 9223372036854775807 (2^63-1)."


def test_a_body_that_is_not_an_object_says_so() -> None:
    error = refusal(TransferCreate, b"[1]")
    assert (error.field, error.message) == ("body", "Must be an object, not an array.")

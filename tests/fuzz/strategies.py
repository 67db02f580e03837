"""Inputs shared by the fuzz tests: hostile strings, any JSON, JSON shaped like a
request schema, and a valid body of each schema to start mutations from."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from tally.api.schemas.ledger import (
    AccountCreate,
    AccountUpdate,
    BatchAction,
    BatchCreate,
    PendingPost,
    PendingVoid,
    TransferCreate,
)

AMOUNT_MAX = 2**63 - 1

# Strings a careless or hostile client sends: empty, huge, control characters,
# NUL, lone surrogates (not UTF-8-encodable as such), unicode digits and case.
hostile_text = st.one_of(
    st.text(max_size=20),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=80),
    st.sampled_from(
        [
            "",
            " ",
            "\x00",
            "a\x00",
            "USD\n",
            "usd",
            "ÜSD",
            "é",
            "\u0661\u0662",  # Arabic-Indic digits: \d matches them, int() reads them
            "²",  # a digit to str.isdigit(), not to int()
            "a" * 64,
            "a" * 65,
            "-a",
            "a b",
            "9" * 30,
            "1e3",
            "NaN",
        ]
    ),
)
json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([0, 1, -1, AMOUNT_MAX, AMOUNT_MAX + 1, 2**64, -(2**63) - 1, 10**40]),
    st.floats(allow_nan=False, allow_infinity=False),
    hostile_text,
)
json_values = st.recursive(
    json_leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(hostile_text, inner, max_size=4),
    max_leaves=16,
)


def field_names(schema: type[Any]) -> list[str]:
    return list(schema.__struct_fields__)


def shaped(schema: type[Any], depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    """An object with (some of) the schema's own field names, and values of any kind,
    often of the right one."""
    values = json_values
    if schema is BatchCreate and depth == 0:
        item_fields = sorted({*field_names(TransferCreate), *field_names(BatchAction)})
        items = st.dictionaries(st.sampled_from(item_fields) | hostile_text, json_values)
        values = st.one_of(json_values, st.lists(items, max_size=4))
    names = st.sampled_from(field_names(schema)) | hostile_text
    return st.dictionaries(names, values, max_size=len(field_names(schema)) + 2)


VALID_BODIES: dict[type[Any], dict[str, Any]] = {
    AccountCreate: {
        "id": "acc-1",
        "currency": "USD",
        "normal_balance": "debit",
        "flags": {"debits_must_not_exceed_credits": True},
        "metadata": {"k": "v"},
    },
    AccountUpdate: {"metadata": {"k": None, "n": "1"}, "status": "closed"},
    TransferCreate: {
        "id": "t-1",
        "debit_account_id": "a",
        "credit_account_id": "b",
        "amount": 10,
        "currency": "USD",
        "pending": True,
        "timeout_seconds": 60,
        "metadata": {"k": "v"},
    },
    PendingPost: {"id": "p-1", "amount": 5, "metadata": {}},
    PendingVoid: {"id": "v-1"},
    BatchCreate: {
        "transfers": [
            {"debit_account_id": "a", "credit_account_id": "b", "amount": 1, "pending": True},
            {"pending_id": "t-1", "action": "post", "amount": 1},
            {"pending_id": "t-1", "action": "void", "id": "v-2"},
        ],
        "atomic": True,
    },
}

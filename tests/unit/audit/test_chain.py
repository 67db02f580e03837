"""The audit chain's canonical form: the fast encoder writes exactly the bytes the
chain was always hashed over (``json.dumps`` with ASCII escapes), for every row."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tally.audit.chain import canonical, chain_hash


def reference(row: list[Any]) -> bytes:
    return json.dumps(row, separators=(",", ":"), ensure_ascii=True).encode()


values = st.one_of(
    st.none(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.text(),  # every code point, lone surrogates and DEL included
    st.text(alphabet=st.characters(max_codepoint=0x7F)),
)


@settings(deadline=None)  # a paused CI machine is not a slow encoder
@given(st.lists(values, max_size=10))
def test_canonical_is_json_dumps_with_ascii_escapes(row: list[Any]) -> None:
    assert canonical(row) == reference(row)


def test_the_hash_is_the_one_sealed_rows_carry() -> None:
    row = [1_733_400_000_000_000, "api_key", "key_1", "transfer.create", "é\x7f", 201, None]
    expected = hashlib.sha256(("prev\n" + reference([7, *row]).decode()).encode()).hexdigest()
    assert chain_hash("prev", 7, row) == expected
    assert (
        chain_hash("prev", 7, [*row[:4], "\udc80", *row[5:]])
        == hashlib.sha256(
            ("prev\n" + reference([7, *row[:4], "\udc80", *row[5:]]).decode()).encode()
        ).hexdigest()
    )

"""Values written into SQL text (``tally.storage.literals``) reach PostgreSQL
exactly as they were: whatever the string, and whatever the session's
``standard_conforming_strings``. Anything else is refused before it is sent."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tally.storage.literals import literal

# Every character PostgreSQL's UTF-8 text can hold: no NUL, no lone surrogate.
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))


def test_anything_but_a_str_or_an_int_is_refused() -> None:
    for value in (True, 1.5, None, b"bytes", ["a"], {"a": 1}):
        with pytest.raises(TypeError):
            literal(value)  # type: ignore[arg-type]


def test_a_nul_is_refused_rather_than_ending_the_message() -> None:
    with pytest.raises(ValueError, match="NUL"):
        literal("before\x00'; DROP TABLE accounts; --")


def test_ints_are_their_digits() -> None:
    assert [literal(v) for v in (0, -7, 2**63 - 1)] == ["0", "-7", "9223372036854775807"]


@pytest.mark.parametrize("conforming", ["on", "off"])
def test_any_string_reads_back_unchanged(postgres_url: str, conforming: str) -> None:
    loop = asyncio.new_event_loop()
    conn: asyncpg.Connection = loop.run_until_complete(
        asyncpg.connect(postgres_url, server_settings={"standard_conforming_strings": conforming})
    )
    try:
        loop.run_until_complete(conn.execute("PREPARE echo (text, bigint) AS SELECT $1, $2"))

        @settings(max_examples=300, deadline=None)
        @given(text=TEXT, number=st.integers(-(2**63), 2**63 - 1))
        @example(text="\\", number=0)
        @example(text="'); SELECT pg_sleep(10); --", number=0)
        @example(text="\\'; SELECT 1; --", number=0)
        @example(text="E'\\x41\\u0041\\101' $$ $a$ ''", number=0)
        def round_trip(text: str, number: int) -> None:
            query = f"EXECUTE echo({literal(text)}, {literal(number)})"
            row: Any = loop.run_until_complete(conn.fetchrow(query))
            assert (row[0], row[1]) == (text, number)

        round_trip()
    finally:
        loop.run_until_complete(conn.close())
        loop.close()

"""The one cursor codec: round trips, and anything else is a 422 naming ``cursor``."""

from __future__ import annotations

import pytest

from tally.errors import ValidationFailed
from tally.support.cursors import (
    POSITION_MAX,
    decode_cursor,
    decode_id_cursor,
    encode_cursor,
    page_of,
)


@pytest.mark.parametrize("position", [0, 1, 4241, POSITION_MAX])
def test_a_number_round_trips(position: int) -> None:
    assert decode_cursor(encode_cursor(position)) == position


@pytest.mark.parametrize("position", ["usr_01ABC", "a:b:c", ""])
def test_an_id_round_trips(position: str) -> None:
    assert decode_id_cursor(encode_cursor(position)) == position


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "!!!",
        encode_cursor("usr_1"),  # an id cursor where a number is expected
        encode_cursor(-1).replace("=", ""),
        "djE6OTk5OTk5OTk5OTk5OTk5OTk5OTk5",  # v1:99999999999999999999, past a BIGINT
    ],
)
def test_anything_but_a_number_cursor_is_refused_naming_cursor(cursor: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        decode_cursor(cursor)
    assert [e.field for e in refused.value.errors] == ["cursor"]


def test_a_number_cursor_is_not_an_id_cursor() -> None:
    with pytest.raises(ValidationFailed):
        decode_id_cursor(encode_cursor(7))


def test_a_page_of_one_extra_row_has_a_cursor_at_the_last_row_kept() -> None:
    page = page_of([1, 2, 3, 4], 3, lambda n: n * 10)
    assert page.items == [1, 2, 3] and page.has_more
    assert page.next_cursor is not None and decode_cursor(page.next_cursor) == 30
    last = page_of([1, 2, 3], 3, lambda n: n)
    assert last.items == [1, 2, 3] and last.next_cursor is None and not last.has_more

"""Page cursors: the one codec every list uses.

A cursor is opaque to clients: base64url (unpadded) of ``<kind>:<position>``,
where the position is where the previous page ended (a sequence, a version, a
row id or an object id). Lists that order by a number use the kind ``v1``; lists
that order by an id use ``id``; lists that order by two numbers (a time, then a
version) use ``v2``, the two joined by a dot. Anything else a client sends is a
422 naming ``cursor``, never a guess.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from tally.errors import FieldError, ValidationFailed

T = TypeVar("T")
POSITION_MAX = 2**63 - 1  # a BIGINT: every sequence, version and row id fits
_NUMBER = "v1"
_ID = "id"
_PAIR = "v2"
Position = int | str | tuple[int, int]


def encode_cursor(position: Position) -> str:
    if isinstance(position, tuple):
        text = f"{_PAIR}:{position[0]}.{position[1]}"
    else:
        text = f"{_NUMBER if isinstance(position, int) else _ID}:{position}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The number a ``v1`` cursor names."""
    return _number(_decode(cursor, _NUMBER))


def decode_pair_cursor(cursor: str) -> tuple[int | None, int]:
    """The two numbers a ``v2`` cursor names; a ``v1`` cursor, issued by a list
    before it ordered by two, names its second alone: (None, number)."""
    try:
        first, dot, second = _decode(cursor, _PAIR).partition(".")
    except ValidationFailed:
        return None, decode_cursor(cursor)
    if not dot:
        raise _invalid()
    return _number(first), _number(second)


def _number(position: str) -> int:
    if not position.isascii() or not position.isdigit() or len(position) > 19:
        raise _invalid()
    if int(position) > POSITION_MAX:
        raise _invalid()
    return int(position)


def decode_id_cursor(cursor: str) -> str:
    """The id an ``id`` cursor names."""
    return _decode(cursor, _ID)


def _decode(cursor: str, kind: str) -> str:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise _invalid() from None
    found, separator, position = text.partition(":")
    if found != kind or not separator:
        raise _invalid()
    return position


def _invalid() -> ValidationFailed:
    return ValidationFailed(
        [
            FieldError(
                "cursor",
                "invalid",
                "Not a cursor this server issued: pass the next_cursor of the previous page "
                "unchanged, or leave cursor out to start at the first page.",
            )
        ]
    )


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None

    @property
    def has_more(self) -> bool:
        return self.next_cursor is not None


def page_of(rows: list[T], limit: int, position: Callable[[T], Position]) -> Page[T]:
    """A page from ``limit + 1`` fetched rows: the extra row's presence says there
    is more, and the cursor names the position of the last row kept."""
    if len(rows) > limit:
        return Page(rows[:limit], encode_cursor(position(rows[limit - 1])))
    return Page(rows, None)

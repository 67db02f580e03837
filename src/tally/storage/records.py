"""What the storage adapters read and write besides the core's own values.

Plain frozen records: the reads' results (a balance-history row, an event row),
the filters a list takes, and the idempotency records stored with a write.
"""

from __future__ import annotations

from dataclasses import dataclass

from tally.core import Transfer


@dataclass(frozen=True, slots=True)
class BalanceRecord:
    version: int
    transfer_id: str | None
    debits_pending: int
    debits_posted: int
    credits_pending: int
    credits_posted: int
    created_at_us: int | None

    @property
    def position(self) -> tuple[int, int]:
        """Where the record sits in its account's history, which is ordered by
        (created_at_us, version): a page's cursor."""
        return (self.created_at_us or 0, self.version)


@dataclass(frozen=True, slots=True)
class EventRecord:
    sequence: int
    type: str
    created_at_us: int
    data: str  # the object's public JSON as it was after the change


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An events row: an account event carries its copy (``data``); a transfer
    event, its transfer, read with it (migration 0005)."""

    sequence: int
    type: str
    created_at_us: int
    data: str | None
    transfer: Transfer | None


@dataclass(frozen=True, slots=True)
class TransferFilter:
    account_id: str | None = None
    status: str | None = None
    created_after_us: int | None = None
    created_before_us: int | None = None
    descending: bool = False


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """What a keyed request answered, kept to answer its retries byte for byte."""

    status: int
    body: bytes
    # Only the headers that describe the result (Content-Type, Location, ETag);
    # per-request ones such as Request-Id are made anew on each replay.
    headers: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class StoredKey:
    fingerprint: str
    response: StoredResponse


@dataclass(frozen=True, slots=True)
class KeyRow:
    """An idempotency record to insert with the batch."""

    key: str
    fingerprint: str
    response: StoredResponse

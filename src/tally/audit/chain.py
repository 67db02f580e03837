"""The hash chain over the audit log: seal new rows onto it, verify it whole."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from tally.audit.context import FIELDS
from tally.storage import Store
from tally.storage.store import Tx

log = logging.getLogger(__name__)

# An audit_events row's fields, in the order of FIELDS, from the alias e.
_EVENT_FIELDS = ", ".join(f"e.{name}" for name in FIELDS)


def chain_hash(previous_hash: str, seq: int, values: Sequence[Any]) -> str:
    """SHA-256 of the previous row's hash, a newline, and this row as canonical
    JSON: ``[seq, *values]``, no spaces, every character past ASCII escaped."""
    return hashlib.sha256(previous_hash.encode() + b"\n" + canonical([seq, *values])).hexdigest()


_encode = msgspec.json.encode


def canonical(row: list[Any]) -> bytes:
    """``json.dumps(row, separators=(",", ":"), ensure_ascii=True)``, the form every
    sealed hash was made with, at a fifteenth of its cost (2.1 against 0.13 µs for
    a typical row: the sealer hashes every request's row). msgspec writes the
    same bytes for a row of ASCII text, integers and nulls, except that it leaves
    DEL (0x7f) unescaped and writes other characters as UTF-8, and it refuses a
    lone surrogate: those rows take ``json.dumps`` itself (tests/unit/audit)."""
    try:
        out = _encode(row)
    except UnicodeEncodeError:  # a lone surrogate
        return _dumps(row)
    return out if out.isascii() and b"\x7f" not in out else _dumps(row)


def _dumps(row: list[Any]) -> bytes:
    return json.dumps(row, separators=(",", ":"), ensure_ascii=True).encode()


@dataclass(frozen=True, slots=True)
class ChainHead:
    """The newest sealed row's number and hash: keep a copy elsewhere, so that even
    a rewrite of the whole table is detected."""

    seq: int
    hash: str


async def read_head(store: Store) -> ChainHead:
    rows = await store.fetch("SELECT head_seq, head_hash FROM audit_chain WHERE id = 1")
    return ChainHead(int(rows[0][0]), str(rows[0][1]))


@dataclass(frozen=True, slots=True)
class _Chain:
    head: ChainHead
    mark_txid: int  # the mark: rows up to (mark_txid, mark_id) were taken
    mark_id: int
    # Set when the mark names a transaction this cluster has not reached (the
    # database was restored into another cluster): the next transaction id here.
    foreign_from: int | None


async def _read_chain(store: Store, db: Store | Tx) -> _Chain:
    rows = await db.fetch(
        "SELECT head_seq, head_hash, mark_txid, mark_id,"
        f" {store.audit_next_txid} FROM audit_chain WHERE id = 1"
    )
    seq, hash_, mark_txid, mark_id, next_txid = rows[0]
    foreign = next_txid is not None and mark_txid >= next_txid
    return _Chain(
        ChainHead(int(seq), str(hash_)),
        int(mark_txid),
        int(mark_id),
        int(next_txid) if foreign else None,
    )


async def seal(store: Store, rows_max: int) -> int:
    """Seal up to ``rows_max`` rows onto the chain; returns how many rows it took
    past the chain's mark (0: none waits).

    A row's seal is a row of its own in ``audit_seals`` (migration 0008: an update
    of the row itself cost three times as much). Rows are taken in the chain's
    order after its mark (``store.audit_order``), and only rows whose transaction
    has finished (``store.audit_settled``). On PostgreSQL the order is ``(txid,
    id)``: a transaction still running, or yet to start, has a larger txid than
    every finished one, so no row can commit later with a place before the mark.
    On SQLite one transaction writes at a time, so ids are committed in order."""
    async with store.transaction() as tx:
        # The update takes the head's row lock: sealers in other processes wait, then
        # see these rows sealed (each statement reads what is committed by then).
        await tx.execute("UPDATE audit_chain SET head_seq = head_seq WHERE id = 1")
        chain = await _read_chain(store, tx)
        seq, previous = chain.head.seq, chain.head.hash
        mark_txid, mark_id = chain.mark_txid, chain.mark_id
        if chain.foreign_from is not None:
            mark_txid, mark_id = await _anchor_again(tx, chain.foreign_from)
        # The join passes over a row sealed already: rows from before 0008 share
        # txid 0, and some past the mark may have been sealed out of id order.
        rows = await tx.fetch(
            f"SELECT e.txid, e.id, s.event_id IS NOT NULL, {_EVENT_FIELDS}"
            " FROM audit_events AS e LEFT JOIN audit_seals AS s ON s.event_id = e.id"
            f" WHERE {store.audit_after_mark} AND {store.audit_settled}"
            f" ORDER BY {store.audit_order} LIMIT $3",
            mark_txid,
            mark_id,
            rows_max,
        )
        sealed = []
        for row in rows:
            if row[2]:
                continue
            seq += 1
            previous = chain_hash(previous, seq, row[3:])
            sealed.append((row[1], seq, previous))
        if sealed:
            # One statement for the round, not one per row (it was a tenth of the
            # server's CPU under load: docs/performance.md).
            await tx.execute(
                "INSERT INTO audit_seals (event_id, chain_seq, chain_hash) SELECT id, seq, hash"
                " FROM ("
                + store.json_rows(1, [("id", "bigint"), ("seq", "bigint"), ("hash", "text")])
                + ") AS s",
                _encode(sealed).decode(),
            )
        if rows:
            mark_txid, mark_id = rows[-1][0], rows[-1][1]
        if rows or chain.foreign_from is not None:
            await tx.execute(
                "UPDATE audit_chain SET head_seq = $1, head_hash = $2, mark_txid = $3,"
                " mark_id = $4 WHERE id = 1",
                seq,
                previous,
                mark_txid,
                mark_id,
            )
    return len(rows)


async def _anchor_again(tx: Tx, next_txid: int) -> tuple[int, int]:
    """The mark names a transaction this cluster has not reached: the database was
    restored from a dump (or moved by logical replication) into another cluster,
    whose transaction ids start lower. Rows written here would sort before the
    mark and never be sealed. The rows that came with the dump get txid 0, so
    that they sort first and the rows written here after them, and the mark moves
    to just before the first of them not sealed yet, as migration 0008 set it."""
    log.warning(
        "the audit chain's mark (txid past %d) was made by another PostgreSQL cluster"
        " (a restore?): moving it to this cluster's transaction ids",
        next_txid,
    )
    await tx.execute("UPDATE audit_events SET txid = 0 WHERE txid >= $1", next_txid)
    rows = await tx.fetch(
        "SELECT COALESCE((SELECT MIN(e.id) - 1 FROM audit_events AS e WHERE e.txid = 0"
        " AND NOT EXISTS (SELECT 1 FROM audit_seals AS s WHERE s.event_id = e.id)),"
        " (SELECT MAX(id) FROM audit_events WHERE txid = 0), 0)"
    )
    return 0, int(rows[0][0])


@dataclass
class Verdict:
    sealed: int = 0
    unsealed: int = 0
    head_seq: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


async def verify(
    store: Store, *, page_rows: int = 5_000, on_page: Callable[[int], None] | None = None
) -> Verdict:
    """Walk the whole chain; name every row that was edited, deleted or added."""
    verdict = Verdict()
    chain = await _read_chain(store, store)
    head_seq, head_hash = chain.head.seq, chain.head.hash
    verdict.head_seq = head_seq
    expected_seq, previous, after = 1, "", 0
    while True:
        rows = await store.fetch(
            f"SELECT s.chain_seq, s.chain_hash, s.event_id, e.id, {_EVENT_FIELDS}"
            " FROM audit_seals AS s LEFT JOIN audit_events AS e ON e.id = s.event_id"
            " WHERE s.chain_seq > $1 ORDER BY s.chain_seq LIMIT $2",
            after,
            page_rows,
        )
        for row in rows:
            seq, stored = int(row[0]), str(row[1])
            after = seq
            if row[3] is None:
                # The row is gone but its seal is not: named as missing where the
                # next row is found, or at the end; the chain goes on from its hash.
                previous = stored
                continue
            if seq != expected_seq:
                verdict.problems.append(
                    f"rows {expected_seq}..{seq - 1} of the chain are missing (deleted)"
                )
            if chain_hash(previous, seq, row[4:]) != stored:
                verdict.problems.append(f"row {seq} (id {row[2]}) was edited: its hash differs")
            previous, expected_seq = stored, seq + 1
            verdict.sealed += 1
        if on_page is not None:
            on_page(verdict.sealed)
        if len(rows) < page_rows:
            break
    last_seq = expected_seq - 1
    if last_seq < head_seq:
        verdict.problems.append(f"rows {last_seq + 1}..{head_seq} at the end are missing")
    elif last_seq > head_seq:
        verdict.problems.append(f"rows {head_seq + 1}..{last_seq} were added past the head")
    elif last_seq == head_seq and head_seq and previous != head_hash:
        verdict.problems.append("the last row does not match the chain head")
    # A row without a seal waits for the sealer if it lies past the mark; behind
    # it, the sealer will never come back for it. (A mark from another cluster,
    # after a restore, is moved by the sealer's next round: everything waits.)
    unsealed = await store.fetch(
        f"SELECT e.id, {store.audit_after_mark} FROM audit_events AS e"
        " WHERE NOT EXISTS (SELECT 1 FROM audit_seals AS s WHERE s.event_id = e.id)"
        " ORDER BY e.id",
        chain.mark_txid,
        chain.mark_id,
    )
    behind = [int(r[0]) for r in unsealed if not (r[1] or chain.foreign_from is not None)]
    verdict.unsealed = len(unsealed) - len(behind)
    if behind:
        shown = ", ".join(str(i) for i in behind[:10]) + (", …" if len(behind) > 10 else "")
        verdict.problems.append(
            f"{len(behind)} rows (id {shown}) lie behind the chain's mark without a seal:"
            " a seal was deleted, or they were written while migration 0008 ran"
        )
    return verdict

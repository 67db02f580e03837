"""The accounts as this process's writer last committed them, to skip a round trip.

On PostgreSQL a batch of creates was two round trips: lock and read its
accounts, then write and commit. When every account of a one-tenant batch is
remembered here, the writer answers the read from memory, and the write
statement itself locks those accounts, in the same global order, and checks
that each is still at the version remembered and that none of the transfers
the batch creates exists yet (``tally_as_remembered``, migration 0010). If
not, because another process or a commit whose answer was lost changed an
account, or a create repeats a stored id, nothing is written, the batch runs
again with the read, and everything remembered is forgotten (decisions/0011).
Memory is never trusted for money: it only lets the database check instead of
answer.

Whether to try at all is learnt from the reads that still happen: a read that
finds a remembered account changed means another writer works on the same
accounts, and memory is not tried again until enough reads in a row have
found every remembered account they met as it was: one at first, twice as
many after each batch from memory that failed (up to ``CLEAN_READS_MAX``),
half as many after each that committed. Two processes sharing busy accounts
so keep taking the read; one process, or processes on different accounts,
skip it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client import Counter

from tally.core import Account
from tally.storage.unit_of_work import Key

BATCHES_FROM_MEMORY = Counter(
    "tally_writer_batches_from_memory",
    "Write batches whose accounts the writer took from memory, not a read: committed,"
    " or failed (an account had changed, an id was repeated, the database was away)"
    " and so run again with the read.",
    ["outcome"],
)
_COMMITTED = BATCHES_FROM_MEMORY.labels("committed")
_FAILED = BATCHES_FROM_MEMORY.labels("failed")

# A bound on memory: past it everything is forgotten and learnt again (an
# account is a few hundred bytes).
ENTRIES_MAX = 50_000
# The most reads in a row that must find memory right before it is tried again.
CLEAN_READS_MAX = 256


class KnownAccounts:
    __slots__ = ("_accounts", "_clean_reads", "_entries_max", "_reads_needed")

    def __init__(self, entries_max: int = ENTRIES_MAX) -> None:
        self._accounts: dict[Key, Account] = {}
        self._entries_max = entries_max
        # Reads in a row that found memory right, and how many it takes.
        self._clean_reads = 0
        self._reads_needed = 0

    @property
    def trusted(self) -> bool:
        return self._clean_reads >= self._reads_needed

    def recall(self, keys: Iterable[Key]) -> list[tuple[str, Account]] | None:
        """The accounts named, in order, if they are all remembered, all of one
        tenant, and memory is trusted; otherwise None (read them)."""
        if not self.trusted:
            return None
        found: list[tuple[str, Account]] = []
        tenant_id: str | None = None
        get = self._accounts.get
        for key in keys:
            if tenant_id is None:
                tenant_id = key[0]
            elif key[0] != tenant_id:
                return None
            account = get(key)
            if account is None:
                return None
            found.append((tenant_id, account))
        return found or None

    def compare(self, read: Iterable[tuple[str, Account]]) -> None:
        """Accounts just read under their locks: a read that finds one of those
        remembered changed starts the count of clean reads again; one that
        finds all it meets as remembered adds to it."""
        matched = False
        get = self._accounts.get
        for tenant_id, account in read:
            known = get((tenant_id, account.id))
            if known is None:
                continue
            if known.version != account.version:
                self._clean_reads = 0
                self._reads_needed = max(self._reads_needed, 1)
                return
            matched = True
        if matched:
            self._clean_reads += 1

    def remember(self, accounts: Mapping[Key, Account]) -> None:
        """Accounts as a transaction that committed read or left them."""
        if len(self._accounts) + len(accounts) > self._entries_max:
            self._accounts.clear()
        self._accounts.update(accounts)

    def clear(self) -> None:
        """Forget every account, as they may have changed; trust is as it was."""
        self._accounts.clear()

    def committed(self) -> None:
        """A batch answered from memory committed: memory was right."""
        _COMMITTED.inc()
        self._reads_needed //= 2

    def forget(self) -> None:
        """A batch answered from memory failed: memory was wrong, or may be."""
        _FAILED.inc()
        self._accounts.clear()
        self._clean_reads = 0
        self._reads_needed = min(max(1, 2 * self._reads_needed), CLEAN_READS_MAX)

    def __len__(self) -> int:
        return len(self._accounts)

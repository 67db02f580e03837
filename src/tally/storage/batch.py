"""One write transaction for many requests: what to lock, and what the core decided.

Both storage adapters run the same four steps inside one transaction:

1. read the transfers the commands name (to learn which accounts a post or void
   touches),
2. lock the accounts, all of them, in one global order (tenant, id), so that two
   writers can never deadlock,
3. lock the tenants' rows, whose event counters order each tenant's commits,
4. let the core decide, then write everything it changed.

This module holds what is common to the steps; the adapters hold the SQL.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from tally.core import Book, Changes, Command, Outcome, Transfer
from tally.core.commands import account_ids, transfer_ids

Key = tuple[str, str]  # (tenant_id, object id)


@dataclass(slots=True)
class Job:
    """One request's commands, waiting for the writer."""

    tenant_id: str
    commands: Sequence[Command]
    atomic: bool = False
    future: asyncio.Future[list[Outcome]] | None = field(default=None, repr=False)


class StaleRead(Exception):
    """A transfer appeared between the unlocked read and the locks; run again."""


def transfer_keys(jobs: Iterable[Job]) -> list[Key]:
    return sorted({(j.tenant_id, i) for j in jobs for c in j.commands for i in transfer_ids(c)})


def account_keys(jobs: Iterable[Job], transfers: Iterable[tuple[str, Transfer]]) -> list[Key]:
    """Every account the jobs may touch, in the global lock order."""
    keys = {(j.tenant_id, i) for j in jobs for c in j.commands for i in account_ids(c)}
    for tenant_id, t in transfers:
        keys.add((tenant_id, t.debit_account_id))
        keys.add((tenant_id, t.credit_account_id))
    return sorted(keys)


def tenant_ids(jobs: Iterable[Job]) -> list[str]:
    return sorted({j.tenant_id for j in jobs})


@dataclass(slots=True)
class Decision:
    outcomes: list[list[Outcome]]
    changes: dict[str, Changes]
    last_sequence: dict[str, int]


def decide(
    jobs: Sequence[Job],
    accounts: Iterable[tuple[str, object]],
    transfers: Iterable[tuple[str, Transfer]],
    last_sequence: dict[str, int],
    locked: set[Key],
    now_us: int,
) -> Decision:
    """Run every job through its tenant's book, in arrival order."""
    by_tenant_accounts: dict[str, list[object]] = defaultdict(list)
    for tenant_id, account in accounts:
        by_tenant_accounts[tenant_id].append(account)
    by_tenant_transfers: dict[str, list[Transfer]] = defaultdict(list)
    for tenant_id, transfer in transfers:
        # A pending transfer committed after step 1 names accounts we did not lock.
        for account_id in (transfer.debit_account_id, transfer.credit_account_id):
            if (tenant_id, account_id) not in locked:
                raise StaleRead(f"{tenant_id}/{transfer.id}")
        by_tenant_transfers[tenant_id].append(transfer)

    books = {
        tenant_id: Book(
            by_tenant_accounts[tenant_id],  # type: ignore[arg-type]
            by_tenant_transfers[tenant_id],
            now_us=now_us,
            last_sequence=last_sequence[tenant_id],
        )
        for tenant_id in last_sequence
    }
    outcomes = [books[j.tenant_id].execute(j.commands, atomic=j.atomic) for j in jobs]
    return Decision(
        outcomes=outcomes,
        changes={t: b.changes() for t, b in books.items()},
        last_sequence={t: b.last_sequence for t, b in books.items()},
    )

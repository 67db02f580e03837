"""One write transaction for many requests, written once for both databases.

``write_transaction`` is the whole of it, as a generator of storage steps
(``tally.storage.unit_of_work``): each adapter performs the steps with its own
SQL inside one transaction, and everything between them is plain Python. In
order:

1. find the idempotency keys the requests carry: a key already stored is
   answered with its stored response and does not run again (``plan_keys``);
2. read the pending transfers that posts, voids and expiries resolve: they name
   their accounts only through the pending transfer;
3. lock every account the batch may touch, all of them, in one global order
   (tenant, id), so that two writers can never deadlock;
4. read the transfers the commands name, now under the locks and so current
   (whoever changes a transfer holds its accounts' locks), and let the core
   decide, one book per tenant, in arrival order. A batch of creates only, which
   resolves no hold, takes 3 and 4 in one round trip (``LockAndRead``), or in
   none where the store remembers the accounts and has the write check them
   (decisions/0011);
5. answer each request (its entry point's pure ``answer`` function, so that a
   keyed response and an audit row commit with the effect) and write everything
   the core changed, with the keys and audit rows.

``execute`` runs it with the one retry policy, and when a batch keeps losing
races runs each request alone, so that one cannot sink the others.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from tally.audit import AuditContext
from tally.core import (
    Account,
    Book,
    Changes,
    Command,
    CreateTransfer,
    ExpirePending,
    Outcome,
    PostPending,
    Transfer,
    VoidPending,
)
from tally.core.commands import account_ids, transfer_ids
from tally.errors import TallyError, Unavailable
from tally.ledger.idempotency import Claim, KeyPlan, plan_keys
from tally.ledger.public import object_json
from tally.storage.records import KeyRow, StoredKey, StoredResponse
from tally.storage.unit_of_work import (
    FindKeys,
    Key,
    LockAccounts,
    LockAndRead,
    ReadCounters,
    ReadTransfers,
    Steps,
    TenantWrite,
    TransactionConflict,
    Transactor,
    Write,
    run_transaction,
)

log = logging.getLogger(__name__)

Answer = Callable[[list[Outcome]], StoredResponse]
"""An entry point's answer to a request, from its outcomes: pure, because it runs
inside the transaction (a keyed answer is stored with the effect, and the audit
row records its status)."""


@dataclass(slots=True)
class Job:
    """One request's commands, waiting for the writer. A keyed or audited job
    carries its ``answer``."""

    tenant_id: str
    commands: Sequence[Command]
    atomic: bool = False
    claim: Claim | None = None
    answer: Answer | None = field(default=None, repr=False)
    future: asyncio.Future[JobResult] | None = field(default=None, repr=False)
    audit: AuditContext | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class JobResult:
    """What the writer answers a job: its outcomes, and for a keyed or audited job
    its answer (``replayed`` when it was a stored one), or an error."""

    outcomes: list[Outcome]
    response: StoredResponse | None = None
    replayed: bool = False
    error: TallyError | None = None
    audited: bool = False  # its audit row was committed with it


class StaleRead(TransactionConflict):
    """A pending transfer appeared between the unlocked read and the locks."""


# -- what to read and lock ---------------------------------------------------------------

_RESOLVES = (PostPending, VoidPending, ExpirePending)


@dataclass(slots=True)
class Reads:
    """What a batch's commands name, found in one pass over them (a batch carries up
    to thousands): the pending transfers that posts, voids and expiries resolve
    (they name their accounts only through the pending transfer), the transfers the
    commands must see (``transfer_ids``), and the accounts they name directly
    (``account_ids``)."""

    resolving: list[Key]
    transfers: list[Key]
    accounts: set[Key]

    @classmethod
    def of(cls, jobs: Iterable[Job]) -> Reads:
        resolving: set[Key] = set()
        transfers: set[Key] = set()
        accounts: set[Key] = set()
        for j in jobs:
            tenant_id = j.tenant_id
            for c in j.commands:
                if type(c) is CreateTransfer:  # nearly all: its ids without two calls
                    transfers.add((tenant_id, c.id))
                    accounts.add((tenant_id, c.debit_account_id))
                    accounts.add((tenant_id, c.credit_account_id))
                    continue
                if isinstance(c, _RESOLVES):
                    resolving.add((tenant_id, c.pending_id))
                transfers.update((tenant_id, i) for i in transfer_ids(c))
                accounts.update((tenant_id, i) for i in account_ids(c))
        return cls(sorted(resolving), sorted(transfers), accounts)

    def locks(self, resolved: Iterable[tuple[str, Transfer]]) -> list[Key]:
        """Every account the jobs may touch, in the global lock order: those the
        commands name, and both sides of the pending transfers they resolve."""
        keys = set(self.accounts)
        for tenant_id, t in resolved:
            keys.add((tenant_id, t.debit_account_id))
            keys.add((tenant_id, t.credit_account_id))
        return sorted(keys)


def claim_keys(jobs: Sequence[Job]) -> list[Key]:
    return sorted({(j.tenant_id, j.claim.key) for j in jobs if j.claim is not None})


# -- the transaction -----------------------------------------------------------------------


def write_transaction(jobs: Sequence[Job], now_us: int) -> Steps[list[JobResult]]:
    stored: dict[Key, StoredKey] = yield FindKeys(claim_keys(jobs), now_us)
    plan = plan_keys([(j.tenant_id, j.claim) for j in jobs], stored)
    run = [jobs[i] for i in plan.run]
    decided = Decided([], {}, {})
    if run:
        reads = Reads.of(run)
        accounts: list[tuple[str, Account]]
        transfers: list[tuple[str, Transfer]]
        if reads.resolving:
            seen: list[tuple[str, Transfer]] = yield ReadTransfers(reads.resolving)
            locked = reads.locks(seen)
            accounts = yield LockAccounts(locked)
            transfers = yield ReadTransfers(reads.transfers)
        else:  # the common case: creates only, one round trip fewer
            locked = reads.locks(())
            accounts, transfers = yield LockAndRead(locked, reads.transfers)
        tenants = sorted({j.tenant_id for j in run})
        counters: dict[str, int] = yield ReadCounters(tenants)
        decided = decide(
            run, accounts, transfers, counters, set(locked), set(reads.resolving), now_us
        )
    results, writes = finish(jobs, plan, decided, now_us)
    yield Write(writes, now_us)
    return results


@dataclass(slots=True)
class Decided:
    """What the core decided for the jobs that ran."""

    outcomes: list[list[Outcome]]
    changes: dict[str, Changes]
    sequences_used: dict[str, int]


def decide(
    jobs: Sequence[Job],
    accounts: Iterable[tuple[str, Account]],
    transfers: Iterable[tuple[str, Transfer]],
    counters: dict[str, int],
    locked: set[Key],
    resolving: set[Key],
    now_us: int,
) -> Decided:
    """Run every job through its tenant's book, in arrival order. ``locked``: the
    accounts locked; ``resolving``: the pending transfers the jobs resolve."""
    by_tenant_accounts: dict[str, list[Account]] = defaultdict(list)
    for tenant_id, account in accounts:
        by_tenant_accounts[tenant_id].append(account)
    by_tenant_transfers: dict[str, list[Transfer]] = defaultdict(list)
    for tenant_id, transfer in transfers:
        # A pending transfer committed after step 2 names accounts we did not lock.
        # (A transfer found only because a create repeats its id needs no lock: the
        # core just compares fields.)
        if (tenant_id, transfer.id) in resolving:
            for account_id in (transfer.debit_account_id, transfer.credit_account_id):
                if (tenant_id, account_id) not in locked:
                    raise StaleRead(f"{tenant_id}/{transfer.id}")
        by_tenant_transfers[tenant_id].append(transfer)
    books = {
        tenant_id: Book(
            by_tenant_accounts[tenant_id],
            by_tenant_transfers[tenant_id],
            now_us=_not_before(now_us, by_tenant_accounts[tenant_id]),
            last_sequence=counter,
        )
        for tenant_id, counter in counters.items()
    }
    outcomes = [books[j.tenant_id].execute(j.commands, atomic=j.atomic) for j in jobs]
    return Decided(
        outcomes=outcomes,
        changes={t: b.changes() for t, b in books.items()},
        sequences_used={t: b.last_sequence - counters[t] for t, b in books.items()},
    )


def _not_before(now_us: int, accounts: list[Account]) -> int:
    """The time a tenant's changes in this batch are dated: never earlier than the
    last change of an account it locked, even when another process read the clock
    first and committed first, or the clock stepped back. An account's history is
    read in (time, version) order, which must be its version order
    (tally.storage.store.history_sql). Per tenant: one tenant's clock trouble does
    not date another's transfers."""
    latest = max((a.updated_at_us for a in accounts), default=now_us)
    if latest - now_us > _SKEW_WARNED_US:
        _skew_warning.emit(latest - now_us)
    return max(now_us, latest)


_SKEW_WARNED_US = 1_000_000


class _SkewWarning:
    """An account changed "in the future": a clock that was, or is, wrong. Said
    at most once a minute, however many batches meet it."""

    def __init__(self) -> None:
        self._said_at = -60.0

    def emit(self, ahead_us: int) -> None:
        now = time.monotonic()
        if now - self._said_at >= 60:
            self._said_at = now
            log.warning(
                "an account's last change is %.1f s ahead of this process's clock;"
                " its tenant's changes are dated then until the clock catches up",
                ahead_us / 1e6,
            )


_skew_warning = _SkewWarning()


def finish(
    jobs: Sequence[Job], plan: KeyPlan, decided: Decided, now_us: int
) -> tuple[list[JobResult], list[TenantWrite]]:
    """Every job's result, and what to write per tenant: the core's changes, the
    idempotency keys and the audit rows. Only jobs that ran are audited here: the
    others changed nothing, and their requests are recorded by the audit
    appender (tally.audit)."""
    writes: dict[str, TenantWrite] = {}

    def tenant(tenant_id: str) -> TenantWrite:
        if tenant_id not in writes:
            writes[tenant_id] = TenantWrite(tenant_id)
        return writes[tenant_id]

    for tenant_id, changes in decided.changes.items():
        w = tenant(tenant_id)
        w.changes, w.sequences_used = changes, decided.sequences_used[tenant_id]
        w.event_data = [
            None if isinstance(e.data, Transfer) else object_json(e.data).decode()
            for e in changes.events
        ]
    results: dict[int, JobResult] = {
        i: JobResult([], response=r.response, replayed=True, error=r.error)
        for i, r in plan.answered.items()
    }
    for i, outcomes in zip(plan.run, decided.outcomes, strict=True):
        job = jobs[i]
        response = None
        if job.claim is not None or job.audit is not None:
            assert job.answer is not None, "a keyed or audited job has an answer"
            response = job.answer(outcomes)
        if job.claim is not None:
            assert response is not None
            tenant(job.tenant_id).keys.append(
                KeyRow(job.claim.key, job.claim.fingerprint, response)
            )
        if job.audit is not None:
            assert response is not None
            code = next((o.code.value for o in outcomes if o.code is not None), None)
            row = job.audit.row(response.status, code, now_us, _object_id(outcomes))
            tenant(job.tenant_id).audit_rows.append(row[1:])
        results[i] = JobResult(outcomes, response=response, audited=job.audit is not None)
    for i, earlier in plan.copies.items():
        results[i] = JobResult([], response=results[earlier].response, replayed=True)
    return [results[i] for i in range(len(jobs))], [writes[t] for t in sorted(writes)]


def _object_id(outcomes: list[Outcome]) -> str | None:
    if len(outcomes) != 1 or outcomes[0].object is None:
        return None
    return outcomes[0].object.id


# -- running it ------------------------------------------------------------------------------

GAVE_UP_DETAIL = "The database is busy; nothing was changed."


async def execute(
    store: Transactor, jobs: Sequence[Job], now_us: int, *, retry_after_seconds: int
) -> list[JobResult]:
    """Run the jobs in one transaction (retried on a lost race); if they keep
    losing, each alone, so that one request cannot sink the others."""
    try:
        return await run_transaction(store, lambda: write_transaction(jobs, now_us))
    except TransactionConflict:
        if len(jobs) == 1:
            raise Unavailable(GAVE_UP_DETAIL, retry_after_seconds=retry_after_seconds) from None
    return [
        (await execute(store, [job], now_us, retry_after_seconds=retry_after_seconds))[0]
        for job in jobs
    ]

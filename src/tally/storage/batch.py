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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from tally.core import (
    Book,
    Changes,
    Command,
    ExpirePending,
    Outcome,
    PostPending,
    Transfer,
    VoidPending,
)
from tally.core.commands import account_ids, transfer_ids
from tally.errors import IdempotencyKeyReused, TallyError
from tally.idempotency import Claim, StoredKey, StoredResponse

Key = tuple[str, str]  # (tenant_id, object id)


Render = Callable[[list[Outcome]], StoredResponse]


class AuditSource(Protocol):
    """A request's audit facts (tally.audit.AuditContext): the writer makes its row
    once the outcome is known, and commits it with the change."""

    recorded: bool

    def row(
        self, status: int, code: str | None, now_us: int, object_id: str | None = None
    ) -> tuple[Any, ...]: ...


@dataclass(slots=True)
class Job:
    """One request's commands, waiting for the writer.

    A keyed job (``claim``) also carries ``render``, which turns its outcomes
    into the HTTP response, so that the response can be stored in the same
    transaction as the effect.
    """

    tenant_id: str
    commands: Sequence[Command]
    atomic: bool = False
    claim: Claim | None = None
    render: Render | None = field(default=None, repr=False)
    future: asyncio.Future[JobResult] | None = field(default=None, repr=False)
    audit: AuditSource | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class JobResult:
    """What the writer answers a job: its outcomes, or for a keyed job the stored
    response (``replayed`` when it was not executed again), or an error."""

    outcomes: list[Outcome]
    response: StoredResponse | None = None
    replayed: bool = False
    error: TallyError | None = None
    audited: bool = False  # its audit row was committed with it


@dataclass(frozen=True, slots=True)
class KeyRow:
    """An idempotency record to insert with the batch."""

    tenant_id: str
    key: str
    fingerprint: str
    response: StoredResponse


class StaleRead(Exception):
    """A transfer appeared between the unlocked read and the locks; run again."""


def pending_keys(jobs: Iterable[Job]) -> list[Key]:
    """The pending transfers that posts, voids and expiries resolve."""
    return sorted(
        {
            (j.tenant_id, c.pending_id)
            for j in jobs
            for c in j.commands
            if isinstance(c, PostPending | VoidPending | ExpirePending)
        }
    )


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
    resolving = set(pending_keys(jobs))
    for tenant_id, transfer in transfers:
        # A pending transfer committed after step 1 names accounts we did not lock.
        # (A transfer found only because a create repeats its id needs no lock: the
        # core just compares fields.)
        if (tenant_id, transfer.id) in resolving:
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


# -- idempotency keys ----------------------------------------------------------------


@dataclass(slots=True)
class KeyPlan:
    """Which jobs run, and which are answered from a stored or sibling response."""

    run: list[int]
    answered: dict[int, JobResult]
    # job index -> index of the earlier job in this batch with the same key
    copies: dict[int, int]


def claim_keys(jobs: Sequence[Job]) -> list[Key]:
    return sorted({(j.tenant_id, j.claim.key) for j in jobs if j.claim is not None})


def _replay(stored: StoredKey, claim: Claim) -> JobResult:
    if stored.fingerprint != claim.fingerprint:
        return JobResult([], error=IdempotencyKeyReused())
    return JobResult([], response=stored.response, replayed=True)


def plan_keys(jobs: Sequence[Job], stored: dict[Key, StoredKey]) -> KeyPlan:
    plan = KeyPlan(run=[], answered={}, copies={})
    first: dict[Key, int] = {}
    for i, job in enumerate(jobs):
        if job.claim is None:
            plan.run.append(i)
            continue
        key = (job.tenant_id, job.claim.key)
        earlier = first.get(key)
        if key in stored:
            plan.answered[i] = _replay(stored[key], job.claim)
        elif earlier is not None:
            earlier_claim = jobs[earlier].claim
            assert earlier_claim is not None
            if earlier_claim.fingerprint == job.claim.fingerprint:
                plan.copies[i] = earlier
            else:
                plan.answered[i] = JobResult([], error=IdempotencyKeyReused())
        else:
            first[key] = i
            plan.run.append(i)
    return plan


@dataclass(slots=True)
class Finished:
    """What a batch answers, and the rows to store with it."""

    results: list[JobResult]
    key_rows: list[KeyRow]
    audit_rows: list[tuple[str, tuple[Any, ...]]]  # (tenant, audit_events row after tenant)


def finish(
    jobs: Sequence[Job], plan: KeyPlan, outcomes: Sequence[list[Outcome]], now_us: int
) -> Finished:
    """Every job's result, and the idempotency and audit records to store with the
    batch. Only jobs that ran are audited here: the others changed nothing, and
    their requests are recorded by the audit appender (tally.audit)."""
    results: dict[int, JobResult] = dict(plan.answered)
    done = Finished([], [], [])
    for i, job_outcomes in zip(plan.run, outcomes, strict=True):
        job = jobs[i]
        response = None
        if job.claim is not None or job.audit is not None:
            assert job.render is not None, "a keyed or audited job renders its response"
            response = job.render(job_outcomes)
        if job.claim is not None:
            assert response is not None
            claim = job.claim
            done.key_rows.append(KeyRow(job.tenant_id, claim.key, claim.fingerprint, response))
        if job.audit is not None:
            assert response is not None
            row = job.audit.row(
                response.status, _failed_code(job_outcomes), now_us, _object_id(job_outcomes)
            )
            done.audit_rows.append((job.tenant_id, row[1:]))
        results[i] = JobResult(job_outcomes, response=response, audited=job.audit is not None)
    for i, earlier in plan.copies.items():
        results[i] = JobResult([], response=results[earlier].response, replayed=True)
    done.results = [results[i] for i in range(len(jobs))]
    return done


def _failed_code(outcomes: list[Outcome]) -> str | None:
    return next((o.code.value for o in outcomes if o.code is not None), None)


def _object_id(outcomes: list[Outcome]) -> str | None:
    if len(outcomes) != 1 or outcomes[0].object is None:
        return None
    object_id = getattr(outcomes[0].object, "id", None)
    return object_id if isinstance(object_id, str) else None

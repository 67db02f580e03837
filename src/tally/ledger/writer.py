"""The batching writer: one bounded queue and one transaction for whatever waits.

Each server process has one writer. A request puts its commands on the queue and
waits; the writer takes everything waiting (up to ``writer_batch_commands_max``),
runs it through the storage adapter in one database transaction, and answers
every waiting request. Under light load a batch is one request, so latency does
not suffer; under heavy load hundreds of transfers share one commit and its
fsync ("optimise the wait, not the code"). A full queue refuses new work with
503 and ``Retry-After`` instead of growing without bound.

Group commit: after a transaction that answered several requests, the writer
gives their clients a moment to send their next ones before it takes the next
batch: until as many are queued again, or until as long after that commit as the
transaction itself took, at most ``gather_seconds``. Without it, the first few
to arrive went alone and the rest waited for that small transaction and its
round trips: a closed loop of clients split into two alternating transactions of
half the size (docs/performance.md). This is the idea of PostgreSQL's
``commit_delay`` (which waits only while ``commit_siblings`` transactions are
active). A lone client never waits: one request answered is below
``GATHER_FROM_REQUESTS``. Arrivals that do not wait for their answers (an open
loop) can make every cycle wait its window; bounding the window by the
transaction's own time bounds that cost: a cycle at most doubles.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
import weakref
from collections.abc import Callable, Sequence

from prometheus_client import Gauge, Histogram

from tally.audit import AuditContext
from tally.core import Command
from tally.errors import TallyError, Unavailable
from tally.ledger.idempotency import Claim
from tally.ledger.transaction import Answer, Job, JobResult, execute
from tally.storage import Store
from tally.support.clock import Clock, wall_clock_us
from tally.support.loops import woken_within

log = logging.getLogger(__name__)

WRITER_BATCH_COMMANDS = Histogram(
    "tally_writer_batch_commands",
    "Commands committed per writer transaction.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048),
)
WRITER_BATCH_SECONDS = Histogram(
    "tally_writer_batch_seconds",
    "Time of one writer transaction, locks to commit.",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 5),
)
# After this long with nothing to write, the writer ends the transaction its last
# commit opened ahead of the next batch (Store.settle_writer): a session left idle
# in a transaction any longer would only puzzle whoever watches pg_stat_activity.
IDLE_SECONDS = 1.0
WRITER_QUEUE_COMMANDS = Gauge("tally_writer_queue_commands", "Commands waiting for the writer.")
# The fewest requests a transaction must have answered for the writer to wait for
# their clients' next ones (group commit; PostgreSQL's commit_siblings is 5).
GATHER_FROM_REQUESTS = 4


class Writer:
    def __init__(
        self,
        store: Store,
        *,
        queue_commands_max: int,
        batch_commands_max: int,
        retry_after_seconds: int = 1,
        conflict_retry_after_seconds: int = 2,
        clock: Clock = wall_clock_us,
        idle_seconds: float = IDLE_SECONDS,
        gather_seconds: float = 0.0,
    ) -> None:
        # Told, after each commit, the tenants whose requests changed something
        # (so may have new events): the live event streams of this process.
        self.on_committed: Callable[[set[str]], None] | None = None
        self._store = store
        self._queue: collections.deque[Job] = collections.deque()
        self._queued_commands = 0
        self._queue_commands_max = queue_commands_max
        self._batch_commands_max = batch_commands_max
        self._retry_after_seconds = retry_after_seconds
        self._conflict_retry_after_seconds = conflict_retry_after_seconds
        self._clock = clock
        self._idle_seconds = idle_seconds
        self._gather_seconds = gather_seconds
        # The requests the last transaction answered (0 if it failed or left some
        # behind), when it ended and how long it took (loop time), and how many
        # queued requests wake the writer (more than one while it gathers).
        self._answered = 0
        self._answered_at = 0.0
        self._answered_took = 0.0
        self._wake_at = 1
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        # Read when /metrics is scraped, not set (under a lock) twice per request;
        # by a weak reference, so that a stopped writer is not kept alive by it.
        writer = weakref.ref(self)
        WRITER_QUEUE_COMMANDS.set_function(
            lambda: w._queued_commands if (w := writer()) is not None else 0
        )
        self._task = asyncio.create_task(self._run(), name="tally-writer")

    async def stop(self) -> None:
        """Finish what is queued, then stop."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task

    async def submit(
        self,
        tenant_id: str,
        commands: Sequence[Command],
        *,
        atomic: bool = False,
        claim: Claim | None = None,
        answer: Answer | None = None,
        audit: AuditContext | None = None,
    ) -> JobResult:
        if self._closing:
            raise Unavailable(
                "This server process is shutting down; nothing was changed. Retry (another "
                "process, or this one restarted, will take it).",
                retry_after_seconds=1,
            )
        if self._queued_commands + len(commands) > self._queue_commands_max:
            raise Unavailable(
                "This process's write queue is full; nothing was changed. Retry after "
                "Retry-After seconds.",
                retry_after_seconds=self._retry_after_seconds,
            )
        future: asyncio.Future[JobResult] = asyncio.get_running_loop().create_future()
        job = Job(tenant_id, commands, atomic, claim, answer, future, audit)
        self._queue.append(job)
        self._queued_commands += len(commands)
        if len(self._queue) >= self._wake_at or self._queued_commands >= self._batch_commands_max:
            self._wakeup.set()
        # A client that hangs up cancels this future, not the write: the job stays
        # queued and is carried, and _commit and _settle deliver only to futures
        # not yet done. (asyncio.shield did the same at the cost of a second
        # future and two callbacks per request: docs/performance.md.)
        return await future

    def _take_batch(self) -> list[Job]:
        batch: list[Job] = []
        commands = 0
        while self._queue:
            size = len(self._queue[0].commands)
            if batch and commands + size > self._batch_commands_max:
                break
            batch.append(self._queue.popleft())
            commands += size
        self._queued_commands -= commands
        return batch

    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return  # closing the store ends any transaction opened ahead
                self._wakeup.clear()
                if not await woken_within(self._wakeup, self._idle_seconds):
                    # Quiet for a while: end the transaction the last commit opened
                    # ahead of the next batch (PostgreSQL), then wait as long as it takes.
                    await self._store.settle_writer()
                    await self._wakeup.wait()
                continue
            await self._gather()
            batch = self._take_batch()
            # Requests the batch limit left behind have waited a whole transaction
            # already: the next one takes them at once.
            left_behind = bool(self._queue)
            loop = asyncio.get_running_loop()
            started = loop.time()
            committed = await self._commit(batch)
            self._answered = len(batch) if committed and not left_behind else 0
            self._answered_at = loop.time()
            self._answered_took = self._answered_at - started

    async def _gather(self) -> None:
        """Wait until as many requests are queued as the last transaction answered,
        or until as long after it ended as it took (at most ``gather_seconds``),
        whichever is first (group commit: see the module's docstring)."""
        expected = self._answered
        if (
            expected < GATHER_FROM_REQUESTS
            or len(self._queue) >= expected
            or self._queued_commands >= self._batch_commands_max
            or self._closing
        ):
            return
        window = min(self._gather_seconds, self._answered_took)
        remaining = self._answered_at + window - asyncio.get_running_loop().time()
        if remaining <= 0:
            return
        self._wake_at = expected
        self._wakeup.clear()
        try:
            await woken_within(self._wakeup, remaining)
        finally:
            self._wake_at = 1

    async def _commit(self, batch: list[Job]) -> bool:
        """Run the batch and answer its requests; False if it failed as a whole."""
        started = time.perf_counter()
        try:
            results = await execute(
                self._store,
                batch,
                self._clock(),
                retry_after_seconds=self._conflict_retry_after_seconds,
            )
        except TallyError as exc:
            for job in batch:
                _settle(job, exc)
            return False
        except Exception as exc:  # a bug: fail these requests, keep the writer alive
            log.exception("writer batch failed")
            for job in batch:
                _settle(job, exc)
            return False
        WRITER_BATCH_SECONDS.observe(time.perf_counter() - started)
        WRITER_BATCH_COMMANDS.observe(sum(len(j.commands) for j in batch))
        for job, result in zip(batch, results, strict=True):
            if job.future is not None and not job.future.done():
                job.future.set_result(result)
        if self.on_committed is not None:
            changed = {
                job.tenant_id
                for job, result in zip(batch, results, strict=True)
                if any(o.ok for o in result.outcomes)
            }
            if changed:
                try:
                    self.on_committed(changed)
                except Exception:  # a listener's bug must not stop the writer
                    log.exception("on_committed failed")
        return True


def _settle(job: Job, exc: BaseException) -> None:
    if job.future is None:
        return
    if job.future.cancelled():  # its client had gone: say what became of the write
        log.info("a write whose client had gone failed: %r", exc)
    elif not job.future.done():
        job.future.set_exception(exc)
